"""What the PostgreSQL listener reads from the tables: the SQL and the decoding of its rows.

A notification is only a doorbell (:mod:`promptreg.client.postgres.feed`); everything the client applies comes
from here, read on the feed's reader connection: the audit rows after the cache's revision (one
statement, one snapshot), the registry's fingerprint (revision and newest audit row), the whole
state (one ``REPEATABLE READ`` transaction) and single versions. No state of its own: the feed owns
the connection and the cache.

Content identity (DESIGN.md section 3, rule 2b): every audit row written since schema migration 4
carries its write's random id (``write_id``; ``NULL`` before: ``''``). A row read back becomes a
:class:`~promptreg.registry.wire.ChangeMessage` with that id, the id of the write before it (the row at the
revision below, ``''`` when there is none) and the ``sha`` (16 hex digits of the stored sha256) of
the version it points at, so :meth:`~promptreg.client.cache.Cache.apply` applies it with the rules of a Redis
message. A full state carries the write ids of its revision and of the cache's revision
(:class:`~promptreg.client.pointers.StatePointers`): a restore that brings audit row ids and version numbers
back cannot bring a random write id back with another history.

Rollouts (schema migration 5): a full state carries the rollouts running at its snapshot
(:attr:`StatePointers.rollouts <promptreg.client.pointers.StatePointers.rollouts>`) and every
candidate's version; a rollout's audit row becomes a message with its share (``percent``) and, as
its audit entry defines them, ``version``, ``previous_version`` and the ``sha`` of ``version``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from promptreg.client.cache import Cache, StatePointers
from promptreg.client.cached_version import CachedVersion, VersionRow, cached_batch
from promptreg.client.pointers import Rollouts, share_equal_maps
from promptreg.registry.postgres.conn import is_undefined_table
from promptreg.registry.rollouts import percent_of
from promptreg.registry.wire import ChangeMessage

_FINGERPRINT = """
    SELECT n.rev, a.id, a.rev, a.action, a.prompt, a.label, a.version, a.write_id
    FROM promptreg_namespaces n
    LEFT JOIN LATERAL (SELECT id, rev, action, prompt, label, version, write_id FROM promptreg_audit
                       WHERE namespace = n.namespace ORDER BY rev DESC LIMIT 1) a ON true
    WHERE n.namespace = %s
"""

# The read a notification rings for: the registry's revision, the newest audit row at or below the
# cache's revision (it must be the one the cache was built from) and the rows after it, each with
# the sha of the version it points at and the text of the versions they add (when the client
# serves every prompt: a subset fetches only its own). One statement: one snapshot. Both audit
# reads walk the UNIQUE (namespace, rev) index; the version is one primary-key probe per row that
# names one (LIMIT 1 keeps the planner from turning it into a join over every version of the
# namespace: measured at 1,000 versions, 3 ms a read instead of 0.5). A rollout's share (``points``,
# schema migration 5) is read through to_jsonb, so a schema that predates it reads NULL instead of
# failing: a client works before and after ``promptreg migrate``. A rollout's start sends its
# candidate's text too.
_TEXT = "CASE WHEN %(texts)s AND a.action IN ('add_version', 'start_rollout') THEN v.{} END"
_AUDIT = (
    "SELECT id, rev, action, prompt, label, version, previous_version, author, at, write_id, "
    "(to_jsonb(promptreg_audit) ->> 'points')::int AS points FROM promptreg_audit"
)
_CHANGES = f"""
    SELECT n.rev, a.id, a.rev, a.action, a.prompt, a.label, a.version, a.previous_version, a.author, a.at,
           a.write_id, left(v.sha256, 16), a.points,
           {", ".join(_TEXT.format(c) for c in ("prompt_text", "author", "message", "metadata", "created_at",
                                                "messages", "config"))}
    FROM promptreg_namespaces n
    LEFT JOIN LATERAL (
        ({_AUDIT} WHERE namespace = n.namespace AND rev <= %(rev)s ORDER BY rev DESC LIMIT 1)
        UNION ALL
        ({_AUDIT} WHERE namespace = n.namespace AND rev > %(rev)s ORDER BY rev LIMIT %(limit)s)
    ) a ON true
    LEFT JOIN LATERAL (
        SELECT sha256, prompt_text, author, message, metadata, created_at, messages, config FROM promptreg_versions
        WHERE a.rev > %(rev)s AND a.version IS NOT NULL AND namespace = n.namespace AND name = a.prompt
              AND version = a.version
        LIMIT 1
    ) v ON true
    WHERE n.namespace = %(ns)s
    ORDER BY a.rev
"""  # fmt: skip


@dataclass(frozen=True, slots=True)
class Head:
    """The newest audit row: its id (the fingerprint), what it did (to compare with a message) and
    its write's id (``''``: none recorded)."""

    entry_id: int
    rev: int
    action: str
    prompt: str
    label: str | None
    version: int | None
    write_id: str

    def write_id_at(self, rev: int) -> str:
        """The id of the write that made ``rev`` as far as this row tells (``''``: not this row's)."""
        return self.write_id if self.rev == rev else ""


