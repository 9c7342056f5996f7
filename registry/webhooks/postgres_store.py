"""The webhooks of a PostgreSQL registry: the tables of schema migration 8, per namespace.

================================  ==========================================================
table                             what
================================  ==========================================================
``promptreg_webhooks``            one row per endpoint (its URL, ``secret_env``: a NAME)
``promptreg_webhook_cursors``     each endpoint's cursor (JSON), deleted with it
``promptreg_webhook_dead_letters``  its dead letters (JSON), ~1,000 kept, deleted with it
``promptreg_webhook_leases``      the delivery worker's lease, expiring on the server's clock
================================  ==========================================================

The store has its own connection (the registry's stays the registry's). A cursor moves in a
transaction that first locks the lease row (``FOR SHARE``) if it is still this worker's and
unexpired: another worker cannot take the lease until the cursor is written, and a worker whose
lease expired cannot write (:class:`~promptreg.registry.webhooks.errors.LeaseLostError`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from promptreg.registry.errors import InvalidInputError, RegistryCorruptError
from promptreg.registry.postgres.conn import connection_gone, map_postgres_errors
from promptreg.registry.postgres.schema import schema
from promptreg.registry.postgres.store import PostgresPromptRegistry
from promptreg.registry.webhooks.errors import LeaseLostError, WebhookNotFoundError
from promptreg.registry.webhooks.models import (
    MAX_DEAD_LETTERS,
    MAX_ENDPOINTS,
    Cursor,
    DeadLetter,
    Lease,
    WebhookEndpoint,
)

_M = TypeVar("_M", bound=BaseModel)
_ENDPOINT_COLUMNS = "id, url, secret_env, events, format, max_attempts, created_at"
_HELD = (
    "SELECT 1 FROM promptreg_webhook_leases WHERE namespace = %s AND holder = %s AND expires_at > clock_timestamp() "
    "FOR SHARE"
)


def _model(model: type[_M], data: Any, where: str) -> _M:
    try:
        return model.model_validate(data)
    except (ValidationError, ValueError) as exc:
        raise RegistryCorruptError(f"{where}: malformed webhook record ({type(exc).__name__})") from None


class PostgresWebhookStore:
    """The :class:`~promptreg.registry.webhooks.store.WebhookStore` of a PostgreSQL registry (its
    URL and namespace; the schema is migrated as the registry's ``auto_migrate`` says)."""

    def __init__(self, registry: PostgresPromptRegistry) -> None:
        self.registry = registry
        self.namespace = registry.namespace
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()

    @contextmanager
    def _session(self) -> Iterator[Any]:
        if self._pid != os.getpid():  # forked: the parent's connection stays the parent's
            self._lock, self._conn, self._pid = threading.RLock(), None, os.getpid()
        with self._lock, map_postgres_errors(self.registry.url):
            if self._conn is not None and connection_gone(self._conn):
                self._conn = None
            if self._conn is None:
                conn = self.registry.connect()
                try:
                    schema(conn, migrate=self.registry.auto_migrate, write=True)
                except BaseException:
                    conn.close()
                    raise
                self._conn = conn
            conn = self._conn
            try:
                yield conn
            except Exception:
                if conn.broken or conn.closed:
                    self._conn = None
                raise

    def add_endpoint(self, endpoint: WebhookEndpoint, cursor: Cursor) -> None:
        with self._session() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('promptreg_webhooks'), hashtext(%s))",
                         (self.namespace,))  # fmt: skip
            (count,) = conn.execute("SELECT count(*) FROM promptreg_webhooks WHERE namespace = %s",
                                    (self.namespace,)).fetchone()  # fmt: skip
            if count >= MAX_ENDPOINTS:
                raise InvalidInputError(f"this registry has {MAX_ENDPOINTS} webhook endpoints, the most it may have")
            conn.execute(
                f"INSERT INTO promptreg_webhooks (namespace, {_ENDPOINT_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (self.namespace, endpoint.id, endpoint.url, endpoint.secret_env, json.dumps(list(endpoint.events)),
                 endpoint.format, endpoint.max_attempts, endpoint.created_at),
            )  # fmt: skip
            conn.execute("INSERT INTO promptreg_webhook_cursors (namespace, endpoint, cursor) VALUES (%s, %s, %s)",
                         (self.namespace, endpoint.id, cursor.model_dump_json()))  # fmt: skip

    def remove_endpoint(self, endpoint_id: str) -> None:
        with self._session() as conn:
            gone = conn.execute("DELETE FROM promptreg_webhooks WHERE namespace = %s AND id = %s",
                                (self.namespace, endpoint_id)).rowcount  # fmt: skip
        if not gone:
            raise WebhookNotFoundError(endpoint_id)

    def endpoints(self) -> list[WebhookEndpoint]:
        with self._session() as conn:
            rows = conn.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM promptreg_webhooks WHERE namespace = %s "
                                "ORDER BY created_at, id", (self.namespace,)).fetchall()  # fmt: skip
        names = _ENDPOINT_COLUMNS.split(", ")
        return [_model(WebhookEndpoint, dict(zip(names, row, strict=True)), f"promptreg_webhooks {row[0]!r}")
                for row in rows]  # fmt: skip

    def cursor(self, endpoint_id: str) -> Cursor | None:
        with self._session() as conn:
            row = conn.execute("SELECT cursor FROM promptreg_webhook_cursors WHERE namespace = %s AND endpoint = %s",
                               (self.namespace, endpoint_id)).fetchone()  # fmt: skip
        return None if row is None else _model(Cursor, row[0], f"promptreg_webhook_cursors {endpoint_id!r}")

    def save_cursor(self, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        with self._session() as conn, conn.transaction():
            self._move(conn, endpoint_id, cursor, holder)

    def add_dead_letter(self, letter: DeadLetter, cursor: Cursor, holder: str) -> None:
        with self._session() as conn, conn.transaction():
            self._move(conn, letter.endpoint, cursor, holder)
            conn.execute("INSERT INTO promptreg_webhook_dead_letters (namespace, endpoint, letter) VALUES (%s, %s, %s)",
                         (self.namespace, letter.endpoint, letter.model_dump_json()))  # fmt: skip
            conn.execute(
                "DELETE FROM promptreg_webhook_dead_letters WHERE namespace = %s AND endpoint = %s AND id <= ("
                "SELECT id FROM promptreg_webhook_dead_letters WHERE namespace = %s AND endpoint = %s "
                "ORDER BY id DESC OFFSET %s LIMIT 1)",
                (self.namespace, letter.endpoint, self.namespace, letter.endpoint, MAX_DEAD_LETTERS),
            )

    def dead_letters(self, endpoint_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._session() as conn:
            rows = conn.execute(
                "SELECT letter FROM promptreg_webhook_dead_letters WHERE namespace = %s "
                "AND (%s::text IS NULL OR endpoint = %s) ORDER BY id DESC LIMIT %s",
                (self.namespace, endpoint_id, endpoint_id, limit),
            ).fetchall()
        return [_model(DeadLetter, row[0], "promptreg_webhook_dead_letters") for row in rows]

    def acquire_lease(self, holder: str, ttl: float) -> bool:
        with self._session() as conn:
            row = conn.execute(
                "INSERT INTO promptreg_webhook_leases AS l (namespace, holder, expires_at) "
                "VALUES (%s, %s, clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (namespace) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at "
                "WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp() RETURNING holder",
                (self.namespace, holder, float(ttl)),
            ).fetchone()
        return row is not None

    def release_lease(self, holder: str) -> None:
        with self._session() as conn:
            conn.execute("DELETE FROM promptreg_webhook_leases WHERE namespace = %s AND holder = %s",
                         (self.namespace, holder))  # fmt: skip

    def lease(self) -> Lease | None:
        with self._session() as conn:
            row = conn.execute("SELECT holder, expires_at FROM promptreg_webhook_leases WHERE namespace = %s "
                               "AND expires_at > clock_timestamp()", (self.namespace,)).fetchone()  # fmt: skip
        return None if row is None else _model(Lease, {"holder": row[0], "expires_at": row[1]}, "the lease")

    def close(self) -> None:
        """Close the store's connection. Idempotent."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    def _move(self, conn: Any, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        if conn.execute(_HELD, (self.namespace, holder)).fetchone() is None:
            raise LeaseLostError(holder)
        moved = conn.execute("UPDATE promptreg_webhook_cursors SET cursor = %s WHERE namespace = %s AND endpoint = %s",
                             (cursor.model_dump_json(), self.namespace, endpoint_id)).rowcount  # fmt: skip
        if not moved:
            raise WebhookNotFoundError(endpoint_id)
