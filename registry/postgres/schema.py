"""The PostgreSQL schema of :class:`~promptreg.PostgresPromptRegistry`: versioned migrations, the
notification channel and the NOTIFY payload.

Migrations are numbered; ``promptreg_schema_version`` records each one applied. :func:`run_migrations`
applies the missing ones in one transaction under an advisory lock, so concurrent first uses (or a
``promptreg migrate`` racing a service) apply each migration exactly once, and running it again
changes nothing. Every namespace shares the tables (the ``namespace`` column); the tables live in the
connection's ``search_path`` (``public`` by default).

The change notification (``pg_notify(channel, payload)``) carries the fields of the Redis change
message (:mod:`promptreg.registry.wire`) as a compact JSON object::

    {"rev": 7, "op": "set_label", "prompt": "movie-critic", "label": "production", "version": 3,
     "prev": 2, "author": "alice", "at": 1718000000.123}

A rollout's notification also has ``pct``, the candidate's share after the write (``null`` when the
rollout ended).

JSON, not base64 msgpack, because a payload is text and an operator can read it with ``LISTEN`` in
``psql``. A payload must stay under 8000 bytes: the only field that can make it longer (``author``,
up to 4096 characters) is then sent as ``null``; the audit row keeps it whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgpack

from promptreg.registry.errors import RegistryCorruptError, RegistryUnavailableError
from promptreg.registry.postgres.conn import is_undefined_table
from promptreg.registry.postgres.governance_schema import (
    FUNCTIONS_SQL,
    GOVERNANCE_TABLES,
    PIN_SQL,
    REQUEST_FUNCTION,
    TABLES_SQL,
    TRIGGERS_SQL,
)
from promptreg.registry.postgres.webhook_schema import WEBHOOK_TABLES, WEBHOOKS_SQL
from promptreg.registry.wire import ROLLOUT_OPERATIONS, ChangeMessage, decode

CHANNEL_PREFIX: Final = "promptreg."
MAX_PAYLOAD_BYTES: Final = 7999
"""PostgreSQL refuses NOTIFY payloads of 8000 bytes or more."""
_MAX_CHANNEL = 63  # NAMEDATALEN - 1: longer channel names are refused
MIGRATION_LOCK: Final = 0x70726F6D707472  # pg_advisory_xact_lock key: "promptr" in ASCII
SCHEMA_TABLE: Final = "promptreg_schema_version"


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: its number, a one-line description, its SQL (no parameters) and, when rows
    must be derived from the rows there (a new index of them), a ``backfill`` run after the SQL in
    the same transaction, given the connection."""

    version: int
    description: str
    sql: str
    backfill: Callable[[Any], None] | None = None


def carry_grants(source: str, target: str, implies: Mapping[str, str]) -> str:
    """The SQL of a migration that creates ``target``: every role that holds a privilege on
    ``source`` named in ``implies`` (other than the owner) is granted, on ``target``, what that
    privilege implies there (``{"SELECT": "SELECT", "UPDATE": "INSERT, UPDATE, DELETE"}``), so the
    roles that exist keep working. Grants are per table; a role made later follows the docs."""
    held = ", ".join(f"'{privilege}'" for privilege in implies)
    cases = " ".join(f"WHEN '{privilege}' THEN '{given}'" for privilege, given in implies.items())
    return f"""
        DO $$
        DECLARE
            grant_row record;
        BEGIN
            FOR grant_row IN
                SELECT DISTINCT acl.grantee, acl.privilege_type
                FROM pg_class c, aclexplode(c.relacl) acl
                WHERE c.oid = '{source}'::regclass AND acl.grantee <> c.relowner
                      AND acl.privilege_type IN ({held})
            LOOP
                EXECUTE format('GRANT %s ON {target} TO %s', CASE grant_row.privilege_type {cases} END,
                               CASE grant_row.grantee WHEN 0 THEN 'PUBLIC' ELSE grant_row.grantee::regrole::text END);
            END LOOP;
        END;
        $$;
    """


MAY_INCLUDE: Final = (
    "(strpos(prompt_text, '{{>') > 0 OR EXISTS (SELECT 1 FROM json_array_elements(messages) m "
    "WHERE strpos(m->>'content', '{{>') > 0))"
)
"""The condition on a ``promptreg_versions`` row that may include a partial: a reference starts with
``{{>``, in the text or in a message's content (read as JSON: it may be written with escapes)."""


