"""The PostgreSQL listener: the client's own loop on a named daemon thread (DESIGN.md section 3).

Two connections: the *listener* only ``LISTEN``\\ s; the *reader* reads states, the changes a
notification announces, fingerprints and single versions, and sends the markers. The listener
never runs a query while it listens, so no notification can fall between two reads of its socket.

A notification is a doorbell, not a message (DESIGN.md 2b): any role that can connect may
``pg_notify`` on any channel, so its payload is never applied. It only makes the reader fetch what
changed from the tables, which a service role may SELECT and cannot write: the registry's revision
and the audit rows after the cache's revision (with the text of any version they add), in one
statement, so at one snapshot, on the ``(namespace, rev)`` index. Notifications that arrive
together ring once. A forged one costs one such read and changes nothing.

1. ``LISTEN`` on the namespace's channel (it commits at once), then read the state in one
   ``REPEATABLE READ`` transaction on the reader: every write committed before the LISTEN is in that
   state, and every write committed after it rings. Then the reader NOTIFYs a *marker* (a fresh
   random payload) on a channel only this listener listens on: PostgreSQL queues notifications in
   commit order, so the marker arrives after the notification of every write the state holds.
2. On a ring, the audit rows after the cache's revision apply one by one with the rules of a change
   message (:meth:`~promptreg.client.cache.Cache.apply`): each must be the cache's revision plus one and
   follow the write the cache holds (write ids and the version's sha: :mod:`promptreg.client.postgres.readback`).
   A gap, a registry revision below the cache's (a restore), or a row at the cache's revision that
   is not the write the cache holds (a rewritten history, even with the same audit row id) makes a
   full resync.
3. Every reconnect is a gap: full resync. When the channel is quiet, a safety poll reads the
   registry's fingerprint (revision, the newest audit row's id and write id) and resyncs when it is not
   the state the cache holds; then it sends a marker, which must come back within
   ``ping_timeout`` (a half-open listener connection is caught that way, and by TCP keepalives).
4. An empty registry (no revision, no prompt) never replaces a cache that holds prompts: the cache
   is held (served, ``stale``) and the state re-read every :data:`HOLD_RECHECK` seconds, and on a ring.
5. The loop never dies (:class:`~promptreg.client.feeds.Feed`): errors are logged, reported through the
   status, and followed by a reconnect after a full-jitter backoff capped near 1 s.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from promptreg.client.cache import Action
from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.client.feeds import Backoff, FeedContext, PushFeed, empty_registry
from promptreg.client.postgres.readback import Changes, Head, read_changes, read_fingerprint, read_state, read_version
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.postgres.conn import map_postgres_errors
from promptreg.registry.postgres.schema import decode_payload
from promptreg.registry.postgres.store import PostgresPromptRegistry

logger = logging.getLogger("promptreg.client")

WAIT_STEP = 0.25
"""Seconds the listener waits for notifications at a time (then it checks the stop flag)."""
CATCH_UP_TIMEOUT = 0.5
"""Seconds the safety poll lets in-flight notifications arrive before it declares the cache behind."""
HOLD_RECHECK = 1.0
"""Seconds between re-reads of the registry while the cache is held (empty registry)."""
CHANGES_PER_READ = 500
"""Audit rows one ring reads at most; a client further behind reads again from where it stopped."""


class PostgresFeed(PushFeed[int]):
    """The PostgreSQL LISTEN/NOTIFY listener (module docstring has the algorithm)."""

    kind = "postgres"

    def __init__(self, registry: PostgresPromptRegistry, context: FeedContext, *, poll_interval: float = 30.0) -> None:
        super().__init__(context, registry.namespace, poll_interval=poll_interval)
        self.registry = registry
        self._listener: Any = None
        self._reader: Any = None
        self._pid = os.getpid()
        self._marker_channel = f"promptreg-m-{uuid.uuid4().hex}"
        self._marker = ""
        self._unfounded = 0

    def forked(self, context: FeedContext) -> PostgresFeed:
        """A new feed with new connections for a forked child (psycopg leaves the parent's alone)."""
        self._listener = self._reader = None
        return PostgresFeed(self.registry, context, poll_interval=self.poll_interval)

    def fetch_version(self, name: str, number: int) -> CachedVersion:
        """Read one version through the registry (typed errors, connection errors translated)."""
        return cached_from_model(self.registry.get_version(name, version=number))

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

    wait_step = WAIT_STEP
    silence = "the listener connection did not deliver a marker"

    def _quiet(self) -> None:
        self._safety_poll()  # ends with a marker NOTIFY: the connection's ping

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for notifications and handle them; whether any came."""
        with map_postgres_errors():
            # Consumed whole before handling: the generator holds the connection's lock. What is
            # already in the socket then joins the batch: notifications that came together ring once.
            batch = list(self._listener.notifies(timeout=timeout, stop_after=1))
            if batch:
                batch += self._listener.notifies(timeout=0)
        rang: list[str] = []
        for notify in batch:
            self._pong_deadline = None  # any notification proves the connection alive
            if notify.channel == self._marker_channel:
                if notify.payload == self._marker:
                    self.context.cache.settle()  # the backlog of the last state read is drained
            else:
                rang.append(notify.payload)
        if rang:
            self._ring(rang)
        return bool(batch)

    def _ring(self, payloads: list[str]) -> None:
        """Notifications came on the registry's channel: apply what the tables say changed.

        The payloads are not applied (anyone who can connect may send one); they are only checked
        afterwards, to report those that announce a write the registry does not hold.
        """
        if self.holding is not None:  # a write may have made the registry trustworthy again
            self._resync(f"notification while held: {self.holding}")
            return
        server_rev = self._catch_up()
        if server_rev is not None:
            self._check_payloads(payloads, server_rev)

    def _catch_up(self) -> int | None:
        """Apply the audit rows after the cache's revision (module docstring, step 2).

        Returns the registry's revision read, or ``None`` when it resynced instead.
        """
        cache = self.context.cache
        while True:
            after = cache.rev
            with map_postgres_errors():
                read = read_changes(
                    self._reader, self.registry.namespace, after, CHANGES_PER_READ, cache.subset is None
                )
            server_rev = read.server_rev
            base = read.base
            if server_rev < after:
                self._resync(f"registry went back: it is at rev {server_rev}, the cache at rev {after}")
                return None
            known = self._known
            if known is not None and known[0] == after and known[1] != (None if base is None else base[0]):
                self._resync(f"history changed at rev {after} (audit row {base!r}, not {known[1]!r})")
                return None
            write_id = base[2] if base is not None and base[1] == after else ""
            if cache.write_id is not None and write_id != cache.write_id:
                # Audit row ids and revisions come back with a restore; a write id does not.
                self._resync(f"history changed at rev {after} (write {write_id!r}, not {cache.write_id!r})")
                return None
            if not self._apply_changes(read):
                return None
            if len(read.changes) < CHANGES_PER_READ or cache.rev >= server_rev:
                break
        if cache.rev < server_rev:  # a revision without its audit row: a write made behind promptreg's back
            self._resync(f"registry at rev {server_rev}, its audit ends at rev {cache.rev}")
            return None
        return server_rev

    def _apply_changes(self, read: Changes) -> bool:
        """Apply the audit rows read, in order, with the rules of a change message (the write ids
        and the sha included); ``False`` when one could not apply and the state was resynced instead."""
        context = self.context
        texts = read.texts

        def fetch(name: str, number: int) -> CachedVersion | None:
            found = texts.get((name, number))
            return found if found is not None else self._fetch_one(name, number)

        head: tuple[int, int] | None = None
        for entry_id, change in read.changes:
            result = context.cache.apply(change, fetch)
            if result.action is Action.RESYNC:
                self._resync(result.reason or "resync")
                return False
            if result.action is Action.APPLIED:
                head = (change.rev, entry_id)
            if result.events:
                context.notify(list(result.events))
        if head is not None:
            # The cache holds the state at that row, reached by the audit rows that continue the
            # history it held: the safety poll and the next resync compare against it, as after a
            # full state read.
            self._loaded(*head)
        return True

    def _check_payloads(self, payloads: list[str], server_rev: int) -> None:
        """Count the payloads that could not be decoded, and report those announcing a revision the
        registry had not reached when it was read after them (PostgreSQL delivers a notification
        after its commit, so no write sent them); both were harmless (the log: first and every 100th)."""
        status = self.context.status
        for payload in payloads:
            try:
                announced = decode_payload(payload).rev
            except RegistryCorruptError as exc:
                count = status.malformed(str(exc))
                if count == 1 or count % 100 == 0:
                    logger.warning("promptreg: ignored a malformed change notification (%d so far): %s", count, exc)
                continue
            if announced <= server_rev:
                continue
            self._unfounded += 1
            if self._unfounded == 1 or self._unfounded % 100 == 0:
                text = (
                    f"ignored {self._unfounded} notification(s) on {self.registry.channel} announcing a write the "
                    f"registry does not hold (rev {announced}, registry at rev {server_rev}): any role that can "
                    "connect may NOTIFY; the client applies only what it reads from the tables"
                )
                status.note(text)
                logger.warning("promptreg: %s", text)

    def _fetch_one(self, name: str, number: int) -> CachedVersion | None:
        with map_postgres_errors():
            return read_version(self._reader, self.registry.namespace, name, number)

    def _send_marker(self) -> None:
        """NOTIFY a fresh marker on this listener's own channel: it arrives after every notification
        of a write committed before it (PostgreSQL's queue is in commit order)."""
        self._marker = uuid.uuid4().hex  # unguessable: any role may NOTIFY on this channel too
        with map_postgres_errors():
            self._reader.execute("SELECT pg_notify(%s, %s)", (self._marker_channel, self._marker))
        if self._pong_deadline is None:  # one marker deadline at a time: it must not move
            self._pong_deadline = time.monotonic() + self.ping_timeout

    # -- safety poll and resync --------------------------------------------------------------------

    def _safety_poll(self) -> None:
        if self.holding is not None:  # the recheck reads the whole state anyway
            return
        cache = self.context.cache
        with map_postgres_errors():
            server_rev, head = read_fingerprint(self._reader, self.registry.namespace)
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

    def _fingerprint_mismatch(self, rev: int, head: Head | None) -> str | None:
        """Why the registry at ``rev`` with newest audit row ``head`` is not the cache's state, or ``None``.

        The newest row is the write that made ``rev`` (revisions are unique per namespace); its write
        id must be the cache's (a restore brings audit row ids back, not write ids)."""
        write_id = "" if head is None else head.write_id_at(rev)
        cache_write = self.context.cache.write_id
        if cache_write is not None and write_id != cache_write:
            return f"safety poll: history changed at rev {rev} (write {write_id!r}, not {cache_write!r})"
        if head is None:
            return self._history_mismatch(rev, None, None)
        return self._history_mismatch(rev, head.entry_id, (rev, head.action, head.prompt, head.label, head.version))

    def _resync(self, reason: str) -> None:
        """Read the whole state and replace the cache with it, unless the registry is empty while the
        cache holds prompts (then hold the cache)."""
        context = self.context
        cache = context.cache
        with map_postgres_errors():
            state = read_state(self._reader, self.registry.namespace, cache, self._anchor)
        problem = empty_registry(state.rev, state.pointers, cache)
        if problem is not None:
            self._hold(problem)
            self._recheck_at = time.monotonic() + HOLD_RECHECK
            return
        if state.same_history:  # the same history, grown: versions cached are still the registry's
            for (name, _number), version in state.versions.items():
                cache.add_version(name, version)
            events = cache.replace(state.rev, state.pointers)
        else:  # another history (restore) or unknown: a version number may be another text (pinned ones too)
            events = cache.replace(state.rev, state.pointers, versions=state.versions)
        self._loaded(state.rev, None if state.head is None else state.head.entry_id)
        self._trusted()
        context.status.resynced()
        context.status.live()
        logger.debug("promptreg: resynced to rev %d (%s)", state.rev, reason)
        self._send_marker()
        if events:
            context.notify(events)
