"""The PostgreSQL listener: the client's own loop on a named daemon thread (DESIGN.md section 3).

Two connections: the *listener* only ``LISTEN``\\ s; the *reader* reads states, fingerprints and
single versions, and sends the markers. The listener never runs a query while it listens, so no
notification can fall between two reads of its socket.

1. ``LISTEN`` on the namespace's channel (it commits at once), then read the state in one
   ``REPEATABLE READ`` transaction on the reader: every write committed before the LISTEN is in that
   state, and every write committed after it is notified. Then the reader NOTIFYs a *marker* on a
   channel only this listener listens on: PostgreSQL queues notifications in commit order, so the
   marker arrives after the notification of every write the state holds. Until it arrives, messages
   at or below the state's revision are that backlog and are ignored.
2. After the marker, a message applies only if its ``rev`` is the cache's plus one; a gap, or a
   revision at or below the cache's (a restore), makes a full resync.
3. Every reconnect is a gap: full resync. When the channel is quiet, a safety poll reads the
   registry's fingerprint (revision and the id of the newest audit row) and resyncs when it is not
   the state the cache holds; then it sends a marker, which must come back within
   ``ping_timeout`` (a half-open listener connection is caught that way, and by TCP keepalives).
4. An empty registry (no revision, no prompt) never replaces a cache that holds prompts: the cache
   is held (served, ``stale``) and the state re-read every :data:`HOLD_RECHECK` seconds.
5. The loop never dies (:class:`~client.feeds.Feed`): errors are logged, reported through the
   status, and followed by a reconnect after a full-jitter backoff capped near 1 s.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from client.feeds import Backoff, FeedContext, PushFeed, empty_registry
from registry.models import PromptVersion
from registry.postgres_conn import is_undefined_table, map_postgres_errors
from registry.postgres_schema import decode_payload
from registry.postgres_store import PostgresPromptRegistry, version_from_row

logger = logging.getLogger("promptreg.client")

WAIT_STEP = 0.25
"""Seconds the listener waits for notifications at a time (then it checks the stop flag)."""
CATCH_UP_TIMEOUT = 0.5
"""Seconds the safety poll lets in-flight notifications arrive before it declares the cache behind."""
HOLD_RECHECK = 1.0
"""Seconds between re-reads of the registry while the cache is held (empty registry)."""

_FINGERPRINT = """
    SELECT n.rev, a.id, a.action, a.prompt, a.label, a.version
    FROM promptreg_namespaces n
    LEFT JOIN LATERAL (SELECT id, rev, action, prompt, label, version FROM promptreg_audit
                       WHERE namespace = n.namespace ORDER BY rev DESC LIMIT 1) a ON true
    WHERE n.namespace = %s
