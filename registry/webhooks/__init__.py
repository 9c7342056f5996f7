"""Signed webhooks from the audit trail (docs/webhooks.md).

Endpoints are stored in the registry (:class:`WebhookStore`, one per backend): a URL, the NAME of
the environment variable holding the signing secret (never the secret), event type patterns, a
format (``standard`` JSON or ``slack``) and how many attempts a message gets. The delivery worker
(:class:`WebhookWorker`: ``promptreg webhooks run``, or ``promptreg serve --webhooks``) sends every
audit entry to every endpoint that wants it, signed per Standard Webhooks
(:mod:`~promptreg.registry.webhooks.signing`), at least once, in revision order per endpoint, from a
durable per-endpoint cursor; a message failing ``max_attempts`` times becomes a dead letter. One
worker delivers at a time (a lease in the registry).
"""

from promptreg.registry.webhooks.delivery import DeliverySettings
from promptreg.registry.webhooks.errors import LeaseLostError, WebhookNotFoundError
from promptreg.registry.webhooks.event_types import EVENT_TYPES
from promptreg.registry.webhooks.models import Cursor, DeadLetter, Lease, WebhookEndpoint, new_endpoint
from promptreg.registry.webhooks.signing import parse_secret, sign
from promptreg.registry.webhooks.store import WebhookStore, add_webhook, webhook_store
from promptreg.registry.webhooks.worker import WebhookWorker

__all__ = [
    "EVENT_TYPES",
    "Cursor",
    "DeadLetter",
    "DeliverySettings",
    "Lease",
    "LeaseLostError",
    "WebhookEndpoint",
    "WebhookNotFoundError",
    "WebhookStore",
    "WebhookWorker",
    "add_webhook",
    "new_endpoint",
    "parse_secret",
    "sign",
    "webhook_store",
]
