"""Change feeds: what keeps a :class:`~client.cache.Cache` equal to the registry.

:class:`RedisFeed` is the client's own listener loop on a named daemon thread (DESIGN.md section 3):

1. SUBSCRIBE and wait for the server's confirmation; only then read the state in one transaction,
   so no write can fall between the snapshot and the subscription. Messages that arrived meanwhile
   are applied only if newer than the snapshot.
2. A message applies only if its ``rev`` is the cache's plus one; a gap or a revision going back
   makes a full resync.
3. Every (re)subscription is a gap: full resync. When the channel is quiet, a safety poll compares
   ``{ns}:rev`` with the cache and a PING on the subscriber connection must be answered in time, or
   the connection is treated as dead (half-open sockets).
4. The loop never dies: any error is logged, reported through the status, and followed by a
   reconnect after an exponential backoff with jitter. Lookups keep serving the last state.

:class:`FileFeed` watches a ``file://`` registry's stat and reloads it whole when it changes.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from client.cache import Action, Cache, ChangeEvent
from client.redis_state import fetch_versions, read_rev, read_state
from client.status import StatusTracker
from registry.errors import RegistryCorruptError
from registry.events import decode
from registry.file_store import JsonFilePromptRegistry
from registry.models import PromptVersion
from registry.redis_store import RedisPromptRegistry

logger = logging.getLogger("promptreg.client")

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for the server to confirm SUBSCRIBE."""
CATCH_UP_TIMEOUT = 0.5
"""Seconds the safety poll lets in-flight messages arrive before it declares the cache behind."""


@dataclass(frozen=True, slots=True)
class FeedContext:
    """What a feed updates: the cache, the status, and two hooks of the client.

    ``notify`` receives the events of each applied change (called on the feed thread, no lock
    held); ``idle`` is called often from the feed thread (the client writes its snapshot there).
    """

    cache: Cache
    status: StatusTracker
    notify: Callable[[list[ChangeEvent]], None]
    idle: Callable[[], None]