def backfill_partials(conn: Any) -> None:
    """Migration 6's rows: ``(namespace, partial, dependent)`` for every version that includes a
    partial, read by :func:`promptreg.registry.composition.uses` itself (the rule the writes use),
    from the versions whose text or a message's content holds ``{{>`` (the only candidates)."""
    from promptreg.registry.composition import uses  # the client imports this module: not before a backfill

    entries: set[tuple[str, str, str]] = set()
    for namespace, name, text, messages in conn.execute(
        f"SELECT namespace, name, prompt_text, messages FROM promptreg_versions WHERE {MAY_INCLUDE}"
    ):
        entries.update((namespace, partial, name) for partial in uses(text, messages))
    if entries:
        namespaces, partials, dependents = (list(column) for column in zip(*sorted(entries), strict=True))
        conn.execute(
            "INSERT INTO promptreg_partials (namespace, partial, dependent) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
            (namespaces, partials, dependents),
        )


MIGRATIONS: Final = (
    Migration(
        1,
        "tables: namespaces (revision), prompts, versions, labels, audit",
        """
        CREATE TABLE promptreg_namespaces (
            namespace   text PRIMARY KEY,
            rev         bigint NOT NULL DEFAULT 0          -- bumped by every write
        );
        CREATE TABLE promptreg_prompts (
            namespace   text NOT NULL,
            name        text NOT NULL,
            description text,
            author      text,
            created_at  timestamptz NOT NULL,
            latest      integer NOT NULL DEFAULT 0,        -- the newest version number (0: none)
            PRIMARY KEY (namespace, name)
        );
        CREATE TABLE promptreg_versions (
            namespace   text NOT NULL,
            name        text NOT NULL,
            version     integer NOT NULL CHECK (version >= 1),
            prompt_text text NOT NULL,
            author      text,
            message     text,
            metadata    json NOT NULL,                     -- json keeps the text as written
            sha256      text NOT NULL,
            created_at  timestamptz NOT NULL,
            PRIMARY KEY (namespace, name, version),
            FOREIGN KEY (namespace, name) REFERENCES promptreg_prompts (namespace, name)
        );
        CREATE TABLE promptreg_labels (
            namespace   text NOT NULL,
            name        text NOT NULL,
            label       text NOT NULL,
            version     integer,                           -- NULL: deleted (previous is kept)
            previous    integer,                           -- where rollback returns to
            PRIMARY KEY (namespace, name, label),
            FOREIGN KEY (namespace, name, version) REFERENCES promptreg_versions (namespace, name, version),
            FOREIGN KEY (namespace, name, previous) REFERENCES promptreg_versions (namespace, name, version)
        );
        CREATE TABLE promptreg_audit (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            namespace   text NOT NULL,
            rev         bigint NOT NULL,
            at          timestamptz NOT NULL,
            action      text NOT NULL,
            prompt      text NOT NULL,
            label       text,
            version     integer,
            previous_version integer,
            author      text,
            reason      text,
            UNIQUE (namespace, rev)
        );
        CREATE INDEX promptreg_audit_prompt ON promptreg_audit (namespace, prompt, rev);
        """,
    ),
    Migration(
        2,
        "versions are immutable: a trigger refuses UPDATE, DELETE and TRUNCATE",
        """
        CREATE FUNCTION promptreg_refuse_version_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- The one exception: drop_namespace() of a throw-away namespace, named in this setting.
            IF TG_OP = 'DELETE' AND current_setting('promptreg.drop_namespace', true) = OLD.namespace THEN
                RETURN OLD;
            END IF;
            RAISE EXCEPTION 'promptreg versions are immutable: % refused on promptreg_versions', TG_OP
                USING ERRCODE = 'restrict_violation';
        END;
        $$;
        CREATE TRIGGER promptreg_versions_immutable BEFORE UPDATE OR DELETE ON promptreg_versions
            FOR EACH ROW EXECUTE FUNCTION promptreg_refuse_version_change();
        CREATE TRIGGER promptreg_versions_no_truncate BEFORE TRUNCATE ON promptreg_versions
            FOR EACH STATEMENT EXECUTE FUNCTION promptreg_refuse_version_change();
        """,
    ),
    Migration(
        3,
        "chat versions and model config; per-prompt compatibility mode; forced moves in the audit",
        """
        ALTER TABLE promptreg_versions ADD COLUMN messages json,        -- NULL: a text version
            ADD COLUMN config json NOT NULL DEFAULT '{}';
        ALTER TABLE promptreg_prompts ADD COLUMN compatibility text NOT NULL DEFAULT 'none'
            CHECK (compatibility IN ('none', 'backward', 'full'));
        ALTER TABLE promptreg_audit ADD COLUMN forced boolean NOT NULL DEFAULT false,
            ADD COLUMN compatibility text;
        """,
    ),
    Migration(
        4,
        "write ids: each audit row records the random id of its write (content identity)",
        """
        ALTER TABLE promptreg_audit ADD COLUMN write_id text;  -- NULL: written before write ids ('')
        """,
    ),
    Migration(
        5,
        "rollouts: a table of the rollouts running, their share in the audit; grants as on promptreg_labels",
        """
        CREATE TABLE promptreg_rollouts (
            namespace   text NOT NULL,
            name        text NOT NULL,
            label       text NOT NULL,
            candidate   integer NOT NULL,
            points      integer NOT NULL CHECK (points BETWEEN 1 AND 9999),  -- hundredths of a percent
            started_at  timestamptz NOT NULL,
            author      text,
            PRIMARY KEY (namespace, name, label),
            -- The label row exists (a rollout's label is never deleted: the writes refuse it) and
            -- the candidate is a version of the prompt.
            FOREIGN KEY (namespace, name, label) REFERENCES promptreg_labels (namespace, name, label),
            FOREIGN KEY (namespace, name, candidate) REFERENCES promptreg_versions (namespace, name, version)
        );
        ALTER TABLE promptreg_audit ADD COLUMN points integer;  -- a rollout's share after the write
        -- The roles that exist already keep working: who may read the labels may read the rollouts,
        -- who may move labels may start and end rollouts.
        """
        + carry_grants(
            "promptreg_labels", "promptreg_rollouts", {"SELECT": "SELECT", "UPDATE": "INSERT, UPDATE, DELETE"}
        )
        + """
        """,
    ),
    Migration(
        6,
        "partials: the dependents index (which prompts include which), backfilled; grants as on promptreg_versions",
        """
        CREATE TABLE promptreg_partials (
            namespace   text NOT NULL,
            partial     text NOT NULL,                     -- the prompt included ({{> partial}})
            dependent   text NOT NULL,                     -- a prompt with a version including it
            -- No foreign key: a row names a prompt that exists (it is written with its version), and
            -- a row left over (a restore of the other tables alone) only makes a check read a prompt
            -- that is not there, which includes nothing. TRUNCATE of the other tables keeps working.
            PRIMARY KEY (namespace, partial, dependent)
        );
        CREATE INDEX promptreg_partials_dependent ON promptreg_partials (namespace, dependent);
        -- Rows are added with the versions that include a partial, never changed: who may read the
        -- versions may read the index, who may add versions may add its rows.
        """
        + carry_grants("promptreg_versions", "promptreg_partials", {"SELECT": "SELECT", "INSERT": "INSERT"})
        + """
        """,
        backfill_partials,
    ),
    Migration(
        7,
        "protected labels: protections, move requests and approvals, enforced by triggers and functions",
        # SQL of registry/postgres/governance_schema.py. The roles that exist keep working: who may
        # read the labels may read the new tables, who may move labels may request a move; approving
        # and protecting need the approver's and the admin's grants (docs/postgres.md, Roles).
        TABLES_SQL
        + TRIGGERS_SQL
        + FUNCTIONS_SQL
        + PIN_SQL
        + carry_grants("promptreg_labels", ", ".join(GOVERNANCE_TABLES), {"SELECT": "SELECT"})
        + carry_grants("promptreg_labels", f"FUNCTION {REQUEST_FUNCTION}", {"UPDATE": "EXECUTE"}),
    ),
    Migration(
        8,
        "webhooks: endpoints, their cursors and dead letters, the delivery lease; grants to who may move labels",
        # registry/postgres/webhook_schema.py (registry/webhooks/postgres_store.py uses the tables).
        # Endpoints hold URLs (maybe with credentials): the roles that may move labels (writer,
        # approver, admin) get them, the reader does not.
        WEBHOOKS_SQL
        + carry_grants("promptreg_labels", ", ".join(WEBHOOK_TABLES), {"UPDATE": "SELECT, INSERT, UPDATE, DELETE"}),
    ),
)
LATEST_SCHEMA: Final = MIGRATIONS[-1].version
READABLE_SCHEMA: Final = 5
"""The oldest schema a registry with ``auto_migrate=False`` works on, for reads: migration 6 only
adds the dependents index (``promptreg_partials``), which the reads do without (they scan the
versions instead); migration 7 adds protected labels, which read as none before it (and the audit
rows' ``request`` and ``approvals`` as ``None``). Every write needs :data:`LATEST_SCHEMA`."""
PARTIALS_SCHEMA: Final = 6
"""The schema that has the dependents index (``promptreg_partials``)."""
GOVERNANCE_SCHEMA: Final = 7
"""The schema that has protected labels (``promptreg_protections`` and the audit's ``request``)."""


