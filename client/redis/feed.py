"""The Redis listener: the client's own loop on a named daemon thread (DESIGN.md section 3).

1. SUBSCRIBE and wait for the server's confirmation; only then read the state in one transaction,
   so no write can fall between the state and the subscription. Then a PING with a marker on the
   subscriber connection: the messages that arrive before its PONG were published before the read
   and are already in the state (ignored when at or below its revision).
2. After that drain, a message applies only if its ``rev`` is the cache's plus one; a gap, or a
   revision at or below the cache's (the registry went back: a restore, a failover to a replica that
   was behind), makes a full resync.
3. Every (re)subscription is a gap: full resync. When the channel is quiet, a safety poll reads
   the registry's fingerprint (revision and the id of the newest ``{ns}:log`` audit entry) and
   resyncs when it is not the state the cache holds, so a restore that lands on the same revision
   number is caught too; a PING on the subscriber connection must come back in time (half-open
   sockets).
4. Before every state read, ``ROLE`` (:mod:`promptreg.client.redis.replica`): a replica cut off from its primary or
   still syncing, or a server still loading, is not trusted; nor is an empty registry when the cache
   holds a state; nor, on Sentinel, a primary while the sentinels fail it over or see it down. Then
   the cache is *held*: lookups serve it, the status says ``stale`` (or stays ``initializing``) with
   the reason, and the state is re-read every :data:`HOLD_RECHECK` seconds and on any message until
   it can be taken. A non-empty state is authoritative even at a lower revision (a restore).
4b. On Sentinel, the same check asks the sentinels which node is the primary: a subscription on a
   node they no longer name (the old primary after a graceful ``SENTINEL FAILOVER`` stays up and
   hears none of the new primary's writes) is dropped and made again through Sentinel. A thread
   subscribed to a sentinel's failover events (:class:`~promptreg.client.redis.replica.SentinelWatch`) asks again at
   each event and interrupts the listener when the answer changed; the safety poll asks too.
5. The loop never dies: errors are logged, reported through the status, and followed by a
   reconnect after a full-jitter backoff capped near 1 s.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.client.feeds import Backoff, FeedContext, PushFeed, collector_paused, empty_registry
from promptreg.client.pointers import referenced_pairs
from promptreg.client.redis.index_read import read_client_state
from promptreg.client.redis.links import CHANGES, SUBSCRIBED, UNSUBSCRIBED, FeedLinks
from promptreg.client.redis.replica import NotThePrimary, SentinelWatch, TrustCheck
from promptreg.client.redis.state import LogHead, read_fingerprint
from promptreg.client.redis.subscriber_reads import CHANGE_KINDS, SubscriberReads
from promptreg.client.redis.versions import fetch_versions
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.wire import decode

logger = logging.getLogger("promptreg.client")

SUBSCRIBE_TIMEOUT = 5.0
"""Seconds to wait for the server to confirm SUBSCRIBE."""
CATCH_UP_TIMEOUT = 0.5
"""Seconds the safety poll lets in-flight messages arrive before it declares the cache behind."""
UNMIGRATED = (
    "registry not migrated: it has no index ({ns}:ix:*, written by promptreg 0.1.0); the client reads "
    "it the slow way (O(prompts) commands in one transaction, which stalls redis at scale): "
    "run `promptreg migrate`"
)
"""The status note of a client on a registry written by 0.1.0 and not migrated yet."""
HOLD_RECHECK = 1.0
"""Seconds between re-reads of the registry while the cache is held (empty, loading, cut-off replica)."""


class RedisFeed(PushFeed[bytes]):
    """The Redis pub/sub listener (module docstring has the algorithm)."""

    kind = "redis"

    def __init__(self, registry: RedisPromptRegistry, context: FeedContext, *, poll_interval: float = 30.0) -> None:
        super().__init__(context, registry.keys.namespace, poll_interval=poll_interval)
        self.registry = registry
        self.keys = registry.keys
        # The subscriber connection never reconnects by itself (retries=0): every reconnect must go
        # through this loop, because every reconnect needs a resync. RESP2: redis-py 8's RESP3 push
        # path formats every message for a debug log line, ~12 us of CPU per message here.
        # Where it subscribes and reads (server, Sentinel primary or replica, cluster slot owner):
        self._links = FeedLinks(registry)
        self._pubsub: Any = None
        self._reads: SubscriberReads | None = None
        self._trust = TrustCheck(self._links.sentinels)
        self._trust.role.supported = not registry.cluster  # cluster nodes: routing, not ROLE, says who serves
        sentinels = self._links.sentinels
        self._watch = None if sentinels is None else SentinelWatch(sentinels, self._sentinels_changed, self._name)
        self._moved: str | None = None
        """Set by the sentinel watch before it interrupts the listener: why it must subscribe again."""
        self._marker = b""
        self._markers = 0

    def forked(self, context: FeedContext) -> RedisFeed:
        """A new feed with new connections for a forked child."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            # redis-py only closes the child's copy of the descriptor (no shutdown() in another
            # process), so the parent's subscription is untouched.
            pubsub.connection.disconnect()
        if self._watch is not None:
            self._watch.abandon()
        return RedisFeed(self.registry, context, poll_interval=self.poll_interval)

    def start(self) -> None:
        """Start the listener thread, and on Sentinel the thread watching the sentinels' events."""
        super().start()
        if self._watch is not None:
            self._watch.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the threads (each waited for up to ``timeout`` seconds)."""
        if self._watch is not None:
            self._watch.stop(timeout)
        super().stop(timeout)

    def fetch_version(self, name: str, number: int) -> CachedVersion:
        """Read one version through the registry (typed errors, connection errors translated)."""
        return cached_from_model(self.registry.get_version(name, version=number))

    def close(self) -> None:
        """Close the subscriber connection pool (the registry's own pool is closed by its owner)."""
        self._links.close()

    def _interrupt(self) -> None:
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            try:
                pubsub.connection.disconnect()
            except Exception:  # best effort: the thread also checks the stop flag each second
                logger.debug("promptreg: error interrupting the listener", exc_info=True)

    def _run_once(self, backoff: Backoff) -> None:
        self._moved = None
        self._trust.checked = False
        pubsub: Any = self._links.subscribe()
        self._pubsub = pubsub
        try:
            self._await_subscription(pubsub)
            self._reads = SubscriberReads.of(pubsub)
            self._links.subscribed(pubsub)
            self._resync("subscribed")
            if backoff.failures and self.holding is None:
                logger.info(
                    "promptreg redis %s: reconnected and resynced at rev %d", self._name, self.context.cache.rev
                )
            backoff.reset()
            self.first_attempt.set()
            self._listen()
        except Exception as exc:
            moved = self._moved
            if moved is not None and not self._stop.is_set():  # interrupted by the sentinel watch
                raise NotThePrimary(moved) from exc
            raise
        finally:
            self._pubsub = self._reads = None
            pubsub.close()

    def _await_subscription(self, pubsub: Any) -> None:
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no SUBSCRIBE confirmation from redis")
            message = pubsub.get_message(timeout=min(remaining, 1.0))
            if message is not None and message["type"] in SUBSCRIBED:
                return

    silence = "no PONG on the subscriber connection"

    def _receive(self, timeout: float) -> bool:
        reads = self._reads
        if reads is None:  # TLS, no hiredis: redis-py's own read
            message = self._pubsub.get_message(timeout=timeout)
            if message is None:
                return False
            self._handle(message)
            return True
        reader, nothing = reads.reader, reads.nothing
        reply = reader.gets()
        if reply is nothing:  # nothing parsed and waiting: one poll(), one recv()
            if not reads.wait(timeout):
                return False
            reply = reader.gets()
        while reply is not nothing:
            if type(reply) is list and reply[0] in CHANGE_KINDS:
                self._on_message(reply[2], decode, "message")
            else:
                self._other_reply(reply)
            reply = reader.gets()
        return True

    def _other_reply(self, reply: Any) -> None:
        """A reply read directly that is no change message: a PONG, a (un)subscription, an error."""
        if isinstance(reply, Exception):
            raise reply
        pubsub = self._pubsub
        if pubsub.is_health_check_response(reply):  # the answer to a PING of redis-py's own get_message
            pubsub.health_check_response_counter -= 1
            return
        message = pubsub.handle_message(reply)  # parsed as redis-py parses it
        if message is not None:
            self._handle(message)

    def _quiet(self) -> None:
        if self._safety_poll(self._pubsub):
            self._pong_deadline = None
        if self._pong_deadline is None:  # one PING at a time: its deadline must not move
            self._pubsub.ping()
            self._pong_deadline = time.monotonic() + self.ping_timeout

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind in CHANGES:
            self._on_change_message(message["data"])
        elif kind == "pong":
            if self._marker and message["data"] == self._marker:
                self.context.cache.settle()  # the backlog of the last state read is drained
        elif kind in SUBSCRIBED:  # a reconnect we did not see: the gap must be closed
            self._moved = None
            self._links.subscribed(self._pubsub)  # through Sentinel it may be another node: read there
            self._resync("resubscribed")
        elif kind in UNSUBSCRIBED:  # on a cluster: the slot moved to another node
            raise ConnectionError("the server ended the subscription")

    def _on_change_message(self, data: bytes) -> None:
        self._on_message(data, decode, "message")

    def _fetch_one(self, name: str, number: int) -> CachedVersion | None:
        return fetch_versions(self._links.reader, self.keys, [(name, number)])[name, number]

    def _safety_poll(self, pubsub: Any) -> bool:
        """Compare the registry's fingerprint with the cache's; resync if they differ.

        Returns whether the subscriber connection delivered anything meanwhile (proof of life).
        """
        if self.holding is not None:  # the recheck reads the whole state anyway
            return False
        problem = self._trust.problem(self._links.reader, self._links.node)
        if problem is not None:
            self._hold(problem)
            return False
        cache = self.context.cache
        server_rev, head = read_fingerprint(self._links.reader, self.keys)
        if self._links.slot_moved():
            raise ConnectionError("the registry's cluster slot moved to another node: subscribing there")
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        heard = False
        # Messages published before the read may still be on their way on the other connection.
        while cache.rev < server_rev and time.monotonic() < deadline and not self._stop.is_set():
            message = pubsub.get_message(timeout=0.05)
            if message is not None:
                heard = True
                self._handle(message)
        if self._stop.is_set():
            return heard
        if cache.rev != server_rev:
            self._resync(f"safety poll: registry at rev {server_rev}, cache at rev {cache.rev}")
        else:
            mismatch = self._fingerprint_mismatch(server_rev, head)
            if mismatch is not None:
                self._resync(mismatch)
        return heard

    def _fingerprint_mismatch(self, rev: int, head: LogHead | None) -> str | None:
        """Why the registry at ``rev`` with audit head ``head`` is not the cache's state, or ``None``."""
        if head is None:
            return self._history_mismatch(rev, None, None)
        cache = self.context.cache
        if (
            head.rev == rev == cache.rev
            and None not in (head.write_id, cache.write_id)
            and head.write_id != cache.write_id
        ):
            # the same revision number written by another write: a restore or a failover rewrote history
            return f"safety poll: write {head.write_id!r} at rev {rev}, the cache holds write {cache.write_id!r}"
        return self._history_mismatch(
            rev, head.entry_id, (head.rev, head.action, head.prompt, head.label, head.version)
        )

    def _resync(self, reason: str) -> None:
        """Read the whole state (one consistent cut) and replace the cache with it, unless the
        registry cannot be trusted right now (then hold the cache)."""
        context = self.context
        cache = context.cache
        client = self._links.reader
        with collector_paused():  # a full state allocates O(prompts) objects: no repeated full collections
            problem = self._trust.problem(client, self._links.node)
            if problem is None:
                try:
                    state, indexed = read_client_state(client, self.keys, cache.pointers, self._anchor, cache.subset)
                except redis.BusyLoadingError:
                    problem = "redis is loading its dataset (LOADING): serving the last state"
                else:
                    problem = empty_registry(state.rev, state.pointers, cache)
            if problem is not None:
                self._hold(problem)
                self._recheck_at = time.monotonic() + HOLD_RECHECK
                return
            before, before_rollouts = cache.pointers, cache.rollouts
            if state.anchor_found:  # the same history, grown: versions cached are still the registry's
                missing = cache.missing_versions(state.pointers)
                for (name, _number), version in fetch_versions(client, self.keys, missing).items():
                    if version is not None:
                        cache.add_version(name, version)
                cache.replace(state.rev, state.pointers, events=False)
            else:  # another history (restore, other data set) or unknown: a version number may be another text
                pairs = referenced_pairs(state.pointers)
                found = fetch_versions(client, self.keys, pairs)
                del pairs  # at 100k prompts each of these is tens of MB: keep one at a time
                if any(v is None for v in found.values()):  # deleted meanwhile: replace() says which
                    found = {pair: v for pair, v in found.items() if v is not None}
                cache.replace(state.rev, state.pointers, versions=found, events=False)  # type: ignore[arg-type]
        self._loaded(state.rev, None if state.head is None else state.head.entry_id)
        self._trusted()
        context.status.resynced()
        context.status.live()
        if not indexed and state.rev > 0 and context.status.note(UNMIGRATED):
            logger.warning("promptreg: %s", UNMIGRATED)
        logger.debug("promptreg: resynced to rev %d (%s)", state.rev, reason)
        self._mark_backlog()
        self._replaced(before, before_rollouts)

    def _sentinels_changed(self, event: str) -> None:
        """On the sentinel watch's thread, after ``event``: if the sentinels' answer is not the one the
        listener last acted on, interrupt it; it subscribes again through Sentinel and checks the node."""
        trust, sentinels = self._trust, self._links.sentinels
        if sentinels is None:
            return
        if self._pubsub is None:  # between subscriptions: try again now rather than after the backoff
            self.retry_now()
            return
        if not trust.checked:
            return  # the listener is subscribing: it asks the sentinels before it trusts the node
        view = sentinels.view()
        if view.answered == 0 or view.key == trust.seen:
            return
        said = view.unsettled if view.primary is None else f"the primary is {view.primary[0]}:{view.primary[1]}"
        self._moved = f"{event} ({said}): subscribing again through Sentinel"
        self._interrupt()  # the listener logs and reports it as the reason it reconnects

    def _mark_backlog(self) -> None:
        """PING with a fresh marker: its PONG comes after every message published before the read."""
        pubsub = self._pubsub
        if pubsub is None:
            return
        self._markers += 1
        marker = f"promptreg-drained-{self._markers}"
        self._marker = marker.encode()
        pubsub.ping(marker)