class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random."""

    def __init__(self, base: float = 0.1, cap: float = 5.0) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; grows with each call until :meth:`reset`."""
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures = min(self.failures + 1, 30)
        return float(delay / 2 + random.uniform(0, delay / 2))

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
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the listener thread (daemon, named ``promptreg-<kind>-<name>``)."""
        self._thread = threading.Thread(target=self._run, name=f"promptreg-{self.kind}-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop and wait for it up to ``timeout`` seconds."""
        self._stop.set()
        self._interrupt()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def close(self) -> None:
        """Release connections (after :meth:`stop`)."""

    def fetch_version(self, name: str, number: int) -> PromptVersion:
        """Read one version from the registry (for pinned lookups not cached).

        Raises :class:`~registry.PromptNotFoundError`, :class:`~registry.VersionNotFoundError` or
        :class:`~registry.RegistryUnavailableError`.
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
            self._stop.wait(backoff.next_delay())

    def _run_once(self, backoff: Backoff) -> None:
        raise NotImplementedError


class RedisFeed(Feed):
    """The Redis pub/sub listener (module docstring has the algorithm)."""

    kind = "redis"

    def __init__(
        self, registry: RedisPromptRegistry, url: str, context: FeedContext, *, poll_interval: float = 30.0
    ) -> None:
        super().__init__(context, registry.keys.namespace)
        self.registry = registry
        self.keys = registry.keys
        self._url = url
        self.poll_interval = poll_interval
        self.ping_timeout = max(1.0, min(10.0, poll_interval))
        # The subscriber connection never reconnects by itself (retries=0): every reconnect must go
        # through this loop, because every reconnect needs a resync. RESP2: redis-py 8's RESP3 push
        # path formats every message for a debug log line, ~12 us of CPU per message here.
        self._subscriber = redis.Redis.from_url(
            url, retry=Retry(NoBackoff(), 0), socket_timeout=10.0, socket_connect_timeout=5.0, protocol=2
        )
        self._pubsub: Any = None

    def forked(self, context: FeedContext) -> RedisFeed:
        """A new feed with new connections for a forked child."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            # redis-py only closes the child's copy of the descriptor (no shutdown() in another
            # process), so the parent's subscription is untouched.
            pubsub.connection.disconnect()
        return RedisFeed(self.registry, self._url, context, poll_interval=self.poll_interval)

    def fetch_version(self, name: str, number: int) -> PromptVersion:
        """Read one version through the registry (typed errors, connection errors translated)."""
        return self.registry.get_version(name, version=number)

    def close(self) -> None:
        """Close the subscriber connection pool (the registry's own pool is closed by its owner)."""
        self._subscriber.close()

    def _interrupt(self) -> None:
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            try:
                pubsub.connection.disconnect()
            except Exception:  # best effort: the thread also checks the stop flag each second
                logger.debug("promptreg: error interrupting the listener", exc_info=True)

    def _run_once(self, backoff: Backoff) -> None:
        pubsub: Any = self._subscriber.pubsub(ignore_subscribe_messages=False)  # type: ignore[no-untyped-call]
        self._pubsub = pubsub
        try:
            pubsub.subscribe(self.keys.channel)
            self._await_subscription(pubsub)
            self._resync("subscribed")
            if backoff.failures:
                logger.info(
                    "promptreg redis %s: reconnected and resynced at rev %d", self._name, self.context.cache.rev
                )
            backoff.reset()
            self.first_attempt.set()
            self._listen(pubsub)
        finally:
            self._pubsub = None
            pubsub.close()

    def _await_subscription(self, pubsub: Any) -> None:
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SUBSCRIBE confirmation from redis")
            message = pubsub.get_message(timeout=min(remaining, 1.0))
            if message is not None and message["type"] == "subscribe":
                return

    def _listen(self, pubsub: Any) -> None:
        idle = self.context.idle
        next_poll = time.monotonic() + self.poll_interval
        pong_deadline: float | None = None
        while not self._stop.is_set():
            now = time.monotonic()
            message = pubsub.get_message(timeout=max(0.0, min(1.0, next_poll - now)))
            if message is not None:
                pong_deadline = None  # any data proves the connection alive
                self._handle(message)
            idle()
            now = time.monotonic()
            if pong_deadline is not None and now > pong_deadline:
                raise TimeoutError(f"no PONG on the subscriber connection within {self.ping_timeout:g} s")
            if message is None and now >= next_poll:
                if self._safety_poll(pubsub):
                    pong_deadline = None
                if pong_deadline is None:  # one PING at a time: its deadline must not move
                    pubsub.ping()
                    pong_deadline = now + self.ping_timeout
                next_poll = now + self.poll_interval

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "message":
            self._on_change_message(message["data"])
        elif kind == "subscribe":  # a reconnect we did not see: the gap must be closed
            self._resync("resubscribed")
        elif kind == "unsubscribe":
            raise ConnectionError("the server ended the subscription")

    def _on_change_message(self, data: bytes) -> None:
        try:
            change = decode(data)
        except RegistryCorruptError as exc:
            count = self.context.status.malformed(str(exc))
            if count == 1 or count % 100 == 0:  # bounded log volume under a flood; status has the count
                logger.warning("promptreg: ignored a malformed change message (%d so far): %s", count, exc)
            return
        result = self.context.cache.apply(change, self._fetch_one)
        if result.action is Action.RESYNC:
            self._resync(result.reason or "resync")
        elif result.events:
            self.context.notify(list(result.events))

    def _fetch_one(self, name: str, number: int) -> PromptVersion | None:
        return fetch_versions(self.registry.redis, self.keys, [(name, number)])[name, number]

    def _safety_poll(self, pubsub: Any) -> bool:
        """Compare the registry's revision with the cache's; resync if they differ.

        Returns whether the subscriber connection delivered anything meanwhile (proof of life).
        """
        cache = self.context.cache
        server_rev = read_rev(self.registry.redis, self.keys)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        heard = False
        # Messages published before the GET may still be on their way on the other connection.
        while cache.rev < server_rev and time.monotonic() < deadline and not self._stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message is not None:
                heard = True
                self._handle(message)
        if cache.rev != server_rev and not self._stop.is_set():
            self._resync(f"safety poll: registry at rev {server_rev}, cache at rev {cache.rev}")
        return heard

    def _resync(self, reason: str) -> None:
        """Read the whole state (one consistent cut) and replace the cache with it."""
        context = self.context
        cache = context.cache
        client = self.registry.redis
        rev, pointers = read_state(client, self.keys, cache.pointers)
        missing = cache.missing_versions(pointers)
        if missing:
            for (name, _number), version in fetch_versions(client, self.keys, missing).items():
                if version is not None:
                    cache.add_version(name, version)
        events = cache.replace(rev, pointers)
        context.status.resynced()
        context.status.live()
        logger.debug("promptreg: resynced to rev %d (%s)", rev, reason)
        if events:
            context.notify(events)


class FileFeed(Feed):
    """Watches a ``file://`` registry: stat every ``interval`` seconds, reload the whole file on change."""

    kind = "file"

    def __init__(self, registry: JsonFilePromptRegistry, context: FeedContext, *, interval: float = 0.2) -> None:
        super().__init__(context, registry.path.name)
        self.registry = registry
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None

    def forked(self, context: FeedContext) -> FileFeed:
        """A new watcher for a forked child."""
        return FileFeed(self.registry, context, interval=self.interval)

    def fetch_version(self, name: str, number: int) -> PromptVersion:
        """Read one version from the file."""
        return self.registry.get_version(name, version=number)

    def _signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.registry.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _run_once(self, backoff: Backoff) -> None:
        while not self._stop.is_set():
            signature = self._signature()
            if signature != self._seen:
                self._reload()
                self._seen = signature
                backoff.reset()
            self.first_attempt.set()
            self.context.idle()
            self._stop.wait(self.interval)

    def _reload(self) -> None:
        state = self.registry.load_state()
        cache = self.context.cache
        pointers: dict[str, dict[str, int]] = {}
        for name, prompt in state.prompts.items():
            labels = dict(prompt.labels)
            if prompt.versions:
                labels["latest"] = prompt.versions[-1].version
            for number in set(labels.values()):
                found = prompt.get_version_by_number(number)
                if found is not None:
                    cache.add_version(name, found)
            pointers[name] = labels
        events = cache.replace(state.rev, pointers)
        self.context.status.resynced()
        self.context.status.live()
        if events:
            self.context.notify(events)
