"""Whether the Redis server the client reads can be trusted as current: ``ROLE``, and on Sentinel what
the sentinels say.

A replica keeps answering reads when its link to the primary is down (``replica-serve-stale-data``,
on by default) and during its first sync it holds nothing yet; a primary that is still reading its
AOF answers ``LOADING``. A client on such a server would serve a state the registry does not hold,
so the feed holds its cache instead (status ``stale``) and rechecks.

``ROLE`` is one cheap command. A connection whose ACL user may not run it (``NOPERM``), or a server
where it is renamed away, is not an error: the check is skipped for good and the client works as
before (it then cannot tell a cut-off replica from a primary; the README says so).

On Sentinel, ``ROLE`` is not enough: after a graceful ``SENTINEL FAILOVER`` the old primary stays up
and answers ``master`` until Sentinel turns it into a replica (about 10 s later), while the new
primary takes the writes; a subscription on it hears none of them. So :class:`TrustCheck` also asks
the sentinels (:class:`~promptreg.registry.redis.sentinel.SentinelView`): a node they no longer name as the primary
is left (:class:`NotThePrimary`, the listener subscribes again through Sentinel), and while they are
failing the primary over (or see it down) the cache is held. :class:`SentinelWatch` makes that
prompt: a thread subscribed to one sentinel's failover events, which tells the listener when the
sentinels' answer changed. Nothing of this is on the lookup path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from redis.exceptions import BusyLoadingError, NoPermissionError, ResponseError

from promptreg.client.feeds import Backoff
from promptreg.registry.redis.sentinel import SentinelService

logger = logging.getLogger("promptreg.client")

SENTINEL_EVENTS = (
    "+try-failover",  # the leader starts a failover: the primary is in question
    "+failover-state-reconf-slaves",  # the leader promoted a replica: the new primary is known
    "+switch-master",  # each sentinel, once it adopted the new primary
    "+failover-end",
    "+failover-end-for-timeout",
    "+sdown",  # a sentinel sees the primary down: with a quorum of them, it is (replicas of it are cut off)
    "+odown",
    "-odown",
)
"""The sentinel events (pub/sub channels of a sentinel) after which the client asks the sentinels again."""
FOLLOW_UPS = (0.25, 0.5, 0.75, 1.0)
"""Seconds after an event at which the sentinels are asked again: they learn from each other (a
failover within ~0.1 s, a primary down within a second), and only one of them is watched."""
WATCH_PING = 5.0
"""Seconds of silence on the sentinel subscription before a PING, and for its PONG to come back: a
sentinel that stopped answering is left for the next one within twice this."""


class NotThePrimary(redis.ConnectionError):
    """The node the listener is subscribed to is not where Sentinel says it should be: subscribe again."""


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RoleCheck:
    """Asks the server for its ``ROLE``; remembers when it may not."""

    def __init__(self) -> None:
        self.supported = True
        """``False`` once the server refused ``ROLE`` (ACL ``NOPERM`` or unknown command)."""
        self.primary: bool | None = None
        """Whether the last :meth:`problem` found a primary (``None``: not read, not allowed, or loading)."""

    def problem(self, client: redis.Redis) -> str | None:
        """Why the server cannot be trusted as current right now, or ``None``.

        Raises redis-py connection errors (the feed treats them as an outage).
        """
        self.primary = None
        if not self.supported:
            return None
        try:
            role: Any = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except BusyLoadingError:
            return "redis is loading its dataset (LOADING): serving the last state"
        except NoPermissionError as exc:
            self._unsupported(exc)
            return None
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self._unsupported(exc)
            return None
        if not role or _text(role[0]) != "slave":
            self.primary = True  # a primary (or a sentinel, which the client does not talk to)
            return None
        self.primary = False
        host, port, state = _text(role[1]), role[2], _text(role[3])
        if state != "connected":
            return f"replica of {host}:{port} not in sync with its primary (link {state!r}): serving the last state"
        return None

    def _unsupported(self, exc: Exception) -> None:
        self.supported = False
        logger.info("promptreg: ROLE is not allowed on this connection (%s); the replica check is skipped", exc)


class TrustCheck:
    """``ROLE`` of the node the listener reads, and on Sentinel the sentinels' view of the primary."""

    def __init__(self, sentinels: SentinelService | None) -> None:
        self.role = RoleCheck()
        self.sentinels = sentinels
        self.seen: tuple[tuple[str, int] | None, bool] | None = None
        """The :attr:`~promptreg.registry.redis.sentinel.SentinelView.key` the last check acted on (``None``: the
        sentinels did not answer)."""
        self.checked = False
        """Whether :meth:`problem` ran since the listener last (re)subscribed (it resets this)."""

    def problem(self, client: redis.Redis, node: tuple[str, int] | None) -> str | None:
        """Why the cache must be held rather than replaced by what ``client`` (on ``node``) holds, or ``None``.

        Raises :class:`NotThePrimary` when ``node`` is a primary the sentinels no longer name (or,
        for a client following the primary, not the one they name), and redis-py connection errors.
        """
        problem = self.role.problem(client)
        if self.sentinels is None:
            return problem
        view = self.sentinels.view()
        self.checked = True
        if view.answered == 0:  # no sentinel answers: ROLE alone decides, as without Sentinel
            self.seen = None
            return problem
        self.seen = view.key
        if view.primary is None:
            return problem or f"{view.unsettled}: serving the last state"
        primary = self.role.primary
        here = "an unknown node" if node is None else f"{node[0]}:{node[1]}"
        named = f"{view.primary[0]}:{view.primary[1]}"
        if self.sentinels.primary and (node != view.primary or primary is False):
            raise NotThePrimary(f"subscribed to {here}, but the sentinels name {named} as the primary")
        if not self.sentinels.primary and primary and node != view.primary:
            raise NotThePrimary(f"subscribed to {here}, a primary the sentinels no longer name (now {named})")
        return problem


