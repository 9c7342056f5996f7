"""``PostgresPromptRegistry``: PostgreSQL is the source of truth (tables in :mod:`promptreg.registry.postgres.schema`).

Every write is one transaction, the way every Redis write is one Lua script: lock the namespace's
revision row (``SELECT ... FOR UPDATE``: writers of one namespace take turns, so revisions are
ordered and commit in order), lock the prompt row, validate, write, append the audit row, bump the
revision, ``pg_notify`` the change. A refusal raises inside the transaction, which rolls back: nothing
is written and nothing is notified (PostgreSQL delivers a NOTIFY only when its transaction commits).
Reads of more than one row run in one ``REPEATABLE READ`` transaction (one consistent cut). A
``sync`` or ``import`` runs all its writes in one transaction (:meth:`PostgresPromptRegistry._batch`):
all of them commit, or none.

The schema is created on first use by :func:`~promptreg.registry.postgres.schema.run_migrations`
(``promptreg migrate`` runs it too). psycopg errors are translated at one boundary
(:mod:`promptreg.registry.postgres.conn`).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from promptreg.registry.base import PromptRegistry, check_expected
from promptreg.registry.compatibility import enforce
from promptreg.registry.errors import (
    LabelNotFoundError,
    PromptExistsError,
    PromptNotFoundError,
    RegistryCorruptError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.migration import MigrationResult
from promptreg.registry.models import AuditAction, AuditEvent, CompatibilityMode, Prompt, PromptVersion
from promptreg.registry.postgres.conn import (
    connect,
    connection_gone,
    is_undefined_table,
    map_postgres_errors,
    parse_postgres_url,
    require_psycopg,
)
from promptreg.registry.postgres.governance import PostgresGovernance, event_with_request
from promptreg.registry.postgres.governance_schema import GOVERNANCE_TABLES
from promptreg.registry.postgres.partials import PostgresPartials
from promptreg.registry.postgres.rollouts import PostgresRollouts
from promptreg.registry.postgres.rows import AUDIT_COLUMNS, VERSION_COLUMNS, utc, version_from_row
from promptreg.registry.postgres.schema import LATEST_SCHEMA, channel_for, encode_payload, run_migrations, schema
from promptreg.registry.rollouts import percent_of
from promptreg.registry.urls import redact_url
from promptreg.registry.validation import (
    DEFAULT_NAMESPACE,
    LATEST,
    MAX_METADATA_BYTES,
    MAX_TEXT_BYTES,
    validate_namespace,
)


class PostgresPromptRegistry(PostgresPartials, PostgresGovernance, PostgresRollouts, PromptRegistry):
    """The production registry on PostgreSQL 12 or newer (``postgresql://`` or ``postgres://``).

    ``url`` is a libpq URL; its ``namespace=`` query parameter (else the ``namespace`` argument, else
    ``promptreg``) picks the registry inside the shared tables; other parameters and
    ``connect_kwargs`` go to libpq/psycopg. The schema is created on first use unless
    ``auto_migrate=False`` (then run ``promptreg migrate`` with a role allowed to create tables).
    Thread-safe: calls take turns on one connection, reconnected after a failure. Raises
    :class:`~promptreg.RegistryUnavailableError` when psycopg is not installed (the ``[postgres]`` extra)
    or the server cannot be reached, :class:`~promptreg.RegistryAuthError` when it refuses the role,
    and :class:`~promptreg.InvalidInputError` for a malformed URL or namespace.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str | None = None,
        max_text_bytes: int = MAX_TEXT_BYTES,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        auto_migrate: bool = True,
        **connect_kwargs: Any,
    ) -> None:
        super().__init__(max_text_bytes=max_text_bytes, max_metadata_bytes=max_metadata_bytes)
        require_psycopg()
        self._conninfo, url_namespace = parse_postgres_url(url)
        # The URL's namespace= is the most specific setting: it wins over the argument (which may
        # come from PROMPTREG_NAMESPACE or a client's default).
        self.namespace = validate_namespace(url_namespace or namespace or DEFAULT_NAMESPACE)
        self.channel = channel_for(self.namespace)
        """The NOTIFY channel of this namespace (``LISTEN`` on it to follow every write)."""
        self.url = url
        self.auto_migrate = auto_migrate
        self._connect_kwargs = connect_kwargs
        self._lock = threading.RLock()
        self._conn: Any = None
        self._pid = os.getpid()
        self._schema_ready = False
        self._schema = LATEST_SCHEMA  # the database's, read with _schema_ready
        self._batch_depth = 0  # > 0 while this thread (which holds the lock) runs a _batch()
        self._read_depth = 0  # > 0 while this thread (which holds the lock) is in a _read()

    @classmethod
    def from_url(cls, url: str, **options: Any) -> PostgresPromptRegistry:
        """A registry on the PostgreSQL at ``url`` (``namespace=`` in the query picks the namespace)."""
        return cls(url, **options)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({redact_url(self.url)!r}, namespace={self.namespace!r})"

    def connect(self) -> Any:
        """A new autocommit psycopg connection to this registry's server (the client's feed uses it)."""
        return connect(self._conninfo, **self._connect_kwargs)

    def close(self) -> None:
        """Close the connection. Idempotent; the next call reconnects."""
        with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None and self._pid == os.getpid():
                conn.close()

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """The connection, under the lock, with psycopg errors translated; dropped when broken."""
        if self._pid != os.getpid():  # forked: the parent's connection stays the parent's
            self._lock, self._conn, self._pid, self._schema_ready = threading.RLock(), None, os.getpid(), False
            self._batch_depth = self._read_depth = 0
        with self._lock, map_postgres_errors(self._conninfo):
            # Inside a batch the connection is in its transaction: never swap it for another.
            if not self._batch_depth and self._conn is not None and connection_gone(self._conn):
                self._conn = None
            if self._conn is None:
                self._conn = self.connect()
            conn = self._conn
            try:
                if not self._schema_ready:
                    self._ensure_schema(conn)
                yield conn
            except Exception as exc:
                if conn.broken or conn.closed or is_undefined_table(exc):
                    self._schema_ready = False
                    self._conn = None
                    conn.close()
                raise

    def _ensure_schema(self, conn: Any) -> None:
        self._schema, self._schema_ready = schema(conn, migrate=self.auto_migrate), True

    @contextmanager
    def _write(self) -> Iterator[tuple[Any, int]]:
        """One write transaction holding the namespace's revision row: ``(connection, current rev)``."""
        with self._session() as conn, conn.transaction():
            self._schema = self._schema if self._schema >= LATEST_SCHEMA else schema(conn, write=True)
            row = conn.execute(
                "SELECT rev FROM promptreg_namespaces WHERE namespace = %s FOR UPDATE", (self.namespace,)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO promptreg_namespaces (namespace) VALUES (%s) ON CONFLICT DO NOTHING",
                    (self.namespace,),
                )
                row = conn.execute(
                    "SELECT rev FROM promptreg_namespaces WHERE namespace = %s FOR UPDATE", (self.namespace,)
                ).fetchone()
            yield conn, row[0]

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """A REPEATABLE READ, read-only transaction: every query in it sees one moment (inside a
        batch: the batch's transaction, which sees its own writes and holds the namespace's writers off)."""
        with self._session() as conn:
            if self._batch_depth or self._read_depth:  # in a batch, or nested in a read: its transaction
                yield conn
                return
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                self._read_depth += 1
                try:
                    yield conn
                finally:
                    self._read_depth -= 1

    _atomic_batches = True

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Every write inside is part of one transaction, committed at the end: all or nothing.

        ``sync`` and ``import`` use it. Each write runs as before (lock, validate, write, audit row,
        revision, ``pg_notify``) in a savepoint of this transaction; a refusal rolls back the whole
        batch. The namespace's revision row stays locked from the first write to the commit, so other
        writers of the namespace wait, and the notifications are delivered together at the commit.
        Other threads using this registry wait for the batch too (it holds the connection's lock).
        """
        with self._session() as conn, conn.transaction():
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    def _lock_prompt(self, conn: Any, name: str) -> int:
        """Lock the prompt row; its newest version number. Raises PromptNotFoundError."""
        row = conn.execute(
            "SELECT latest FROM promptreg_prompts WHERE namespace = %s AND name = %s FOR UPDATE", (self.namespace, name)
        ).fetchone()
        if row is None:
            raise PromptNotFoundError(name)
        return int(row[0])

    def _lock_label(self, conn: Any, name: str, label: str) -> tuple[int | None, int | None]:
        """Lock the label row: ``(version it points at, rollback target)``, ``(None, None)`` if none."""
        row = conn.execute(
            "SELECT version, previous FROM promptreg_labels WHERE namespace = %s AND name = %s AND label = %s "
            "FOR UPDATE",
            (self.namespace, name, label),
        ).fetchone()
        return (None, None) if row is None else (row[0], row[1])

    def _put_label(self, conn: Any, name: str, label: str, version: int | None, previous: int | None) -> None:
        conn.execute(
            "INSERT INTO promptreg_labels (namespace, name, label, version, previous) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (namespace, name, label) DO UPDATE SET version = EXCLUDED.version, "
            "previous = EXCLUDED.previous",
            (self.namespace, name, label, version, previous),
        )

    def _commit(
        self, conn: Any, rev: int, action: AuditAction, name: str, at: datetime, label: str | None = None,
        version: int | None = None, previous: int | None = None, author: str | None = None,
        reason: str | None = None, forced: bool = False, compatibility: CompatibilityMode | None = None,
        points: int | None = None, request: str | None = None, approvals: int | None = None,
    ) -> AuditEvent:  # fmt: skip
        """The tail of every write: audit row, revision bump, notification (sent at COMMIT).

        The audit row records a random write id: a restore brings revisions, audit row ids and
        version numbers back, never a write id, so a client can tell another history from its own.
        """
        rev += 1
        conn.execute("UPDATE promptreg_namespaces SET rev = %s WHERE namespace = %s", (rev, self.namespace))
        conn.execute(
            f"INSERT INTO promptreg_audit (namespace, {AUDIT_COLUMNS}, write_id, request, approvals) "
            f"VALUES ({', '.join(['%s'] * 16)})",
            (self.namespace, rev, at, action, name, label, version, previous, author, reason, forced, compatibility,
             points, secrets.token_hex(8), request, approvals),
        )  # fmt: skip
        percent = None if points is None else percent_of(points)
        payload = encode_payload(rev, action, name, label, version, previous, author, at.timestamp(), percent)
        conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
        return AuditEvent(rev=rev, at=at, action=action, prompt=name, label=label, version=version,
                          previous_version=previous, author=author, reason=reason, forced=forced,
                          compatibility=compatibility, percent=percent, request=request,
                          approvals=approvals)  # fmt: skip

    def _check(self, conn: Any, name: str, label: str, current: int | None, target: int, force: bool) -> bool:
        """The compatibility check inside the write (the prompt row is locked, versions are immutable)
        of a move from ``current``, where the label last pointed (``None``: never set, not checked)."""
        if current is None or current == target:
            return False
        (mode,) = conn.execute(
            "SELECT compatibility FROM promptreg_prompts WHERE namespace = %s AND name = %s", (self.namespace, name)
        ).fetchone()
        if mode == "none":
            return False
        rows = conn.execute(
            f"SELECT {VERSION_COLUMNS} FROM promptreg_versions WHERE namespace = %s AND name = %s "
            "AND version IN (%s, %s)",
            (self.namespace, name, current, target),
        ).fetchall()
        found = {row[0]: version_from_row(row) for row in rows}
        return enforce(name, label, mode, found[current], found[target], force)

    # -- writes ---------------------------------------------------------------------------------

    def _create_prompt(self, name: str, description: str | None, author: str | None, at: datetime, *,
                       compatibility: CompatibilityMode = "none") -> Prompt:  # fmt: skip
        with self._write() as (conn, rev):
            inserted = conn.execute(
                "INSERT INTO promptreg_prompts (namespace, name, description, author, created_at, compatibility) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
                (self.namespace, name, description, author, at, compatibility),
            ).fetchone()
            if inserted is None:
                raise PromptExistsError(name)
            self._commit(conn, rev, "create_prompt", name, at, author=author)
        return Prompt(name=name, description=description, author=author, created_at=at, compatibility=compatibility)

    def _add_version(self, name: str, prompt_text: str, author: str | None, metadata: dict[str, Any],
                     message: str | None, at: datetime, *, messages: tuple[dict[str, str], ...] | None = None,
                     config: dict[str, Any] | None = None) -> PromptVersion:  # fmt: skip
        digest = hashlib.sha256(prompt_text.encode("utf-8")).hexdigest()
        chat = None if messages is None else json.dumps(messages)
        with self._write() as (conn, rev):
            number = self._lock_prompt(conn, name) + 1
            version = PromptVersion(version=number, prompt_text=prompt_text, created_at=at, author=author,
                                    message=message, metadata=metadata, messages=messages,
                                    config=config or {})  # fmt: skip
            self._add_partials(conn, name, version)
            conn.execute(
                f"INSERT INTO promptreg_versions (namespace, name, {VERSION_COLUMNS}, sha256) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (self.namespace, name, number, prompt_text, author, message, json.dumps(metadata), at, chat,
                 json.dumps(config or {}), digest),
            )  # fmt: skip
            conn.execute(
                "UPDATE promptreg_prompts SET latest = %s WHERE namespace = %s AND name = %s",
                (number, self.namespace, name),
            )
            self._commit(conn, rev, "add_version", name, at, version=number, author=author, reason=message)
        return version

    def _set_label(self, name: str, label: str, version: int, expected_version: int | None,
                   author: str | None, reason: str | None, at: datetime, *,
                   force: bool = False) -> AuditEvent:  # fmt: skip
        with self._write() as (conn, rev):
            if version > self._lock_prompt(conn, name):
                raise VersionNotFoundError(name, version)
            current, previous = self._lock_label(conn, name, label)
            self._refuse_protected(conn, name, label)
            self._no_rollout(conn, name, label)
            check_expected(name, label, expected_version, current)
            # A deleted label's row keeps where it pointed (`previous`): delete + set is one move.
            forced = self._check(conn, name, label, current if current is not None else previous, version, force)
            forced = self._check_graph(conn, name, label, version, force) or forced
            if current is None:
                previous = None
            elif current != version:  # re-pointing at the same version keeps the rollback target
                previous = current
            self._put_label(conn, name, label, version, previous)
            return self._commit(conn, rev, "set_label", name, at, label, version, current, author, reason, forced)

    def _delete_label(self, name: str, label: str, expected_version: int | None, author: str | None,
                      reason: str | None, at: datetime, *, force: bool = False) -> AuditEvent:  # fmt: skip
        with self._write() as (conn, rev):
            self._lock_prompt(conn, name)
            current, _previous = self._lock_label(conn, name, label)
            self._refuse_protected(conn, name, label)
            if current is None:
                raise LabelNotFoundError(name, label)
            self._no_rollout(conn, name, label)
            check_expected(name, label, expected_version, current)
            forced = self._check_graph(conn, name, label, None, force)
            self._put_label(conn, name, label, None, current)
            return self._commit(conn, rev, "delete_label", name, at, label, None, current, author, reason, forced)

    def _rollback(self, name: str, label: str, author: str | None, reason: str | None, at: datetime, *,
                  force: bool = False, expected_version: int | None = None) -> AuditEvent:  # fmt: skip
        with self._write() as (conn, rev):
            self._lock_prompt(conn, name)
            current, target = self._lock_label(conn, name, label)
            self._refuse_protected(conn, name, label)
            self._no_rollout(conn, name, label)
            if target is None:
                raise RollbackUnavailableError(name, label)
            check_expected(name, label, expected_version, current)
            forced = self._check(conn, name, label, current, target, force)
            forced = self._check_graph(conn, name, label, target, force) or forced
            self._put_label(conn, name, label, target, current)
            return self._commit(conn, rev, "rollback", name, at, label, target, current, author, reason, forced)

    def _set_compatibility(self, name: str, mode: CompatibilityMode, author: str | None, reason: str | None,
                           at: datetime) -> AuditEvent:  # fmt: skip
        with self._write() as (conn, rev):
            self._lock_prompt(conn, name)
            conn.execute(
                "UPDATE promptreg_prompts SET compatibility = %s WHERE namespace = %s AND name = %s",
                (mode, self.namespace, name),
            )
            return self._commit(conn, rev, "set_compatibility", name, at, author=author, reason=reason,
                                compatibility=mode)  # fmt: skip

    # -- reads ----------------------------------------------------------------------------------

    def _get_prompt(self, name: str) -> Prompt | None:
        ns = self.namespace
        with self._read() as conn:
            head = conn.execute(
                "SELECT description, author, created_at, compatibility FROM promptreg_prompts "
                "WHERE namespace = %s AND name = %s",
                (ns, name),
            ).fetchone()
            if head is None:
                return None
            versions = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM promptreg_versions WHERE namespace = %s AND name = %s ORDER BY version",
                (ns, name),
            ).fetchall()
            labels = conn.execute(
                "SELECT label, version FROM promptreg_labels WHERE namespace = %s AND name = %s "
                "AND version IS NOT NULL ORDER BY label",
                (ns, name),
            ).fetchall()
            rollouts = self._rollouts_of(conn, name)
        description, author, created_at, compatibility = head
        return Prompt(name=name, description=description, author=author, created_at=utc(created_at),
                      versions=[version_from_row(row) for row in versions], labels=dict(labels),
                      compatibility=compatibility, rollouts=rollouts)  # fmt: skip

    def _resolve_label(self, name: str, label: str) -> int:
        with self._read() as conn:
            row = conn.execute(
                "SELECT p.latest, l.version FROM promptreg_prompts p LEFT JOIN promptreg_labels l "
                "ON l.namespace = p.namespace AND l.name = p.name AND l.label = %s "
                "WHERE p.namespace = %s AND p.name = %s",
                (label, self.namespace, name),
            ).fetchone()
        if row is None:
            raise PromptNotFoundError(name)
        number = (row[0] or None) if label == LATEST else row[1]
        if number is None:
            raise LabelNotFoundError(name, label)
        return int(number)

    def _get_version(self, name: str, version: int) -> PromptVersion:
        with self._read() as conn:
            if conn.execute(
                "SELECT 1 FROM promptreg_prompts WHERE namespace = %s AND name = %s", (self.namespace, name)
            ).fetchone() is None:  # fmt: skip
                raise PromptNotFoundError(name)
            row = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM promptreg_versions WHERE namespace = %s AND name = %s AND version = %s",
                (self.namespace, name, version),
            ).fetchone()
        if row is None:
            raise VersionNotFoundError(name, version)
        return version_from_row(row)

    def _list_prompts(self) -> list[str]:
        with self._session() as conn:
            rows = conn.execute("SELECT name FROM promptreg_prompts WHERE namespace = %s", (self.namespace,))
            return [row[0] for row in rows]

    def _revision(self) -> int:
        # No fleet on PostgreSQL (fleet() is [], docs/postgres.md): this only names the revision waited for.
        with self._session() as conn:
            rows = conn.execute("SELECT rev FROM promptreg_namespaces WHERE namespace = %s", (self.namespace,))
            row = rows.fetchone()
            return int(row[0]) if row else 0

    def _history(self, name: str) -> list[AuditEvent]:
        with self._read() as conn:
            if conn.execute(
                "SELECT 1 FROM promptreg_prompts WHERE namespace = %s AND name = %s", (self.namespace, name)
            ).fetchone() is None:  # fmt: skip
                raise PromptNotFoundError(name)
            rows = conn.execute(
                f"SELECT {self._audit_columns()} FROM promptreg_audit WHERE namespace = %s AND prompt = %s "
                "ORDER BY rev",
                (self.namespace, name),
            ).fetchall()
        try:
            return [event_with_request(row) for row in rows]
        except ValueError as exc:
            raise RegistryCorruptError(f"unreadable audit row of prompt {name!r}: {exc}") from exc

    def _describe(self, names: list[str]) -> dict[str, str | None]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, description FROM promptreg_prompts WHERE namespace = %s AND name = ANY(%s)",
                (self.namespace, names),
            ).fetchall()
        return {name: description for name, description in rows}

    def _changes_since(self, rev: int, limit: int) -> list[AuditEvent]:
        with self._read() as conn:
            rows = conn.execute(
                f"SELECT {self._audit_columns()} FROM promptreg_audit WHERE namespace = %s AND rev > %s "
                "ORDER BY rev LIMIT %s",
                (self.namespace, rev, limit),
            ).fetchall()
        try:
            return [event_with_request(row) for row in rows]
        except ValueError as exc:
            raise RegistryCorruptError(f"unreadable audit row after rev {rev}: {exc}") from exc

    # -- operations -------------------------------------------------------------------------------

    def migrate(self, *, rebuild: bool = False) -> MigrationResult:
        """Create or upgrade the schema (versioned, idempotent migrations; ``rebuild`` has nothing to
        rebuild here). Raises :class:`~promptreg.RegistryUnavailableError` and
        :class:`~promptreg.RegistryAuthError` (the role may not create tables)."""
        with self._lock, map_postgres_errors(self._conninfo):
            conn = self.connect()
            try:
                applied = run_migrations(conn)
            finally:
                conn.close()
            self._schema, self._schema_ready = LATEST_SCHEMA, True
        if not applied:
            return MigrationResult(False, 0, f"schema up to date (version {LATEST_SCHEMA}); nothing to migrate")
        steps = ", ".join(f"{m.version} ({m.description})" for m in applied)
        return MigrationResult(True, 0, f"applied schema migration(s) {steps}; schema at version {LATEST_SCHEMA}")

    def drop_namespace(self) -> int:
        """Delete every row of this registry's namespace (and nothing else); returns how many.

        For throw-away namespaces (the demo, benchmarks, tests). One transaction; the immutability
        trigger lets only this deletion through (``promptreg.drop_namespace`` names the namespace).
        """
        deleted = 0
        with self._session() as conn, conn.transaction():
            conn.execute("SELECT set_config('promptreg.drop_namespace', %s, true)", (self.namespace,))
            (indexed, governed) = conn.execute(
                "SELECT to_regclass('promptreg_partials') IS NOT NULL, to_regclass('promptreg_requests') IS NOT NULL"
            ).fetchone()
            for table in (*(("promptreg_partials",) if indexed else ()), *(GOVERNANCE_TABLES if governed else ()),
                          "promptreg_rollouts", "promptreg_labels", "promptreg_versions", "promptreg_prompts",
                          "promptreg_audit", "promptreg_namespaces"):  # fmt: skip
                deleted += conn.execute(f"DELETE FROM {table} WHERE namespace = %s", (self.namespace,)).rowcount
        return deleted
