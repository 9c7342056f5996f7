"""``promptreg demo``: the seed's movie-critic scenario, live, with several client processes.

The demo creates ``movie-critic`` with three versions in a fresh namespace, starts worker processes
that each hold a :class:`promptreg.PromptClient` and serve ``get(key=user)`` + ``render()`` in a
loop (cycling over 1,000 user ids), then moves ``production`` 3 -> 2 -> 3 and runs a rollback; then
adds version 4, rolls it out to 10% of the users, widens to 50% and promotes it. For every move it
reports how long it took until every worker served it (for a rollout: the candidate to exactly the
users the assignment rule picks, in a whole pass over the users), what the registry's fleet view
confirmed, and at the end the workers' lookup rate.

Which registry: ``PROMPTREG_URL`` (or ``--url``) when it names Redis (any topology) or PostgreSQL;
else a private ``redis-server`` on a free loopback port in a temp dir, when one is installed; else
an in-process ``fakeredis.TcpFakeServer`` on a loopback port. Servers and workers are always
stopped, also on error and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.demo_servers import DemoError
from promptreg.registry.errors import PromptRegistryError
from promptreg.registry.factory import PromptRegistryFactory
from promptreg.registry.models import AuditEvent
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.rollouts import picks_candidate
from promptreg.registry.urls import without_query_parameter

PROMPT = "movie-critic"
LABEL = "production"
VERSIONS = (
    ("As a movie critic, do you like {{movie}}?", "alice"),
    ("As a {{criticlevel}} movie critic, do you like {{movie}}?", "bob"),
    ("You are a {{criticlevel}} movie critic. Write a review for {{movie}}.", "alice"),
)
CANDIDATE = ("You are a {{criticlevel}} movie critic. Review {{movie}} in three sentences.", "carol")
"""Version 4, rolled out to a share of the users before it is promoted."""
USERS = tuple(f"user-{i}" for i in range(1000))
"""The keys the workers look up with (a user id per request), in turn."""
SHARES = (10, 50)
SERVER_CHOICES = ("auto", "redis-server", "fakeredis")
_BATCH = 500  # lookups between two checks of the stop flag
_VERSIONS_KEPT = 8  # versions 0-7 counted per pass of the users (the demo writes 4)
_MOVE_TIMEOUT = 15.0  # seconds a move may take to reach every worker before the demo gives up


@dataclass(frozen=True, slots=True)
class MoveResult:
    """One label move and how long it took until every worker served the new version."""

    action: str
    label: str
    previous_version: int | None
    version: int | None
    seconds: float
    """From the write until every worker served the new version (the workers' own pipes)."""
    fleet_reached: int = 0
    """Clients the registry's fleet view confirmed at the move's revision (0 on PostgreSQL: no fleet)."""
    fleet_total: int = 0
    """Clients in the fleet view during the wait."""
    fleet_seconds: float | None = None
    """From the write until the fleet view was complete (``None``: not confirmed in time, or no fleet)."""


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the demo measured."""

    server: str
    namespace: str
    workers: int
    moves: tuple[MoveResult, ...]
    lookups: int
    seconds: float
    cpu_seconds: float
    """CPU time the workers spent meanwhile (all of them, summed)."""

    @property
    def lookups_per_second(self) -> float:
        """All workers' lookups (get + render) per second, summed."""
        return self.lookups / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_seconds_per_lookup(self) -> float:
        """CPU time per lookup (get + render), independent of how many cores the workers shared."""
        return self.cpu_seconds / self.lookups if self.lookups else 0.0

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-ready data (``moves`` with their fields, plus the derived rates)."""
        data = asdict(self)
        data["lookups_per_second"] = self.lookups_per_second
        data["cpu_seconds_per_lookup"] = self.cpu_seconds_per_lookup
        return data


# -- workers -------------------------------------------------------------------------------------------


def _worker(
    url: str,
    namespace: str,
    index: int,
    shared: tuple[Any, Any, Any, Any, Any],
    stop: Any,
    errors: Any,
    parent: int,
    timeout: float,
) -> None:
    """One client process: serve ``get(key=user)`` + ``render()`` of movie-critic until told to stop,
    counting after each pass over :data:`USERS` how many of them got each version."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, also on Ctrl-C
    # A worker's troubles reach the parent through ``errors``; its client's reconnect warnings while
    # the demo stops its server would only be noise on the terminal.
    logging.getLogger("promptreg").addHandler(logging.NullHandler())
    served, counts, cpu, passes, tallies = shared
    try:
        from promptreg.client import PromptClient

        with PromptClient(url, namespace=namespace, default_label=LABEL, start_timeout=timeout) as client:
            if not client.wait_ready(timeout):
                raise DemoError(f"no state from the registry within {timeout:g} s ({client.status().last_error})")
            get, users, last, turn, tally = client.get, USERS, 0, 0, [0] * _VERSIONS_KEPT
            while not stop.is_set() and os.getppid() == parent:
                for _ in range(_BATCH):
                    version = get(PROMPT, key=users[turn])  # a request of one user: a rollout picks by it
                    version.render(movie="Alien", criticlevel="professional")
                    number = version.version
                    tally[number] += 1
                    if number != last:
                        last = served[index] = number
                    turn += 1
                    if turn == len(users):  # a pass over every user: which version each one got
                        turn = 0
                        tallies[index * _VERSIONS_KEPT : (index + 1) * _VERSIONS_KEPT] = tally
                        tally = [0] * _VERSIONS_KEPT
                        passes[index] += 1
                counts[index] += _BATCH
                cpu[index] = time.process_time()
                time.sleep(0)  # let the listener thread take the GIL, as a real service's I/O would
    except BaseException as exc:  # reported by the parent as one line, never as a traceback
        errors.put(f"worker {index}: {type(exc).__name__}: {exc}")


@dataclass
class _Fleet:
    processes: list[Any]
    served: Any
    counts: Any
    cpu: Any
    passes: Any
    tallies: Any
    stop: Any
    errors: Any

    def all_serving(self, version: int) -> bool:
        if not self.errors.empty():
            raise DemoError(self.errors.get())
        if not all(p.is_alive() for p in self.processes):
            raise DemoError("a worker process died")
        return all(v == version for v in self.served)

    def lookups(self) -> int:
        return int(sum(self.counts))

    def cpu_seconds(self) -> float:
        return float(sum(self.cpu))

    def wait_serving(self, version: int, timeout: float) -> float:
        """Seconds until every worker served ``version`` (raises :class:`DemoError` after ``timeout``)."""
        started = time.perf_counter()
        deadline = started + timeout
        while not self.all_serving(version):
            if time.perf_counter() > deadline:
                raise DemoError(f"not every worker served version {version} within {timeout:g} s")
            time.sleep(0.0002)
        return time.perf_counter() - started

    def wait_split(self, version: int, expected: int, timeout: float) -> float:
        """Seconds until every worker, in a whole pass over :data:`USERS` begun after the call, served
        ``version`` to exactly ``expected`` of them (raises :class:`DemoError` after ``timeout``)."""
        started = time.perf_counter()
        begun = list(self.passes)
        while True:
            self.all_serving(0)  # raises for a failed worker
            done = [self.passes[i] >= begun[i] + 2 for i in range(len(begun))]
            got = [self.tallies[i * _VERSIONS_KEPT + version] for i in range(len(begun))]
            if all(done) and all(count == expected for count in got):
                return time.perf_counter() - started
            if time.perf_counter() - started > timeout:
                raise DemoError(f"the workers served v{version} to {got} users, not {expected}, within {timeout:g} s")
            time.sleep(0.0002)


@contextlib.contextmanager
def _fleet(url: str, namespace: str, workers: int, timeout: float) -> Iterator[_Fleet]:
    context = multiprocessing.get_context("spawn")  # no fork of a parent running server threads
    served = context.RawArray("i", workers)
    counts = context.RawArray("q", workers)
    cpu = context.RawArray("d", workers)
    passes = context.RawArray("q", workers)
    tallies = context.RawArray("i", workers * _VERSIONS_KEPT)
    stop = context.Event()
    errors = context.SimpleQueue()
    processes = [
        context.Process(
            target=_worker,
            args=(url, namespace, i, (served, counts, cpu, passes, tallies), stop, errors, os.getpid(), timeout),
            name=f"promptreg-demo-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        yield _Fleet(processes, served, counts, cpu, passes, tallies, stop, errors)
    finally:
        stop.set()
        for process in processes:
            if process.pid is not None:
                process.join(timeout=5)
        for process in processes:
            if process.is_alive():
                process.terminate()
                process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)


# -- the scenario --------------------------------------------------------------------------------------

_WORDS = {"set_label": "set_label", "rollback": "rollback", "start_rollout": "rollout", "set_rollout": "widen",
          "promote_rollout": "promote"}  # fmt: skip


def _plan(registry: PromptRegistry) -> list[tuple[str, Callable[[], AuditEvent]]]:
    """The moves, in order: two label moves and a rollback; then version 4 rolled out to a share of
    the users, widened, and promoted."""

    def start() -> AuditEvent:
        registry.add_version(PROMPT, CANDIDATE[0], author=CANDIDATE[1], message="shorter reviews")
        return registry.start_rollout(PROMPT, LABEL, 4, SHARES[0], author="demo", reason="try v4 on a few users")

    return [
        ("set_label", lambda: registry.set_label(PROMPT, LABEL, 2, author="demo", reason="v3 rambles")),
        ("set_label", lambda: registry.set_label(PROMPT, LABEL, 3, author="demo", reason="fixed")),
        ("rollback", lambda: registry.rollback(PROMPT, LABEL, author="demo", reason="back to v2")),
        ("start_rollout", start),
        ("set_rollout", lambda: registry.set_rollout(PROMPT, LABEL, SHARES[1], author="demo", reason="looks good")),
        ("promote_rollout", lambda: registry.promote_rollout(PROMPT, LABEL, author="demo", reason="v4 for all")),
    ]


def _served(fleet: _Fleet, event: AuditEvent, begin: float, workers: int) -> tuple[float, str]:
    """Seconds from ``begin`` (the write) until every worker served ``event``, and the move in words.
    A rollout is served when each worker gives the candidate to exactly the users the rule picks."""
    version = event.version or 0
    if event.percent is None:
        took = (time.perf_counter() - begin) + fleet.wait_serving(version, _MOVE_TIMEOUT)
        return took, f"{LABEL} {event.previous_version} -> {version}: all {workers} workers served v{version}"
    expected = sum(picks_candidate(PROMPT, LABEL, version, event.percent, user) for user in USERS)
    took = (time.perf_counter() - begin) + fleet.wait_split(version, expected, _MOVE_TIMEOUT)
    what = f"{LABEL} v{event.previous_version} + v{version} at {event.percent:g}%"
    return took, f"{what}: all {workers} workers served v{version} to the same {expected} of {len(USERS)} users"


def run_demo(
    url: str,
    *,
    server: str,
    workers: int = 4,
    seconds: float = 1.0,
    report: Callable[[str], None] = lambda line: None,
    keep: bool = False,
    writer: redis.Redis | None = None,
) -> DemoResult:
    """Run the movie-critic scenario against the registry at ``url`` (Redis or PostgreSQL); ``report``
    gets progress lines.

    ``seconds`` is how long the workers serve between moves. The prompt lives in a fresh namespace
    (``demo-<random>``), deleted at the end unless ``keep``. ``writer``, when given, is the Redis
    client the demo writes through (the workers always connect to ``url``). Raises :class:`DemoError` and
    :class:`~promptreg.RegistryUnavailableError`.
    """
    namespace = "demo-" + uuid.uuid4().hex[:8]
    # The demo's own namespace, always: a namespace= in a PostgreSQL URL would otherwise win, and the
    # demo deletes its namespace at the end.
    url = without_query_parameter(url, "namespace")
    registry: PromptRegistry = (
        RedisPromptRegistry(writer, namespace=namespace)
        if writer is not None
        else PromptRegistryFactory.from_url(url, namespace=namespace)
    )
    try:
        registry.create_prompt(PROMPT, description="The seed's movie critic", author="demo")
        for text, author in VERSIONS:
            registry.add_version(PROMPT, text, author=author)
        registry.set_label(PROMPT, "staging", 2, author="demo")
        registry.set_label(PROMPT, LABEL, 3, author="demo")
        report(f"created {PROMPT!r} in namespace {namespace!r}: versions 1-3, staging -> 2, {LABEL} -> 3")
        for number, (text, _author) in enumerate(VERSIONS, 1):
            report(f"  v{number}: {text}")
        shares = f"{SHARES[0]}% then {SHARES[1]}% of the users"
        report(f"  v4 (added later, rolled out to {shares}, then promoted): {CANDIDATE[0]}")

        report(
            f"starting {workers} worker processes, each a PromptClient serving get(key=user) + render() in a loop ..."
        )
        with _fleet(url, namespace, workers, timeout=30.0) as fleet:
            fleet.wait_serving(3, timeout=60.0)
            report(f"all {workers} workers serve {LABEL} = v3")
            started, lookups_before, cpu_before = time.perf_counter(), fleet.lookups(), fleet.cpu_seconds()
            moves: list[MoveResult] = []
            for action, move in _plan(registry):
                time.sleep(seconds)  # the workers serve the current version meanwhile
                begin = time.perf_counter()
                event = move()
                # The workers' own report first (what the move is about), then what an operator
                # sees: the registry's fleet view confirming it (each client acknowledges the
                # revision it applied; in a burst one report per 25 ms covers every change).
                took, what = _served(fleet, event, begin, workers)
                confirmed = registry.wait_for_fleet(event.rev, timeout=_MOVE_TIMEOUT)
                confirmed_after = time.perf_counter() - begin
                total = len(confirmed.reached) + len(confirmed.lagging)
                moves.append(
                    MoveResult(
                        action, LABEL, event.previous_version, event.version, took,
                        len(confirmed.reached), total, confirmed_after if confirmed.complete and total else None,
                    )
                )  # fmt: skip
                reached, ms = len(confirmed.reached), confirmed_after * 1000
                fleet_line = (
                    f"fleet view: reached {reached} of {total} clients in {ms:.1f} ms"
                    if total
                    else "fleet view: not kept by this backend"
                )
                report(f"{_WORDS[action]:<9} {what} after {took * 1000:.1f} ms; {fleet_line}")
            time.sleep(seconds)
            elapsed = time.perf_counter() - started
            lookups = fleet.lookups() - lookups_before
            cpu_seconds = fleet.cpu_seconds() - cpu_before
        return DemoResult(server, namespace, workers, tuple(moves), lookups, elapsed, cpu_seconds)
    finally:
        if not keep:
            with contextlib.suppress(PromptRegistryError):
                drop = getattr(registry, "drop_namespace", None)  # Redis and PostgreSQL have one
                if drop is not None:
                    drop()
        registry.close()
