"""Placeholder while being written (replaced in this session)."""


class PromptRegistryFactory:
    pass