@dataclass(frozen=True, slots=True)
class State:
    """A whole state: ``pointers`` carries the write ids that place it in the registry's history."""

    rev: int
    head: Head | None
    pointers: StatePointers
    versions: dict[tuple[str, int], CachedVersion]
    same_history: bool
    """Whether the registry still holds the write the cache is at: the versions cached are valid."""


@dataclass(frozen=True, slots=True)
class Changes:
    """What a ring read: the registry's revision, the audit row at the cache's revision and the
    changes after it (as messages, with their audit row ids), with the texts of versions they add."""

    server_rev: int
    base: tuple[int, int, str] | None
    """``(audit row id, rev, write id)`` of the newest row at or below the cache's revision."""
    changes: list[tuple[int, ChangeMessage]]
    texts: dict[tuple[str, int], CachedVersion]


def read_changes(conn: Any, namespace: str, after: int, limit: int, texts: bool) -> Changes:
    """The audit rows after revision ``after`` (at most ``limit``), at one snapshot."""
    rows = conn.execute(_CHANGES, {"rev": after, "limit": limit, "texts": texts, "ns": namespace}).fetchall()
    server_rev = int(rows[0][0]) if rows else 0
    base: tuple[int, int, str] | None = None
    changes: list[tuple[int, ChangeMessage]] = []
    found: dict[tuple[str, int], CachedVersion] = {}
    previous: tuple[int, str] | None = None  # (rev, write id) of the row read before
    for row in rows:
        entry_id, rev, action, prompt, label, version, prev, author, at, write_id, sha, points = row[1:13]
        if entry_id is None:  # no audit row at all: one row of NULLs
            continue
        write_id = write_id or ""
        if rev <= after:
            base = (entry_id, rev, write_id)
        else:
            # The write before this one is the row at the revision below; none read: none recorded.
            phid = previous[1] if previous is not None and previous[0] == rev - 1 else ""
            percent = None if points is None else percent_of(points)
            changes.append((entry_id, ChangeMessage(rev, action, prompt, label, version, prev, author,
                                                    at.timestamp(), sha, write_id, phid, percent)))  # fmt: skip
            if row[13] is not None:
                found[prompt, version] = cached_rows([(version, *row[13:])])[0]
        previous = (rev, write_id)
    return Changes(server_rev, base, changes, found)


def read_fingerprint(conn: Any, namespace: str) -> tuple[int, Head | None]:
    """The registry's revision and its newest audit row (``(0, None)``: no schema or no write yet)."""
    try:
        row = conn.execute(_FINGERPRINT, (namespace,)).fetchone()
    except Exception as exc:
        if is_undefined_table(exc):  # no schema yet: an empty registry
            return 0, None
        raise
    if row is None:
        return 0, None
    rev, entry_id, head_rev, action, prompt, label, version, write_id = row
    if entry_id is None:
        return int(rev), None
    return int(rev), Head(entry_id, head_rev, action, prompt, label, version, write_id or "")


def read_state(conn: Any, namespace: str, cache: Cache, anchor: int | None) -> State:
    """The whole state at one moment (one REPEATABLE READ transaction on ``conn``).

    Its history holds the id of the write at its revision and at the cache's: when the registry no
    longer holds the cache's ``(rev, write id)`` (a restore, even one that brought the audit row
    ids back) or the cache's anchor row, every version it points at is read again.
    """
    try:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            rev, head = read_fingerprint(conn, namespace)
            history = {rev: "" if head is None else head.write_id_at(rev)}
            row = conn.execute(
                "SELECT write_id FROM promptreg_audit WHERE namespace = %s AND rev = %s", (namespace, cache.rev)
            ).fetchone()
            if row is not None:
                history[cache.rev] = row[0] or ""
            anchor_found = anchor is not None and (
                conn.execute("SELECT 1 FROM promptreg_audit WHERE namespace = %s AND id = %s",
                             (namespace, anchor)).fetchone() is not None
            )  # fmt: skip
            pointers: dict[str, dict[str, int]] = {}
            subset = cache.subset
            for name, latest in conn.execute("SELECT name, latest FROM promptreg_prompts WHERE namespace = %s",
                                             (namespace,)):  # fmt: skip
                if subset is None or name in subset:
                    pointers[name] = {"latest": latest} if latest else {}
            for name, label, version in conn.execute(
                "SELECT name, label, version FROM promptreg_labels WHERE namespace = %s AND version IS NOT NULL",
                (namespace,),
            ):
                if name in pointers:
                    pointers[name][label] = version
            share_equal_maps(pointers, list(pointers), {})
            rollouts = _read_rollouts(conn, namespace, pointers)
            state_pointers = StatePointers(pointers, history, rollouts)
            candidates = {(n, candidate) for n, running in rollouts.items() for candidate, _ in running.values()}
            same = anchor_found and cache.continues(history)
            if same:
                wanted = cache.missing_versions(state_pointers)  # first: it may forget the versions cached
                wanted |= {pair for pair in candidates if pair not in cache.versions}
                versions = read_versions(conn, namespace, wanted)
            elif subset is None:  # every version a label points at: the server joins, no 200k-pair array
                versions = _read_pointed(conn, namespace, bool(rollouts))
            else:
                wanted = {(n, v) for n, labels in pointers.items() for v in labels.values()} | candidates
                versions = read_versions(conn, namespace, wanted)
    except Exception as exc:
        if is_undefined_table(exc):  # no schema yet: an empty registry
            return State(0, None, StatePointers({}, {0: ""}), {}, False)
        raise
    return State(rev, head, state_pointers, versions, same)


