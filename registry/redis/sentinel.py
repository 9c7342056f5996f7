"""What the sentinels of a service say about its primary, asked of all of them at once.

redis-py's ``Sentinel.discover_master`` takes the first sentinel's answer, and during a graceful
failover the leading sentinel names the old primary until the failover ends; the client's listener
(:mod:`promptreg.client.redis.replica`, :mod:`promptreg.client.redis.links`) asks every sentinel
here and lets the newest configuration epoch win. The writer (:class:`WriteRoute`) asks them before
and after every write.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from promptreg.registry.errors import RegistryUnavailableError
from promptreg.registry.redis.topology import copyable_kwargs, host_port, pinned_client

SENTINEL_OPTIONS: dict[str, Any] = {"socket_timeout": 1.0, "socket_connect_timeout": 0.5, "protocol": 2}
"""Defaults of the client's own sentinel connections (the URL's ``socket_*`` options win): a sentinel
that stopped answering must not hold the listener for long."""


class _Answer(NamedTuple):
    epoch: int
    primary: tuple[str, int]
    """What ``GET-MASTER-ADDR-BY-NAME`` names: the promoted replica once a failover got that far."""
    failing_over: bool
    """A failover under way and no replica promoted yet."""
    down: bool
    """This sentinel sees the primary down (``s_down``)."""
    odown: bool
    """This sentinel counted a quorum seeing it down (``o_down``)."""
    quorum: int


@dataclass(frozen=True, slots=True)
class SentinelView:
    """What the sentinels of a service say about its primary, all asked at once (:meth:`SentinelService.view`).

    The newest configuration epoch any of them answered with wins: a sentinel that has not heard of
    a failover yet (they learn it from each other within about 0.1 s here), or one cut off from the
    others, is outvoted by the epoch rather than by a count.
    """

    primary: tuple[str, int] | None
    """The primary the sentinels name; ``None`` when nothing is known or it is in question."""
    unsettled: str | None
    """Why the primary is in question right now (a failover under way, the primary down, sentinels
    of the newest epoch naming different nodes), or ``None``."""
    answered: int
    """How many sentinels answered (0: the sentinels say nothing; the caller decides alone)."""

    @property
    def key(self) -> tuple[tuple[str, int] | None, bool]:
        """What a listener acts on: the primary, and whether it is in question."""
        return (self.primary, self.unsettled is not None)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class SentinelService:
    """The sentinels of one service, on connections of the client's own (short timeouts, no retries).

    ``primary`` says whether the client follows the primary (``master_for``) or a replica
    (``slave_for``). Thread-safe (redis-py pools).
    """

    def __init__(self, manager: Sentinel, service: str, *, primary: bool) -> None:
        self.service = service
        self.primary = primary
        # redis-py's force_master_ip replaces the address the sentinels give: so here too.
        self._force_ip: str | None = getattr(manager, "_force_master_ip", None)
        self._options: dict[str, Any] = {
            **SENTINEL_OPTIONS,
            **{k: v for k, v in copyable_kwargs(manager.sentinel_kwargs).items() if v is not None},
            "protocol": 2,
            "retry": Retry(NoBackoff(), 0),
        }
        self.addresses: list[tuple[str, int]] = [
            (str(s.connection_pool.connection_kwargs["host"]), int(s.connection_pool.connection_kwargs["port"]))
            for s in manager.sentinels
        ]
        self._clients = [self.client(index) for index in range(len(self.addresses))]

    def client(self, index: int) -> redis.Redis:
        """A new client to sentinel ``index`` (modulo their number), e.g. for a subscription to its events."""
        host, port = self.addresses[index % len(self.addresses)]
        return redis.Redis(host=host, port=port, **self._options)

    def view(self) -> SentinelView:
        """Ask every sentinel (``SENTINEL MASTER`` and ``GET-MASTER-ADDR-BY-NAME``, one round trip each).

        A sentinel that does not answer, or does not know the service, is left out; never raises.
        """
        answers = [answer for answer in map(self._ask, self._clients) if answer is not None]
        if not answers:
            return SentinelView(None, None, 0)
        epoch = max(answer.epoch for answer in answers)
        newest = [answer for answer in answers if answer.epoch == epoch]
        named = sorted({answer.primary for answer in newest})
        if len(named) > 1:
            listed = ", ".join(host_port(*address) for address in named)
            return SentinelView(None, f"the sentinels disagree on the primary ({listed})", len(answers))
        primary = named[0]
        if any(answer.failing_over for answer in newest):
            reason = f"Sentinel is failing over the primary {host_port(*primary)}"
            return SentinelView(None, reason, len(answers))
        # Down as Sentinel's o_down defines it, counted here across the sentinels: a sentinel asks
        # the others only every second, so its own o_down can come a second after the quorum's.
        quorum = max(1, min(answer.quorum for answer in newest))
        if any(answer.odown for answer in newest) or sum(answer.down for answer in newest) >= quorum:
            return SentinelView(None, f"the sentinels see the primary {host_port(*primary)} down", len(answers))
        return SentinelView(primary, None, len(answers))

    def _ask(self, client: redis.Redis) -> _Answer | None:
        try:
            pipe: Any = client.pipeline(transaction=False)
            pipe.execute_command("SENTINEL", "MASTER", self.service)
            pipe.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            state_raw, named = pipe.execute()
            state = {_text(k): _text(v) for k, v in zip(state_raw[::2], state_raw[1::2], strict=True)}
            flags = set(state["flags"].split(","))
            primary = (self._force_ip or _text(named[0]), int(named[1]))
            current = (self._force_ip or state["ip"], int(state["port"]))
            epoch, quorum = int(state["config-epoch"]), int(state["quorum"])
        except (redis.RedisError, KeyError, ValueError, TypeError, IndexError):
            return None  # down, unreachable, refusing (ACL), or not monitoring this service
        unchanged = primary == current  # once a replica is promoted, the flags are about the old primary
        return _Answer(
            epoch,
            primary,
            failing_over=unchanged and "failover_in_progress" in flags,
            down=unchanged and "s_down" in flags,
            odown=unchanged and "o_down" in flags,
            quorum=quorum,
        )

    def close(self) -> None:
        """Close the connections to the sentinels."""
        for client in self._clients:
            client.close()


def sentinel_service(client: object) -> SentinelService | None:
    """The :class:`SentinelService` of a ``Sentinel.master_for`` / ``slave_for`` client, else ``None``."""
    pool: Any = getattr(client, "connection_pool", None)
    if not isinstance(pool, SentinelConnectionPool):
        return None
    return SentinelService(pool.sentinel_manager, pool.service_name, primary=bool(pool.is_master))


SETTLE_SECONDS = 5.0
"""How long a write waits for the sentinels to settle on a primary (a failover under way, the
primary down) before it is refused with nothing written."""


REUSE_SECONDS = 0.5
"""How long the sentinels' answer after one write (that the primary had not changed) also routes the
next write, which then asks them only after it: the after-check is what acknowledges a write."""


class WriteRoute:
    """Where a write on a Sentinel-managed registry goes, and whether it stayed there.

    redis-py's ``master_for`` keeps its connections on the node the first sentinel named when they
    opened; after a graceful ``SENTINEL FAILOVER`` that node stays a reachable master for seconds,
    and every write it takes is dropped when Sentinel turns it into a replica. So a write first asks
    every sentinel (:meth:`before`): while the primary is in question it waits (at most
    :data:`SETTLE_SECONDS`, then refuses with nothing written), and it runs on a connection to the
    node they name. After the write (:meth:`after`) it asks them again: a write is acknowledged only
    if that node is still the primary they name and no failover is under way. Two rounds of one
    pipelined request per sentinel per write, one when writes follow each other within
    :data:`REUSE_SECONDS` (the previous write's after-check then routes the next: a write sent to a
    node that stopped being the primary meanwhile is still caught by its own after-check). Lookups are
    not affected (clients read their cache). When no sentinel answers, writes go where redis-py sends
    them, as before.
    """

    def __init__(
        self, client: redis.Redis, service: SentinelService, *, settle: float = SETTLE_SECONDS,
        reuse: float = REUSE_SECONDS,
    ) -> None:  # fmt: skip
        self._client = client
        self.service = service
        self.settle = settle
        self.reuse = reuse
        self._pinned: dict[tuple[str, int], redis.Redis] = {}
        self._confirmed: tuple[tuple[str, int], float] | None = None
        """The primary the last after-check confirmed, and when."""

    def before(self) -> tuple[redis.Redis, tuple[str, int] | None]:
        """The client to write with and the primary it is pinned to (``None``: no sentinel answered)."""
        confirmed = self._confirmed
        if confirmed is not None and time.monotonic() - confirmed[1] < self.reuse:
            return self._pinned_to(confirmed[0]), confirmed[0]
        deadline = time.monotonic() + self.settle
        while True:
            view = self.service.view()
            if view.answered == 0:
                return self._client, None
            if view.primary is not None:
                return self._pinned_to(view.primary), view.primary
            if time.monotonic() >= deadline:
                raise RegistryUnavailableError(
                    f"no primary to write to for Sentinel service {self.service.service!r} after "
                    f"{self.settle:g} s: {view.unsettled}; nothing was written"
                )
            time.sleep(0.05)

    def after(self, primary: tuple[str, int] | None) -> str | None:
        """Why a write made on ``primary`` may be taken back by a failover, or ``None`` if it is not."""
        if primary is None:
            return None
        view = self.service.view()
        if view.primary == primary:
            self._confirmed = (primary, time.monotonic())
            return None
        self._confirmed = None
        if view.answered == 0:
            return "no sentinel answered after the write"
        return view.unsettled or f"the sentinels now name {host_port(*view.primary or primary)} the primary"

    def forget(self) -> None:
        """A write failed on its way (connection lost, refused): the next one asks the sentinels first."""
        self._confirmed = None

    def _pinned_to(self, address: tuple[str, int]) -> redis.Redis:
        client = self._pinned.get(address)
        if client is None:
            # No retries: a write retried after a lost reply could apply twice.
            client = self._pinned.setdefault(address, pinned_client(self._client, *address, retries=0))
        return client

    def close(self) -> None:
        """Close the connections to the sentinels and the pinned primaries."""
        self.service.close()
        for client in list(self._pinned.values()):
            client.close()


def write_route(client: object) -> WriteRoute | None:
    """The :class:`WriteRoute` of a ``Sentinel.master_for`` client, else ``None`` (one server, a
    cluster, or a client of a replica, which refuses writes anyway)."""
    service = sentinel_service(client)
    if service is None or not service.primary:
        return None
    assert isinstance(client, redis.Redis)
    return WriteRoute(client, service)
