"""Where the webhooks live: the :class:`WebhookStore` protocol, one implementation per backend.

- the JSON file: a sidecar file beside the registry file (:mod:`~promptreg.registry.webhooks.file_store`);
- Redis: keys under ``{ns}:wh:`` (:mod:`~promptreg.registry.webhooks.redis_store`);
- PostgreSQL: the tables of migration 8 (:mod:`~promptreg.registry.webhooks.postgres_store`).

Every write that moves a cursor or records a dead letter names the lease holder and happens only
while that holder holds the lease (in the same atomic step): a worker that lost its lease cannot
move a cursor another worker owns now (:class:`~promptreg.registry.webhooks.errors.LeaseLostError`).
"""

from __future__ import annotations

from typing import Protocol

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import ConfigurationError
from promptreg.registry.webhooks.models import Cursor, DeadLetter, Lease, WebhookEndpoint


class WebhookStore(Protocol):
    """The webhooks' storage in one registry. Every method raises
    :class:`~promptreg.RegistryUnavailableError` when the store cannot be reached and
    :class:`~promptreg.RegistryCorruptError` for a stored record it cannot read."""

    def add_endpoint(self, endpoint: WebhookEndpoint, cursor: Cursor) -> None:
        """Store a new endpoint and its first cursor, at once. Raises
        :class:`~promptreg.InvalidInputError` when the registry has :data:`MAX_ENDPOINTS` already."""

    def remove_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint, its cursor and its dead letters. Raises
        :class:`~promptreg.registry.webhooks.errors.WebhookNotFoundError`."""

    def endpoints(self) -> list[WebhookEndpoint]:
        """Every endpoint, oldest first."""

    def cursor(self, endpoint_id: str) -> Cursor | None:
        """The endpoint's cursor (``None``: no such endpoint)."""

    def save_cursor(self, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        """Replace the endpoint's cursor, if ``holder`` holds the lease. Raises
        :class:`~promptreg.registry.webhooks.errors.LeaseLostError` and
        :class:`~promptreg.registry.webhooks.errors.WebhookNotFoundError` (removed meanwhile)."""

    def add_dead_letter(self, letter: DeadLetter, cursor: Cursor, holder: str) -> None:
        """Record a dead letter and move the cursor past it, in one step; as :meth:`save_cursor`."""

    def dead_letters(self, endpoint_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters (of one endpoint, or of all), newest first."""

    def acquire_lease(self, holder: str, ttl: float) -> bool:
        """Take the lease for ``ttl`` seconds if it is free, expired or ``holder``'s already
        (renewing it); whether ``holder`` holds it now."""

    def release_lease(self, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (another worker takes over at once)."""

    def lease(self) -> Lease | None:
        """The lease in force (``None``: no worker holds one)."""

    def close(self) -> None:
        """Release connections. Idempotent."""


def webhook_store(registry: PromptRegistry) -> WebhookStore:
    """The webhook store of ``registry``'s backend. Raises :class:`~promptreg.ConfigurationError`
    for a registry class without one."""
    from promptreg.registry.file_store import JsonFilePromptRegistry
    from promptreg.registry.postgres.store import PostgresPromptRegistry  # psycopg is imported on first use only
    from promptreg.registry.redis.store import RedisPromptRegistry

    if isinstance(registry, JsonFilePromptRegistry):
        from promptreg.registry.webhooks.file_store import FileWebhookStore

        return FileWebhookStore.beside(registry)
    if isinstance(registry, RedisPromptRegistry):
        from promptreg.registry.webhooks.redis_store import RedisWebhookStore

        return RedisWebhookStore(registry.redis, registry.keys.namespace)
    if isinstance(registry, PostgresPromptRegistry):
        from promptreg.registry.webhooks.postgres_store import PostgresWebhookStore

        return PostgresWebhookStore(registry)
    raise ConfigurationError(f"{type(registry).__name__} has no webhook store")


def add_webhook(registry: PromptRegistry, store: WebhookStore, endpoint: WebhookEndpoint) -> Cursor:
    """Store ``endpoint`` with its cursor at the registry's current revision (it gets the events
    written from now on); returns the cursor. Raises what the registry and the store raise."""
    cursor = Cursor(rev=registry.revision())
    store.add_endpoint(endpoint, cursor)
    return cursor
