"""Who is a fleet member, and from when, on a real redis-server.

- A client is listed as soon as its constructor (or ``wait_ready()``) returns ``live``, and that costs
  the constructor one round trip at most (measured through a proxy that delays every packet).
- ``promptreg watch`` serves nothing and reports nothing.
- After a fork, the parent stops reporting until it serves a lookup again; the child reports (real
  ``os.fork`` and ``multiprocessing`` fork children; the wait for a stopped child is real).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import queue
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
import redis

from promptreg.client import ClientState, PromptClient
from promptreg.client.cache import Cache
from promptreg.registry import RedisPromptRegistry
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.redis

REPO_ROOT = Path(__file__).resolve().parent.parent
NAME, LABEL = "movie-critic", "production"


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    reg.create_prompt(NAME)
    for n in (1, 2, 3):
        reg.add_version(NAME, f"v{n}: review {{{{movie}}}}")
    reg.set_label(NAME, LABEL, 1)
    yield reg
    reg.close()


def _rev(registry: RedisPromptRegistry) -> int:
    return int(registry.redis.get(registry.keys.rev) or 0)


def _members(registry: RedisPromptRegistry) -> dict[str, Any]:
    return {member.client_id: member for member in registry.fleet()}


# -- listed when live ----------------------------------------------------------------------------------


def test_a_client_is_listed_as_live_when_its_constructor_returns(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    for _ in range(5):  # each start races the first report against the fleet read: every one must hold
        with PromptClient(redis_server.url, namespace=namespace, report_interval=60) as prompts:
            assert prompts.status().state is ClientState.LIVE
            member = _members(registry).get(prompts.client_id)
            assert member is not None, "the constructor returned live before the first report"
            assert (member.state, member.rev) == ("live", _rev(registry))
        assert prompts.client_id not in _members(registry)


def test_a_start_writes_one_report(redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry) -> None:
    # Neither an "initializing" record before the first state nor a repeat of the first report.
    with PromptClient(redis_server.url, namespace=namespace, report_interval=60) as prompts:
        reporter = prompts._presence.reporter
        assert reporter is not None and reporter.reports == 1
        time.sleep(0.2)  # eight coalescing windows
        assert reporter.reports == 1


def test_a_client_is_listed_as_live_when_wait_ready_returns(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    for _ in range(5):
        # start_timeout=0: the constructor returns before any state; wait_ready() waits for live.
        with PromptClient(redis_server.url, namespace=namespace, start_timeout=0, report_interval=60) as prompts:
            assert prompts.wait_ready(10)
            member = _members(registry).get(prompts.client_id)
            assert member is not None and (member.state, member.rev) == ("live", _rev(registry)), member


class DelayProxy:
    """A TCP proxy to Redis that delays every chunk by ``delay`` seconds in each direction: a
    network whose round trip is ``2 * delay``, long enough to count the round trips a start-up
    waits for. Every thread and socket stops with :meth:`close`."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [downstream, upstream]
            for source, target in ((downstream, upstream), (upstream, downstream)):
                chunks: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()
                for work, arg in ((self._read, source), (self._write, target)):
                    thread = threading.Thread(target=work, args=(arg, chunks), daemon=True)
                    self.threads.append(thread)
                    thread.start()

    def _read(self, source: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        data = b"x"
        while data:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            chunks.put((time.monotonic() + self.delay, data))

    def _write(self, target: socket.socket, chunks: queue.SimpleQueue[tuple[float, bytes]]) -> None:
        while True:
            due, data = chunks.get()
            if not data:
                with contextlib.suppress(OSError):
                    target.shutdown(socket.SHUT_WR)
                return
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                target.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        self.stopped.set()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self.threads:
            thread.join(5)
        self.listener.close()


def test_the_first_report_costs_the_constructor_at_most_one_round_trip(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    proxy = DelayProxy(redis_server.port, delay=0.03)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        probe = redis.Redis.from_url(url)
        probe.ping()  # connected: the pings below are one round trip each
        trips = []
        for _ in range(5):
            started = time.perf_counter()
            probe.ping()
            trips.append(time.perf_counter() - started)
        probe.close()
        round_trip = statistics.median(trips)
        assert round_trip >= 0.06

        def start(report: bool) -> tuple[float, float]:
            """``(seconds until live, seconds from live until the constructor returned)``."""
            started = time.time()
            prompts = PromptClient(url, namespace=namespace, fleet_report=report, start_timeout=30, report_interval=60)
            returned = time.time()
            try:
                status = prompts.status()  # status.since: when it went live (time.time())
                assert status.state is ClientState.LIVE
                if report:
                    assert prompts.client_id in _members(registry)  # read directly, not through the proxy
            finally:
                prompts.close()
            return status.since - started, returned - status.since

        without, with_reports = [], []
        for _ in range(5):  # medians of 5: one start slowed by a loaded machine does not move them
            without.append(start(False))
            with_reports.append(start(True))
        figures = f"round trip {round_trip:.3f} s; without {without}; with {with_reports}"
        # After live: the report, one round trip (SET + ZADD in one pipeline), plus thread hand-offs.
        after_live = statistics.median(after for _, after in with_reports)
        assert 0.8 * round_trip < after_live < 1.5 * round_trip, figures
        assert statistics.median(after for _, after in without) < 0.3 * round_trip, figures
        # Before live: opening the reporter's connection (two or three round trips) overlaps the
        # state read (about 14 here), so that part does not grow (it varies by about one trip anyway).
        growth = statistics.median(until for until, _ in with_reports) - statistics.median(u for u, _ in without)
        assert growth < 1.5 * round_trip, figures
    finally:
        proxy.close()


# -- promptreg watch ----------------------------------------------------------------------------------


def test_watch_serves_nothing_and_reports_nothing(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    env = {**os.environ, "PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "promptreg.registry.cli", "watch", NAME],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    errors: list[str] = []
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = process.stdout, process.stderr

    def pump_out() -> None:
        for line in stdout:
            lines.put(line)

    def pump_err() -> None:
        for line in stderr:
            errors.append(line)  # line by line: the test reads it meanwhile

    pumps = [threading.Thread(target=pump_out, daemon=True), threading.Thread(target=pump_err, daemon=True)]
    for pump in pumps:
        pump.start()
    try:
        assert wait_until(lambda: any("watching" in e for e in errors) or process.poll() is not None, 30), errors
        assert process.poll() is None, errors
        registry.set_label(NAME, LABEL, 2)
        printed = lines.get(timeout=10)  # the watcher is live and applied the move
        assert "production 1 -> 2" in printed
        assert registry.fleet() == []
        assert list(registry.redis.scan_iter(match=registry.keys.fleet + "*")) == []
        result = registry.wait_for_fleet(timeout=1)
        assert (result.reached, result.lagging, result.complete) == ([], [], True)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(15)
        for pump in pumps:
            pump.join(5)
        stdout.close()
        stderr.close()
    assert code == 0, errors


# -- fork ------------------------------------------------------------------------------------------------


def _fork_a_child_that_exits(prompts: PromptClient) -> None:
    """``os.fork()`` a child that closes its copy of the client (removing any record it wrote) and exits."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        try:
            prompts.close()
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _serve_in_child(prompts: PromptClient, conn: Connection) -> None:
    """A forked child that serves lookups with the client it inherited until told to stop."""
    ready = prompts.wait_ready(10)
    conn.send({"ready": ready, "client_id": prompts.client_id, "pid": os.getpid()})
    while not conn.poll(0.002):
        prompts.get(NAME)
    prompts.close()


def test_after_a_fork_the_parent_that_serves_nothing_is_not_waited_for_and_the_child_is(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    # report_interval=2: a stopped child's record lives 6 s, longer than the waits below.
    prompts = PromptClient(redis_server.url, namespace=namespace, report_interval=2.0)
    parent_id = prompts.client_id
    ctx = multiprocessing.get_context("fork")
    ours, theirs = ctx.Pipe()
    child = ctx.Process(target=_serve_in_child, args=(prompts, theirs))
    try:
        assert wait_until(lambda: parent_id in _members(registry), 5)
        _fork_a_child_that_exits(prompts)  # the parent is now a pre-fork master that serves nothing
        assert wait_until(lambda: parent_id not in _members(registry), 5), "the parent still reports"
        # From that paused parent, a child that serves: it reports, under an id of its own.
        child.start()
        assert ours.poll(20), "the child never got ready"
        hello = ours.recv()
        child_id = hello["client_id"]
        assert hello["ready"] and child_id != parent_id and child_id.split(":")[1] == str(hello["pid"])
        members = _members(registry)
        assert set(members) == {child_id}, members
        assert (members[child_id].state, members[child_id].rev) == ("live", _rev(registry))

        move = registry.set_label(NAME, LABEL, 2)
        result = registry.wait_for_fleet(timeout=10)
        assert (result.rev, result.complete, result.reached, result.lagging) == (move.rev, True, [child_id], [])

        # The wait is for the child, really: stopped, it lags; the parent is in none of the lists.
        os.kill(hello["pid"], signal.SIGSTOP)
        try:
            registry.set_label(NAME, LABEL, 3)
            result = registry.wait_for_fleet(timeout=0.5)
            assert (result.complete, result.reached, result.lagging, result.gone) == (False, [], [child_id], [])
        finally:
            os.kill(hello["pid"], signal.SIGCONT)
        result = registry.wait_for_fleet(timeout=10)
        assert result.complete and result.reached == [child_id], result
        assert parent_id not in _members(registry)  # its own periodic reports stayed off all along

        # The parent serves a lookup: it is a member again, at once, at the current revision.
        assert prompts.get(NAME).version == 3
        assert prompts._lookup_cache is prompts._cache  # the tripwire is gone: later lookups pay nothing
        assert wait_until(lambda: parent_id in _members(registry), 5)
        assert (_members(registry)[parent_id].state, _members(registry)[parent_id].rev) == ("live", _rev(registry))
        result = registry.wait_for_fleet(timeout=10)
        assert result.complete and result.reached == sorted([child_id, parent_id]), result
    finally:
        if child.pid is not None:
            os.kill(child.pid, signal.SIGCONT)
            ours.send("stop")
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join(5)
        ours.close()
        theirs.close()
        prompts.close()
    assert child.exitcode == 0
    assert _members(registry) == {}


LOOKUPS: dict[str, Callable[[PromptClient], object]] = {
    "get": lambda prompts: prompts.get(NAME),
    "pinned": lambda prompts: prompts.get(NAME, version=2),
    "render_text": lambda prompts: prompts.render_text(NAME, movie="Alien"),
    "fallback": lambda prompts: prompts.get(NAME, "latest", fallback="unused"),
}


@pytest.mark.parametrize("lookup", sorted(LOOKUPS))
def test_a_forked_parent_reports_again_once_it_serves(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, lookup: str
) -> None:
    with PromptClient(redis_server.url, namespace=namespace, report_interval=0.1) as prompts:
        assert wait_until(lambda: prompts.client_id in _members(registry), 5)
        _fork_a_child_that_exits(prompts)
        assert wait_until(lambda: prompts.client_id not in _members(registry), 5)
        time.sleep(0.4)  # four report intervals: still nothing
        assert prompts.client_id not in _members(registry)
        assert prompts.status().state is ClientState.LIVE  # status() is not a lookup
        LOOKUPS[lookup](prompts)
        assert isinstance(prompts._lookup_cache, Cache)
        assert wait_until(lambda: prompts.client_id in _members(registry), 5)
        # Forking again pauses it again; its listener kept applying changes meanwhile.
        _fork_a_child_that_exits(prompts)
        assert wait_until(lambda: prompts.client_id not in _members(registry), 5)
        registry.set_label(NAME, LABEL, 3)
        assert wait_until(lambda: prompts.status().rev == _rev(registry), 5)
        assert prompts.get(NAME).version == 3
        assert wait_until(lambda: _members(registry).get(prompts.client_id, None) is not None, 5)
        assert _members(registry)[prompts.client_id].rev == _rev(registry)
    assert _members(registry) == {}


def test_a_client_without_fleet_reports_keeps_reading_the_cache_directly_after_a_fork(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    with PromptClient(redis_server.url, namespace=namespace, fleet_report=False) as prompts:
        _fork_a_child_that_exits(prompts)
        assert prompts._lookup_cache is prompts._cache  # nothing to resume: no tripwire at all
        assert prompts.get(NAME).version == 1
