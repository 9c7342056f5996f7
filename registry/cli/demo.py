"""``promptreg demo``: the seed's movie-critic scenario, live, with several client processes.

The demo creates ``movie-critic`` with three versions in a fresh namespace, starts worker processes
that each hold a :class:`promptreg.PromptClient` and serve ``get()`` + ``render()`` in a loop, then
moves ``production`` 3 -> 2 -> 3 and runs a rollback. For every move it reports how long it took
until every worker served the new version, and at the end the workers' lookup rate.

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
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import redis

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.local_server import LocalRedisServer
from promptreg.registry.errors import ConfigurationError, PromptRegistryError, RegistryUnavailableError
from promptreg.registry.factory import PromptRegistryFactory
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.urls import POSTGRES_SCHEMES, redact_url, url_scheme, without_query_parameter

PROMPT = "movie-critic"
LABEL = "production"
VERSIONS = (
    ("As a movie critic, do you like {{movie}}?", "alice"),
    ("As a {{criticlevel}} movie critic, do you like {{movie}}?", "bob"),
    ("You are a {{criticlevel}} movie critic. Write a review for {{movie}}.", "alice"),
)
SERVER_CHOICES = ("auto", "redis-server", "fakeredis")
_BATCH = 500  # lookups between two checks of the stop flag
_MOVE_TIMEOUT = 15.0  # seconds a move may take to reach every worker before the demo gives up


class DemoError(PromptRegistryError):
    """``promptreg demo`` could not run: no server could be started, or a worker failed. The CLI's
    own error (printed as one line like every other), not part of the library's error tree."""


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


# -- servers -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def private_redis_server(executable: str) -> Iterator[str]:
    """Run ``redis-server`` on a free 127.0.0.1 port in a temp dir; yields its URL; always stops it.

    Raises :class:`DemoError` if it does not answer within 10 seconds.
    """
    try:
        server = LocalRedisServer(executable).start()
    except (RegistryUnavailableError, ConfigurationError) as exc:
        raise DemoError(str(exc)) from exc
    try:
        yield server.url
    finally:
        server.cleanup()


@contextlib.contextmanager
def fake_redis_server() -> Iterator[tuple[str, redis.Redis]]:
    """Serve an in-process fakeredis (RESP, Lua and pub/sub) on a free 127.0.0.1 port.

    Yields its URL and an in-process client of the same server. Write through that client: the
    TCP server (fakeredis 2.40) drops a connection whose command fails, and a first ``EVALSHA``
    fails with ``NOSCRIPT`` by design. Raises :class:`DemoError` when fakeredis (the ``demo``
    extra) is not installed.
    """
    try:
        from fakeredis import FakeRedis, TcpFakeServer
    except ImportError as exc:
        raise DemoError(
            "fakeredis is not installed: pip install 'fakeredis[lua]>=2.26' (the [demo] extra), or install redis-server"
        ) from exc
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="promptreg-demo-fakeredis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0", FakeRedis(server=server.fake_server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def demo_server(url: str | None, choice: str = "auto") -> Iterator[tuple[str, str, redis.Redis | None]]:
    """Yields ``(url, description, writer)`` of the Redis the demo uses, starting one if needed.

    ``writer`` is the client the demo must write through (fakeredis only), else ``None``.

    ``url`` given: that one. Else ``choice`` ``auto`` prefers an installed ``redis-server`` and falls
    back to fakeredis; ``redis-server`` / ``fakeredis`` force one. Raises :class:`DemoError`.
    """
    if url:
        kind = "PostgreSQL" if url_scheme(url) in POSTGRES_SCHEMES else "Redis"
        yield url, f"the {kind} at {redact_url(url)}", None
        return
    executable = shutil.which("redis-server")
    if choice == "redis-server" and executable is None:
        raise DemoError("redis-server is not installed (apt-get install redis-server)")
    if choice != "fakeredis" and executable is not None:
        with private_redis_server(executable) as private_url:
            yield private_url, f"a private redis-server ({executable}) on {private_url}", None
        return
    why = " (no redis-server installed)" if choice == "auto" else ""
    with fake_redis_server() as (fake_url, writer):
        yield fake_url, f"an in-process fakeredis server on {fake_url}{why}", writer


# -- workers -------------------------------------------------------------------------------------------


def _worker(
    url: str,
    namespace: str,
    index: int,
    shared: tuple[Any, Any, Any],
    stop: Any,
    errors: Any,
    parent: int,
    timeout: float,
) -> None:
    """One client process: serve ``get()`` + ``render()`` of movie-critic until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, also on Ctrl-C
    # A worker's troubles reach the parent through ``errors``; its client's reconnect warnings while
    # the demo stops its server would only be noise on the terminal.
    logging.getLogger("promptreg").addHandler(logging.NullHandler())
    served, counts, cpu = shared
    try:
        from promptreg.client import PromptClient

        with PromptClient(url, namespace=namespace, default_label=LABEL, start_timeout=timeout) as client:
            if not client.wait_ready(timeout):
                raise DemoError(f"no state from the registry within {timeout:g} s ({client.status().last_error})")
            get = client.get
            last = 0
            while not stop.is_set() and os.getppid() == parent:
                for _ in range(_BATCH):
                    version = get(PROMPT)
                    version.render(movie="Alien", criticlevel="professional")
                    if version.version != last:
                        last = served[index] = version.version
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


@contextlib.contextmanager
def _fleet(url: str, namespace: str, workers: int, timeout: float) -> Iterator[_Fleet]:
    context = multiprocessing.get_context("spawn")  # no fork of a parent running server threads
    served = context.RawArray("i", workers)
    counts = context.RawArray("q", workers)
    cpu = context.RawArray("d", workers)
    stop = context.Event()
    errors = context.SimpleQueue()
    processes = [
        context.Process(
            target=_worker,
            args=(url, namespace, i, (served, counts, cpu), stop, errors, os.getpid(), timeout),
            name=f"promptreg-demo-worker-{i}",
            daemon=True,
        )
        for i in range(workers)
    ]
    try:
        for process in processes:
            process.start()
        yield _Fleet(processes, served, counts, cpu, stop, errors)
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

        report(f"starting {workers} worker processes, each a PromptClient serving get() + render() in a loop ...")
        with _fleet(url, namespace, workers, timeout=30.0) as fleet:
            fleet.wait_serving(3, timeout=60.0)
            report(f"all {workers} workers serve {LABEL} = v3")
            started, lookups_before, cpu_before = time.perf_counter(), fleet.lookups(), fleet.cpu_seconds()
            moves: list[MoveResult] = []
            plan: list[tuple[str, Callable[[], Any]]] = [
                ("set_label", lambda: registry.set_label(PROMPT, LABEL, 2, author="demo", reason="v3 rambles")),
                ("set_label", lambda: registry.set_label(PROMPT, LABEL, 3, author="demo", reason="fixed")),
                ("rollback", lambda: registry.rollback(PROMPT, LABEL, author="demo", reason="back to v2")),
            ]
            for action, move in plan:
                time.sleep(seconds)  # the workers serve the current version meanwhile
                begin = time.perf_counter()
                event = move()
                # The workers' own report first (what the move is about), then what an operator
                # sees: the registry's fleet view confirming it (each client acknowledges the
                # revision it applied; in a burst one report per 25 ms covers every change).
                took = (time.perf_counter() - begin) + fleet.wait_serving(event.version or 0, _MOVE_TIMEOUT)
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
                report(
                    f"{action:<9} {LABEL} {event.previous_version} -> {event.version}: "
                    f"all {workers} workers served v{event.version} after {took * 1000:.1f} ms; {fleet_line}"
                )
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
