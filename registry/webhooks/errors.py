"""The errors of the webhooks (each a :class:`~promptreg.PromptRegistryError`)."""

from __future__ import annotations

from promptreg.registry.errors import PromptRegistryError, _KeyErrorMessage


class WebhookNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """No webhook endpoint with that id (``webhooks remove``, ``webhooks dead-letters``)."""

    def __init__(self, endpoint_id: str) -> None:
        super().__init__(f"no webhook endpoint {endpoint_id!r} (see promptreg webhooks list)")
        self.endpoint_id = endpoint_id


class LeaseLostError(PromptRegistryError):
    """The delivery worker no longer holds the registry's webhook lease (it expired and another
    worker took it): nothing was written; the worker stops delivering until it holds it again."""

    def __init__(self, holder: str) -> None:
        super().__init__(f"webhook worker {holder!r} no longer holds the delivery lease")
        self.holder = holder