FETCH = 2000
"""Rows per ``FETCH`` of :func:`read_versions`' server-side cursor."""


_COLUMNS = (
    # NULLIF: an empty map is not sent to json.loads (most versions have none), it is read as None.
    "v.name, v.version, v.prompt_text, v.author, v.message, NULLIF(v.metadata::text, '{}')::json, "
    "v.created_at, v.messages, NULLIF(v.config::text, '{}')::json"
)


def _read_rollouts(conn: Any, namespace: str, pointers: dict[str, dict[str, int]]) -> Rollouts:
    """The rollouts running on the prompts of ``pointers``, in the caller's transaction (none when
    the schema predates them: a client may be upgraded before ``promptreg migrate`` runs)."""
    (exists,) = conn.execute("SELECT to_regclass('promptreg_rollouts') IS NOT NULL").fetchone()
    rollouts: Rollouts = {}
    if exists:
        for name, label, candidate, points in conn.execute(
            "SELECT name, label, candidate, points FROM promptreg_rollouts WHERE namespace = %s", (namespace,)
        ):
            if name in pointers:
                rollouts.setdefault(name, {})[label] = (candidate, points)
    return rollouts


def _read_pointed(conn: Any, namespace: str, candidates: bool) -> dict[tuple[str, int], CachedVersion]:
    """Every version a label (or ``latest``) points at, and with ``candidates`` every rollout's
    candidate, in the caller's transaction: the rows those tables name at that snapshot, which are
    the pointers the caller read in it."""
    rollouts = " UNION SELECT name, candidate FROM promptreg_rollouts WHERE namespace = %s" if candidates else ""
    return _fetch_built(
        conn,
        f"SELECT {_COLUMNS} FROM promptreg_versions v WHERE v.namespace = %s AND (v.name, v.version) IN ("
        "SELECT name, version FROM promptreg_labels WHERE namespace = %s AND version IS NOT NULL "
        f"UNION SELECT name, latest FROM promptreg_prompts WHERE namespace = %s AND latest > 0{rollouts})",
        (namespace,) * (4 if candidates else 3),
    )


def _fetch_built(conn: Any, query: str, params: tuple[Any, ...]) -> dict[tuple[str, int], CachedVersion]:
    """Run ``query`` (rows of :data:`_COLUMNS`) through a server-side cursor, :data:`FETCH` rows at a
    time, each batch built (its templates compiled together) before the next is fetched: a
    100k-prompt start-up never holds the 200k rows at once, only the versions built from them."""
    found: dict[tuple[str, int], CachedVersion] = {}
    with conn.cursor(name="promptreg_versions") as cursor:
        cursor.execute(query, params)
        while rows := cursor.fetchmany(FETCH):
            found.update(zip([(row[0], row[1]) for row in rows], cached_rows([row[1:] for row in rows]), strict=True))
    return found


def read_versions(conn: Any, namespace: str, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], CachedVersion]:
    """The versions ``wanted`` that exist, in one statement, inside the caller's transaction
    (:func:`_fetch_built`)."""
    if not wanted:
        return {}
    names, numbers = zip(*sorted(wanted), strict=True)
    return _fetch_built(
        conn,
        f"SELECT {_COLUMNS} FROM promptreg_versions v JOIN unnest(%s::text[], %s::int[]) AS w(name, version) "
        "ON v.name = w.name AND v.version = w.version WHERE v.namespace = %s",
        (list(names), list(numbers), namespace),
    )


def read_version(conn: Any, namespace: str, name: str, number: int) -> CachedVersion | None:
    """One version (``None``: it does not exist)."""
    row = conn.execute(
        "SELECT version, prompt_text, author, message, metadata, created_at, messages, config "
        "FROM promptreg_versions WHERE namespace = %s AND name = %s AND version = %s",
        (namespace, name, number),
    ).fetchone()
    return None if row is None else cached_rows([row])[0]


def cached_rows(rows: list[tuple[Any, ...]]) -> list[CachedVersion]:
    """Cached versions from rows of ``version, prompt_text, author, message, metadata, created_at,
    messages, config`` (the registry validated them when they were written)."""
    ordered: list[VersionRow] = [
        (
            number,
            text,
            _utc(created_at),
            author,
            message,
            metadata,
            None if messages is None else tuple(messages),
            config,
        )
        for number, text, author, message, metadata, created_at, messages, config in rows
    ]
    return cached_batch(ordered)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC)