"""


@dataclass(frozen=True, slots=True)
class _Head:
    """The newest audit row: its id (the fingerprint) and what it did (to compare with a message)."""

    entry_id: int
    action: str
    prompt: str
    label: str | None
    version: int | None


@dataclass(frozen=True, slots=True)
class _State:
    rev: int
    head: _Head | None
    pointers: dict[str, dict[str, int]]
    versions: dict[tuple[str, int], PromptVersion]
    anchor_found: bool


class PostgresFeed(PushFeed[int]):
    """The PostgreSQL LISTEN/NOTIFY listener (module docstring has the algorithm)."""

    kind = "postgres"

    def __init__(self, registry: PostgresPromptRegistry, context: FeedContext, *, poll_interval: float = 30.0) -> None:
        super().__init__(context, registry.namespace)
        self.registry = registry
        self.poll_interval = poll_interval
        self.ping_timeout = max(1.0, min(10.0, poll_interval))
        self._listener: Any = None
        self._reader: Any = None
        self._pid = os.getpid()
        self._marker_channel = f"promptreg-m-{uuid.uuid4().hex}"
        self._marker = ""
        self._markers = 0
        self._pong_deadline: float | None = None
        self._recheck_at = 0.0

    def forked(self, context: FeedContext) -> PostgresFeed:
        """A new feed with new connections for a forked child (psycopg leaves the parent's alone)."""
        self._listener = self._reader = None
        return PostgresFeed(self.registry, context, poll_interval=self.poll_interval)

    def fetch_version(self, name: str, number: int) -> PromptVersion:
        """Read one version through the registry (typed errors, connection errors translated)."""
        return self.registry.get_version(name, version=number)

    def close(self) -> None:
        """Close the feed's connections (the registry's own connection is closed by its owner)."""
        self._disconnect()

    def _disconnect(self) -> None:
        listener, reader, self._listener, self._reader = self._listener, self._reader, None, None
        if self._pid != os.getpid():
            return
        for conn in (listener, reader):
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # best effort: the connection may be half gone
                    logger.debug("promptreg: error closing a postgres connection", exc_info=True)

    # -- the loop ----------------------------------------------------------------------------------

    def _run_once(self, backoff: Backoff) -> None:
        try:
            self._listener = self.registry.connect()
            self._reader = self.registry.connect()
            with map_postgres_errors():
                for channel in (self.registry.channel, self._marker_channel):
                    self._listener.execute(f'LISTEN "{channel}"')  # channel names: [A-Za-z0-9._-] only
            self._resync("listening")
            if backoff.failures and self.holding is None:
                logger.info("promptreg postgres %s: reconnected and resynced at rev %d", self._name,
                            self.context.cache.rev)  # fmt: skip
            backoff.reset()
            self.first_attempt.set()
            self._listen()
        finally:
            self._disconnect()

    def _listen(self) -> None:
        idle = self.context.idle
        next_poll = time.monotonic() + self.poll_interval
        while not self._stop.is_set():
            now = time.monotonic()
            wake = next_poll if self.holding is None else min(next_poll, self._recheck_at)
            heard = self._receive(max(0.0, min(WAIT_STEP, wake - now)))
            idle()
            now = time.monotonic()
            if self._pong_deadline is not None and now > self._pong_deadline:
                raise TimeoutError(f"the listener connection did not deliver a marker within {self.ping_timeout:g} s")
            if self.holding is not None and now >= self._recheck_at:
                self._resync(f"recheck: {self.holding}")
            if not heard and now >= next_poll:
                self._safety_poll()
                next_poll = time.monotonic() + self.poll_interval

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for notifications and handle them; whether any came."""
        with map_postgres_errors():
            # Consumed whole before handling: the generator holds the connection's lock.
            batch = list(self._listener.notifies(timeout=timeout, stop_after=1))
        for notify in batch:
            self._pong_deadline = None  # any notification proves the connection alive
            if notify.channel == self._marker_channel:
                if notify.payload == self._marker:
                    self.context.cache.settle()  # the backlog of the last state read is drained
            else:
                self._on_change(notify.payload)
        return bool(batch)

    def _on_change(self, payload: str) -> None:
        self._on_message(lambda: decode_payload(payload), "notification")

    def _fetch_one(self, name: str, number: int) -> PromptVersion | None:
        with map_postgres_errors():
            row = self._reader.execute(
                "SELECT version, prompt_text, author, message, metadata, created_at, messages, config "
                "FROM promptreg_versions "
                "WHERE namespace = %s AND name = %s AND version = %s",
                (self.registry.namespace, name, number),
            ).fetchone()
        return None if row is None else version_from_row(row)

    def _send_marker(self) -> None:
        """NOTIFY a fresh marker on this listener's own channel: it arrives after every notification
        of a write committed before it (PostgreSQL's queue is in commit order)."""
        self._markers += 1
        self._marker = f"drained-{self._markers}"
        with map_postgres_errors():
            self._reader.execute("SELECT pg_notify(%s, %s)", (self._marker_channel, self._marker))
        if self._pong_deadline is None:  # one marker deadline at a time: it must not move
            self._pong_deadline = time.monotonic() + self.ping_timeout

    # -- safety poll and resync --------------------------------------------------------------------

    def _fingerprint(self, conn: Any) -> tuple[int, _Head | None]:
        try:
            row = conn.execute(_FINGERPRINT, (self.registry.namespace,)).fetchone()
        except Exception as exc:
            if is_undefined_table(exc):  # no schema yet: an empty registry
                return 0, None
            raise
        if row is None:
            return 0, None
        rev, entry_id, action, prompt, label, version = row
        return int(rev), None if entry_id is None else _Head(entry_id, action, prompt, label, version)

    def _safety_poll(self) -> None:
        if self.holding is not None:  # the recheck reads the whole state anyway
            return
        cache = self.context.cache
        with map_postgres_errors():
            server_rev, head = self._fingerprint(self._reader)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        # Notifications of writes committed before the read may still be on their way.
        while cache.rev < server_rev and time.monotonic() < deadline and not self._stop.is_set():
            self._receive(0.05)
        if self._stop.is_set():
            return
        if cache.rev != server_rev:
            self._resync(f"safety poll: registry at rev {server_rev}, cache at rev {cache.rev}")
            return
        mismatch = self._fingerprint_mismatch(server_rev, head)
        if mismatch is not None:
            self._resync(mismatch)
            return
        self._send_marker()

    def _fingerprint_mismatch(self, rev: int, head: _Head | None) -> str | None:
        """Why the registry at ``rev`` with newest audit row ``head`` is not the cache's state, or ``None``.

        The newest row is the write that made ``rev`` (revisions are unique per namespace)."""
        if head is None:
            return self._history_mismatch(rev, None, None)
        return self._history_mismatch(rev, head.entry_id, (rev, head.action, head.prompt, head.label, head.version))

    def _read_state(self) -> _State:
        """The whole state at one moment (one REPEATABLE READ transaction on the reader)."""
        conn, ns, cache = self._reader, self.registry.namespace, self.context.cache
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                rev, head = self._fingerprint(conn)
                anchor_found = self._anchor is not None and (
                    conn.execute("SELECT 1 FROM promptreg_audit WHERE namespace = %s AND id = %s",
                                 (ns, self._anchor)).fetchone() is not None
                )  # fmt: skip
                pointers: dict[str, dict[str, int]] = {}
                subset = cache.subset
                for name, latest in conn.execute(
                    "SELECT name, latest FROM promptreg_prompts WHERE namespace = %s", (ns,)
                ):
                    if subset is None or name in subset:
                        pointers[name] = {"latest": latest} if latest else {}
                for name, label, version in conn.execute(
                    "SELECT name, label, version FROM promptreg_labels WHERE namespace = %s AND version IS NOT NULL",
                    (ns,),
                ):
                    if name in pointers:
                        pointers[name][label] = version
                wanted = (
                    cache.missing_versions(pointers)
                    if anchor_found
                    else {(n, v) for n, labels in pointers.items() for v in labels.values()}
                )
                versions = self._read_versions(conn, wanted)
        except Exception as exc:
            if is_undefined_table(exc):  # no schema yet: an empty registry
                return _State(0, None, {}, {}, False)
            raise
        return _State(rev, head, pointers, versions, anchor_found)

    def _read_versions(self, conn: Any, wanted: set[tuple[str, int]]) -> dict[tuple[str, int], PromptVersion]:
        if not wanted:
            return {}
        names, numbers = zip(*sorted(wanted), strict=True)
        rows = conn.execute(
            "SELECT v.name, v.version, v.prompt_text, v.author, v.message, v.metadata, v.created_at, v.messages, "
            "v.config "
            "FROM promptreg_versions v JOIN unnest(%s::text[], %s::int[]) AS w(name, version) "
            "ON v.name = w.name AND v.version = w.version WHERE v.namespace = %s",
            (list(names), list(numbers), self.registry.namespace),
        )
        return {(row[0], row[1]): version_from_row(row[1:]) for row in rows}

    def _resync(self, reason: str) -> None:
        """Read the whole state and replace the cache with it, unless the registry is empty while the
        cache holds prompts (then hold the cache)."""
        context = self.context
        cache = context.cache
        with map_postgres_errors():
            state = self._read_state()
        problem = empty_registry(state.rev, state.pointers, cache)
        if problem is not None:
            self._hold(problem)
            self._recheck_at = time.monotonic() + HOLD_RECHECK
            return
        if state.anchor_found:  # the same history, grown: versions cached are still the registry's
            for (name, _number), version in state.versions.items():
                cache.add_version(name, version)
            events = cache.replace(state.rev, state.pointers)
        else:  # another history (restore) or unknown: a version number may be another text
            events = cache.replace(state.rev, state.pointers, versions=state.versions)
        self._loaded(state.rev, None if state.head is None else state.head.entry_id)
        self._trusted()
        context.status.resynced()
        context.status.live()
        logger.debug("promptreg: resynced to rev %d (%s)", state.rev, reason)
        self._send_marker()
        if events:
            context.notify(events)
