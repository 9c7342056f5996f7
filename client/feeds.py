"""Change feeds: what keeps a :class:`~promptreg.client.cache.Cache` equal to the registry.

:class:`Feed` is the loop every feed runs on its own named daemon thread: it never dies, reports
failures through the status and retries after a :class:`Backoff` with full jitter, capped at
:data:`RECONNECT_CAP`. A feed *holds* the cache (keeps serving it, status ``stale``) while the registry
answers but cannot be trusted: empty, still loading, a replica cut off from its primary.
:class:`PushFeed` adds the loop of a feed told about every write by a message;
:class:`~promptreg.client.redis.feed.RedisFeed` and :class:`~promptreg.client.postgres.feed.PostgresFeed`
are its two listeners (each module has its algorithm). :class:`~promptreg.client.file_feed.FileFeed`
watches a ``file://`` registry's stat and reloads it whole when it changes.
"""

from __future__ import annotations

import gc
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from promptreg.client.cache import Action, Cache, ChangeEvent, Pointers, diff_pointers
from promptreg.client.cached_version import CachedVersion
from promptreg.client.pointers import Rollouts, diff_rollouts
from promptreg.client.status import StatusTracker
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.wire import ChangeMessage

logger = logging.getLogger("promptreg.client")

EntryId = TypeVar("EntryId")
"""The type of a store's audit-entry ids (Redis stream ids are bytes, PostgreSQL row ids int)."""

RECONNECT_BASE = 0.05
"""Seconds: the first retry waits up to this long (full jitter: anywhere between 0 and it)."""
RECONNECT_CAP = 0.8
"""Seconds: no retry waits longer, so a client serves the registry again within about this long
after it is back (plus one state read). While the registry is down each client tries on average
every ``RECONNECT_CAP / 2`` seconds: 2.5 connection attempts per second per client."""


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What a feed updates: the cache, the status, and hooks of the client.

    ``notify`` receives the events of each applied change (called on the feed thread, no lock
    held); ``idle`` is called often from the feed thread (the client writes its snapshot there);
    ``listening`` says whether anyone takes events: after a full state is swapped in, the
    difference with the old one is computed only then (at 100k prompts it costs more than the swap).
    """

    cache: Cache
    status: StatusTracker
    notify: Callable[[list[ChangeEvent]], None]
    idle: Callable[[], None]
    listening: Callable[[], bool] = lambda: True


_listener = threading.local()
"""On a thread running a push feed's listen loop: ``deadline``, the time by which a callee asked for
the feed's ``idle`` hook to run again (``math.inf``: none asked); ``None`` on any other thread."""


def call_idle_by(deadline: float) -> bool:
    """On a push feed's listener thread (inside its ``idle`` hook, or anything else the listener
    runs): have the listener call the hook again by ``deadline`` (``time.monotonic()``) even if no
    message comes (its next wait ends then). Returns ``False`` on any other thread, where nobody
    would: the caller arranges its own wake-up.

    For work the listener does itself a little later, without another thread woken for it: the
    fleet acknowledgement at the end of a coalescing window (:mod:`promptreg.client.presence`).
    """
    asked = getattr(_listener, "deadline", None)
    if asked is None:
        return False
    if deadline < asked:
        _listener.deadline = deadline
    return True