def run_migrations(conn: Any) -> list[Migration]:
    """Apply every migration ``conn``'s database lacks, in one transaction; returns those applied.

    ``conn`` is a psycopg connection in autocommit mode. Raises what psycopg raises (the caller
    translates).
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {SCHEMA_TABLE} (version integer PRIMARY KEY, "
            "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        applied = {row[0] for row in conn.execute(f"SELECT version FROM {SCHEMA_TABLE}")}
        done = []
        for migration in MIGRATIONS:
            if migration.version in applied:
                continue
            conn.execute(migration.sql)
            if migration.backfill is not None:
                migration.backfill(conn)
            conn.execute(
                f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
            done.append(migration)
    return done


def schema(conn: Any, *, migrate: bool = False, write: bool = False) -> int:
    """The schema version of ``conn``'s database, once it is one this promptreg works on: with
    ``migrate``, after applying what is missing (:func:`run_migrations`); else from
    :data:`READABLE_SCHEMA` on (for reads: a client upgraded before ``promptreg migrate`` runs), and
    with ``write`` only :data:`LATEST_SCHEMA`. Raises :class:`~promptreg.RegistryUnavailableError`
    saying ``run `promptreg migrate``` for an older one."""
    try:
        (current,) = conn.execute(f"SELECT max(version) FROM {SCHEMA_TABLE}").fetchone()
    except Exception as exc:
        if not is_undefined_table(exc):
            raise
        current = None
    current = int(current or 0)
    if current >= LATEST_SCHEMA:
        return current
    if migrate:
        run_migrations(conn)
        return LATEST_SCHEMA
    if write and current >= READABLE_SCHEMA:
        raise RegistryUnavailableError(
            f"the promptreg schema is at version {current}: this promptreg reads it, but its writes need version "
            f"{LATEST_SCHEMA} ({_missing(current)}): run `promptreg migrate`"
        )
    if current < READABLE_SCHEMA:
        raise RegistryUnavailableError(
            f"the promptreg schema is at version {current}, this promptreg needs {LATEST_SCHEMA}: "
            "run `promptreg migrate`"
        )
    return current


def _missing(current: int) -> str:
    """The migrations a schema at ``current`` lacks, named by the head of their description."""
    missing = [m for m in MIGRATIONS if m.version > current]
    return ", ".join(f"migration {m.version}: {m.description.split(':')[0]}" for m in missing)


def channel_for(namespace: str) -> str:
    """The NOTIFY channel of ``namespace``: ``promptreg.<namespace>``, or a digest of it when that
    is longer than PostgreSQL's 63-byte identifier limit."""
    channel = CHANNEL_PREFIX + namespace
    if len(channel.encode("utf-8")) <= _MAX_CHANNEL:
        return channel
    return CHANNEL_PREFIX + hashlib.sha256(namespace.encode("utf-8")).hexdigest()[:40]


