"""Placeholder while being written (replaced in this session)."""


class RedisPromptRegistry:
    pass