class Backoff:
    """Exponential backoff with full jitter: a uniform delay between 0 and ``base * 2**failures``,
    capped at ``cap``. Full jitter spreads a fleet's reconnects over the whole window, so clients
    cut off together do not come back together."""

    def __init__(self, base: float = RECONNECT_BASE, cap: float = RECONNECT_CAP) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; its ceiling grows with each call until :meth:`reset`."""
        ceiling = min(self.cap, self.base * 2**self.failures)
        self.failures = min(self.failures + 1, 30)
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        """After a success: start again from ``base``."""
        self.failures = 0


class Feed:
    """A background thread that keeps the cache current; subclasses implement :meth:`_run_once`."""

    kind = "feed"

    def __init__(self, context: FeedContext, name: str) -> None:
        self.context = context
        self.first_attempt = threading.Event()
        """Set once the first attempt to load the state finished, successfully or not."""
        self._name = name
        self._stop = threading.Event()
        self._retry = threading.Event()  # ends the backoff wait early: stop(), retry_now()
        self._thread: threading.Thread | None = None
        self.holding: str | None = None
        """Why the registry is not trusted right now (the cache is held), or ``None``."""

    def start(self) -> None:
        """Start the listener thread (daemon, named ``promptreg-<kind>-<name>``)."""
        self._thread = threading.Thread(target=self._run, name=f"promptreg-{self.kind}-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it up to ``timeout`` seconds."""
        self._stop.set()
        self._retry.set()
        self._interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        """Release connections (after :meth:`stop`)."""

    def retry_now(self) -> None:
        """If the thread waits before its next attempt, make it try now (a hint that the attempt
        would succeed now, e.g. Sentinel named a new primary); otherwise the next wait is skipped."""
        self._retry.set()

    def fetch_version(self, name: str, number: int) -> CachedVersion:
        """Read one version from the registry (for pinned lookups not cached).

        Raises :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.VersionNotFoundError` or
        :class:`~promptreg.RegistryUnavailableError`.
        """
        raise NotImplementedError

    def forked(self, context: FeedContext) -> Feed:
        """A new, unstarted feed for a forked child (the parent's sockets are left to the parent)."""
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake the thread if it blocks on I/O."""

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            self._retry.clear()  # a hint from now on ends the wait after this attempt
            if self._stop.is_set():  # stop() may have set it just before the clear
                break
            try:
                self._run_once(backoff)
            except Exception as exc:  # the loop never dies: report, back off, try again
                if self._stop.is_set():
                    break
                self.context.status.error(exc)
                # One warning per outage, not one per retry; every retry is at debug level.
                level = logging.WARNING if backoff.failures == 0 else logging.DEBUG
                logger.log(level, "promptreg %s %s: %s; serving the last known state, retrying with backoff",
                           self.kind, self._name, exc)  # fmt: skip
            finally:
                self.first_attempt.set()
            self._retry.wait(backoff.next_delay())

    def _run_once(self, backoff: Backoff) -> None:
        raise NotImplementedError

    def _hold(self, reason: str) -> None:
        """Keep serving the cache, say ``stale`` (or stay ``initializing``) with ``reason``."""
        changed = self.holding != reason
        self.holding = reason
        self.context.cache.hold()
        self.context.status.stale(reason)
        if changed:
            logger.warning("promptreg %s %s: %s", self.kind, self._name, reason)

    def _replaced(self, before: Pointers, before_rollouts: Rollouts | None = None) -> None:
        """After a full state replaced ``before`` (and the rollouts ``before_rollouts``): notify what
        changed, if anyone listens.

        Asked after the swap, so a callback registered before the new state was visible gets it.
        """
        context = self.context
        if context.listening():
            cache = context.cache
            events = diff_pointers(before, cache.pointers, cache.rev)
            if before_rollouts is not None:
                events += diff_rollouts(before_rollouts, cache.rollouts, cache.pointers, cache.rev, events)
            if events:
                context.notify(events)

    def _trusted(self) -> None:
        """The registry's state was just taken: end any hold."""
        if self.holding is not None:
            logger.info("promptreg %s %s: the registry is trusted again", self.kind, self._name)
            self.holding = None


