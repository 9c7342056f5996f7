"""The SQL of schema migration 8: the webhooks' endpoints, their cursors and dead letters, and the
delivery lease (:mod:`promptreg.registry.webhooks.postgres_store` reads and writes them; docs/webhooks.md)."""

from __future__ import annotations

from typing import Final

WEBHOOK_TABLES: Final = (
    "promptreg_webhooks", "promptreg_webhook_cursors", "promptreg_webhook_dead_letters", "promptreg_webhook_leases",
)  # fmt: skip
"""Migration 8's tables: the roles that may move labels read and write them all; the reader has no
grant on them (an endpoint's URL may carry credentials)."""

WEBHOOKS_SQL: Final = """
CREATE TABLE promptreg_webhooks (
    namespace    text NOT NULL,
    id           text NOT NULL,
    url          text NOT NULL,
    secret_env   text NOT NULL,                    -- the NAME of the worker's variable, never a secret
    events       json NOT NULL,
    format       text NOT NULL,
    max_attempts integer NOT NULL,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (namespace, id)
);
CREATE TABLE promptreg_webhook_cursors (
    namespace   text NOT NULL,
    endpoint    text NOT NULL,
    cursor      json NOT NULL,
    PRIMARY KEY (namespace, endpoint),
    FOREIGN KEY (namespace, endpoint) REFERENCES promptreg_webhooks (namespace, id) ON DELETE CASCADE
);
CREATE TABLE promptreg_webhook_dead_letters (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    namespace   text NOT NULL,
    endpoint    text NOT NULL,
    letter      json NOT NULL,
    FOREIGN KEY (namespace, endpoint) REFERENCES promptreg_webhooks (namespace, id) ON DELETE CASCADE
);
CREATE INDEX promptreg_webhook_dead_letters_endpoint
    ON promptreg_webhook_dead_letters (namespace, endpoint, id);
CREATE TABLE promptreg_webhook_leases (
    namespace   text PRIMARY KEY,
    holder      text NOT NULL,
    expires_at  timestamptz NOT NULL
);
"""