class SentinelWatch:
    """Subscribed to one sentinel's :data:`SENTINEL_EVENTS` (the next sentinel when it fails) on a daemon
    thread of its own; calls ``changed(event)`` after each event about the service, and after each
    (re)subscription (events may have been missed meanwhile). Never raises into the caller."""

    def __init__(self, sentinels: SentinelService, changed: Callable[[str], None], name: str) -> None:
        self.sentinels = sentinels
        self.changed = changed
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None
        self._index = 0

    def start(self) -> None:
        """Start the thread (daemon, named ``promptreg-sentinel-<name>``)."""
        self._thread = threading.Thread(target=self._run, name=f"promptreg-sentinel-{self._name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and wait for it up to ``timeout`` seconds."""
        self._stop.set()
        self.abandon()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def abandon(self) -> None:
        """Drop the subscription's connection (in a forked child: only the child's copy of it)."""
        pubsub = self._pubsub
        if pubsub is not None and pubsub.connection is not None:
            try:
                pubsub.connection.disconnect()
            except Exception:  # best effort: the thread also checks the stop flag each second
                logger.debug("promptreg: error closing the sentinel subscription", exc_info=True)

    def _run(self) -> None:
        backoff = Backoff()
        while not self._stop.is_set():
            try:
                self._watch(backoff)
            except ResponseError as exc:  # e.g. an ACL user that may not subscribe: the safety poll still asks
                if self._stop.is_set():
                    break
                logger.info("promptreg: not watching the sentinels' failover events (%s)", exc)
                return
            except Exception as exc:  # the watch never dies: next sentinel, after a backoff
                if self._stop.is_set():
                    break
                logger.debug("promptreg: sentinel watch: %s; trying the next sentinel", exc)
                self._index += 1
            self._stop.wait(backoff.next_delay())

    def _watch(self, backoff: Backoff) -> None:
        client = self.sentinels.client(self._index)
        pubsub: Any = client.pubsub(ignore_subscribe_messages=False)
        self._pubsub = pubsub
        try:
            pubsub.subscribe(*SENTINEL_EVENTS)
            deadline = time.monotonic() + WATCH_PING
            while pubsub.get_message(timeout=1.0) is None:
                if self._stop.is_set():
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("no SUBSCRIBE confirmation from the sentinel")
            backoff.reset()
            self._report("subscribed to the sentinel's events")
            self._listen(pubsub)
        finally:
            self._pubsub = None
            pubsub.close()
            client.close()

    def _listen(self, pubsub: Any) -> None:
        quiet_since = time.monotonic()
        pong_deadline: float | None = None
        follow_ups: list[tuple[float, str]] = []
        while not self._stop.is_set():
            timeout = 1.0 if not follow_ups else max(0.0, min(1.0, follow_ups[0][0] - time.monotonic()))
            message = pubsub.get_message(timeout=timeout)
            now = time.monotonic()
            if follow_ups and now >= follow_ups[0][0]:
                self._report(follow_ups.pop(0)[1])
            if message is not None:
                quiet_since, pong_deadline = now, None
                if message["type"] == "message" and self._concerns(_text(message["data"])):
                    event = f"{_text(message['channel'])} {_text(message['data'])}"
                    self._report(event)
                    follow_ups = [(now + delay, f"{event} (+{delay:g} s)") for delay in FOLLOW_UPS]
            elif pong_deadline is not None and now > pong_deadline:
                raise TimeoutError(f"no PONG from the sentinel within {WATCH_PING:g} s")
            elif pong_deadline is None and now - quiet_since > WATCH_PING:
                pubsub.ping()
                pong_deadline = now + WATCH_PING

    def _concerns(self, data: str) -> bool:
        # "+switch-master <name> ...", "master <name> <ip> <port> ...": the name is among the first two words.
        return self.sentinels.service in data.split()[:2]

    def _report(self, event: str) -> None:
        host, port = self.sentinels.addresses[self._index % len(self.sentinels.addresses)]
        try:
            self.changed(f"sentinel {host}:{port}: {event}")
        except Exception:  # never let the feed's reaction end the watch
            logger.exception("promptreg: error handling a sentinel event")