class PushFeed(Feed, Generic[EntryId]):
    """A feed told about every write by a message (Redis pub/sub, PostgreSQL NOTIFY): the rules for
    one message, and for telling whether the registry's history is still the one the cache holds,
    are the same on every store, here once. ``EntryId`` is the store's audit-entry id type."""

    wait_step = 1.0
    """The longest single wait for a message: how often the loop checks the stop flag and its clocks."""
    silence = "the listener connection did not answer"
    """What a connection that stayed silent past ``ping_timeout`` after a ping is called in the error."""

    def __init__(self, context: FeedContext, name: str, *, poll_interval: float = 30.0) -> None:
        super().__init__(context, name)
        self.poll_interval = poll_interval
        self.ping_timeout = max(1.0, min(10.0, poll_interval))
        self._pong_deadline: float | None = None
        """When the answer to the last ping (PING, a NOTIFY marker) is overdue; ``None``: none pending."""
        self._recheck_at = 0.0
        """While the cache is held: when to read the registry's state again."""
        # The fingerprint the cache is known to match: (rev, newest audit entry id). None after a
        # message was applied (its entry id is not in the message): the next poll confirms the
        # newest entry against ``_last_applied`` instead.
        self._known: tuple[int, EntryId | None] | None = None
        self._last_applied: ChangeMessage | None = None
        # The newest audit entry of a state the cache was confirmed to hold: while it is still
        # there, the registry's history only grew and the versions cached are still valid.
        self._anchor: EntryId | None = None
        self._fetch = self._fetch_one  # bound once, not once per message (_on_message)
        context.cache.fetch_partial = self._fetch  # a partial included at a version no label points at

    def _loaded(self, rev: int, head_id: EntryId | None) -> None:
        """A full state at ``rev`` whose newest audit entry is ``head_id`` replaced the cache."""
        self._known = (rev, head_id)
        self._anchor = head_id
        self._last_applied = None

    def _history_mismatch(self, rev: int, head_id: EntryId | None, head_write: tuple[object, ...] | None) -> str | None:
        """Why the registry at ``rev``, whose newest audit entry ``head_id`` records ``head_write``
        (``(rev, action, prompt, label, version)``), is not the cache's state; ``None`` if it is."""
        known = self._known
        if known is not None and known[0] == rev:
            if known[1] == head_id:
                return None
            return f"safety poll: history changed at rev {rev} (audit head {head_id!r}, not {known[1]!r})"
        applied = self._last_applied
        if applied is not None and head_write == (
            applied.rev, applied.op, applied.prompt, applied.label, applied.version
        ):  # fmt: skip
            self._known = (rev, head_id)  # the newest entry is the write the cache applied last
            self._anchor = head_id
            return None
        return f"safety poll: the audit head {head_id!r} at rev {rev} is not the last change applied"

    def _on_message(self, data: Any, decode: Callable[[Any], ChangeMessage], what: str) -> None:
        """Decode one change message (``decode(data)``: no closure built per message) and apply it,
        resync on a gap or a step back, or count it as malformed (logged at the first and every
        100th, so a flood cannot flood the log)."""
        try:
            change = decode(data)
        except RegistryCorruptError as exc:
            count = self.context.status.malformed(str(exc))
            if count == 1 or count % 100 == 0:
                logger.warning("promptreg: ignored a malformed change %s (%d so far): %s", what, count, exc)
            return
        result = self.context.cache.apply(change, self._fetch)
        if result.action is Action.RESYNC:
            self._resync(result.reason or "resync")
            return
        if result.action is Action.APPLIED:
            self._applied(change)
        if result.events:
            self.context.notify(list(result.events))

    def _listen(self) -> None:
        """The loop every push feed runs once subscribed, until stopped or its connection fails:
        deliver what arrives (:meth:`_receive`), call the ``idle`` hook after each wait (again by the
        time it asked for, :func:`call_idle_by`), re-read a held registry when its recheck is due, and
        after ``poll_interval`` without a message run the safety poll and ping the connection
        (:meth:`_quiet`); a ping unanswered for ``ping_timeout`` is a dead connection (raises)."""
        idle, local = self.context.idle, _listener
        self._pong_deadline = None  # a new connection: no ping pending on it
        next_poll = time.monotonic() + self.poll_interval
        local.deadline = math.inf  # from now on call_idle_by() is honoured on this thread
        try:
            self._listen_on(idle, local, next_poll)
        finally:
            local.deadline = None

    def _listen_on(self, idle: Callable[[], None], local: threading.local, next_poll: float) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            wake = next_poll if self.holding is None else min(next_poll, self._recheck_at)
            again, local.deadline = local.deadline, math.inf  # asked for since the last wait
            heard = self._receive(max(0.0, min(self.wait_step, wake - now, again - now)))
            if heard:
                self._pong_deadline = None  # any data proves the connection alive
            idle()
            now = time.monotonic()
            if self._pong_deadline is not None and now > self._pong_deadline:
                raise TimeoutError(f"{self.silence} within {self.ping_timeout:g} s")
            if self.holding is not None and now >= self._recheck_at:
                self._resync(f"recheck: {self.holding}")
            if not heard and now >= next_poll:
                self._quiet()
                next_poll = time.monotonic() + self.poll_interval

    def _receive(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for messages and handle them; whether any came."""
        raise NotImplementedError

    def _quiet(self) -> None:
        """No message for ``poll_interval``: run the safety poll, then ping the connection (setting
        ``_pong_deadline`` unless a ping is already pending)."""
        raise NotImplementedError

    def _fetch_one(self, name: str, number: int) -> CachedVersion | None:
        """One version from the store (``None``: it does not exist); errors propagate."""
        raise NotImplementedError

    def _resync(self, reason: str) -> None:
        """Read the whole state and replace the cache (or hold it)."""
        raise NotImplementedError

    def _applied(self, change: ChangeMessage) -> None:
        """``change`` was applied: the safety poll confirms the store's newest write against it."""
        self._known = None
        self._last_applied = change


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a full state is read and built; then one
    collection of the young generations.

    A full state allocates about three tracked objects per version and frees none of them: with the
    collector on, each 25% of heap growth triggers a full collection that traverses every object of
    the process again (measured: about half of a 100k-prompt start-up, 10 collections). Reference
    counting goes on meanwhile; only cycles wait, for the length of the read. When the collector
    was off already (the application's choice) nothing changes; it is switched back on only if this
    switched it off.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect(1)  # the new objects move to the old generation once, here, not in an application thread


def empty_registry(rev: int, pointers: dict[str, dict[str, int]], cache: Cache) -> str | None:
    """Why a state read from the registry must not replace the cache, or ``None`` to take it.

    An empty registry (no revision, no prompt) never replaces a non-empty cache: it is an outage
    (restart without data, a wiped node, a FLUSHALL), not a state anyone published.
    """
    if (rev == 0 or not pointers) and cache.pointers:
        return f"the registry is empty (rev {rev}, {len(pointers)} prompts): serving the last state (rev {cache.rev})"
    return None