def encode_payload(
    rev: int, op: str, prompt: str, label: str | None, version: int | None, prev: int | None,
    author: str | None, at: float, percent: float | None = None,
) -> str:  # fmt: skip
    """The NOTIFY payload of one write (module docstring; a rollout's also has ``pct``, its share);
    always under :data:`MAX_PAYLOAD_BYTES`."""
    fields: dict[str, Any] = {"rev": rev, "op": op, "prompt": prompt, "label": label, "version": version,
                              "prev": prev, "author": author, "at": at}  # fmt: skip
    if op in ROLLOUT_OPERATIONS:
        fields["pct"] = percent
    payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    if len(payload.encode("utf-8")) > MAX_PAYLOAD_BYTES:
        fields["author"] = None  # names and labels are bounded; only the author can overflow
        payload = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return payload


def decode_payload(payload: str) -> ChangeMessage:
    """Decode and check a payload with the very checks of :func:`promptreg.registry.wire.decode`.

    Raises :class:`~promptreg.RegistryCorruptError` for anything malformed.
    """
    try:
        raw = json.loads(payload)
        if not isinstance(raw, dict):
            raise RegistryCorruptError("change notification is not a JSON object")
        packed = msgpack.packb(raw)
    except (ValueError, TypeError, RecursionError) as exc:  # any role may NOTIFY: a payload nested 3,000 deep fits
        raise RegistryCorruptError(f"undecodable change notification: {type(exc).__name__}") from None
    return decode(packed)
