"""Serve: ``promptreg serve`` under load, each figure against a baseline measured in the same run.

1. **resolve**: ``GET /api/v1/prompts/<name>/resolve?label=production`` with a reader token, at 1
   and 50 concurrent keep-alive connections, against the baseline: the same framework (Starlette
   on uvicorn, same settings, one process, one worker: ``benchmarks/_serve_baseline.py``)
   answering the very bytes and headers ``promptreg serve`` answered, constant. Rounds alternate
   baseline and resolve (B R, R B, B R, ...) so drift hits both alike; medians across rounds.
2. **change stream**: N concurrent SSE subscribers (default 1,000) on ``/api/v1/events``; label
   moves with ``set_label`` (one every ~200 ms); per move, the time from just before the write until
   the last subscriber has the event, and the distribution over subscribers; every subscriber
   must get every move exactly once (checked by ``id:``). Baselines of the same moves: a redis-py
   ``SUBSCRIBE`` on the registry's own change channel (the floor: Redis delivering the write's
   message to one process) and a :class:`~promptreg.PromptClient`'s ``on_change`` in its own process
   (what the server's own client does before the stream can start sending).
3. **prompt list** with 10,000 prompts: ``GET /api/v1/prompts?limit=100`` cold (the first request
   after start, and further never-read pages by cursor) and warm; the console's ``GET /`` when the
   server has one (signed in with a session cookie, as a browser is); each warm figure against the
   baseline server answering the same bytes.

Processes: a private ``redis-server`` (or ``--url``), ``promptreg serve`` (``python -m
promptreg.registry.cli serve``) and the baseline server, each on a free 127.0.0.1 port; the load
generator is a separate (forked) process: asyncio ``Protocol`` connections with hand-rolled HTTP/1.1
keep-alive, one request in flight per connection (closed loop), latency from the request's write
to its last byte (``time.monotonic_ns``); it reports its own CPU time and the benchmark reads the
server's from ``/proc``, so the output shows which side was busy. The SSE subscribers are raw
asyncio sockets (HTTP/1.1, chunked) in one or two forked processes; each stamps an arrival as the
first thing it does on the socket's data and parses later. Every process is stopped at the end.

    python -m benchmarks.serve [--quick] [--json PATH] [--url redis://...] [--subscribers 1000]
        [--prompts 10000] [--moves 20] [--rounds 5] [--seconds 3] [--load-processes 1]
        [--stream-processes 2]
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import functools
import http.client
import importlib.util
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import quote

if __package__ in (None, ""):  # run as ``python benchmarks/serve.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks import _fleet, _harness, _report
from benchmarks.startup import populate
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.cli.local_server import free_port
from promptreg.registry.cli.serve.auth import SESSION_COOKIE, new_token, token_line
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.wire import decode

NAME = "bench-serve"
LABEL = "production"
TEXT = (
    "You are a support assistant for {{product}}. Answer in {{language}}, in at most three short "
    "paragraphs. Quote the policy section you used, never invent order numbers, and hand over to a "
    "human when the customer asks for one. Keep a neutral tone and ask one clarifying question when "
    "the request is ambiguous. This is version "
)
PAGE = 100
LIST_PATH = f"/api/v1/prompts?limit={PAGE}"
RESOLVE_PATH = f"/api/v1/prompts/{NAME}/resolve?label={LABEL}"
CONSOLE_PATH = "/"
WARMUP_MOVES = 2
TARGET_MS = 100.0
"""The change stream's target: every subscriber has a move within this many ms."""
READY_TIMEOUT = 120.0
_HOP_HEADERS = frozenset({"content-length", "content-type", "date", "server", "transfer-encoding", "set-cookie"})


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    quick: bool
    rounds: int
    seconds: float
    warmup: float
    concurrency: tuple[int, ...]
    subscribers: int
    moves: int
    spacing: float
    prompts: int
    list_requests: int
    cold_pages: int
    load_processes: int
    stream_processes: int


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--subscribers", type=int, default=None, help="SSE subscribers (default 1000; quick 100)")
    parser.add_argument("--prompts", type=int, default=None, help="prompts in the registry (default 10000; quick 1000)")
    parser.add_argument("--moves", type=int, default=None, help="measured label moves (default 20; quick 5)")
    parser.add_argument("--rounds", type=int, default=None, help="A/B rounds per concurrency (default 5; quick 2)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per load run (default 3; quick 0.5)")
    parser.add_argument("--load-processes", type=int, default=1, help="load generator processes (default 1)")
    parser.add_argument("--stream-processes", type=int, default=2, help="SSE subscriber processes (default 2)")


def _plan(args: argparse.Namespace) -> Plan:
    quick = bool(args.quick)
    return Plan(
        quick=quick,
        rounds=args.rounds or (2 if quick else 5),
        seconds=args.seconds or (0.5 if quick else 3.0),
        warmup=0.2 if quick else 0.5,
        concurrency=(1, 50),
        subscribers=args.subscribers or (100 if quick else 1000),
        moves=args.moves or (5 if quick else 20),
        spacing=0.1 if quick else 0.2,
        prompts=args.prompts or (1000 if quick else 10_000),
        list_requests=10 if quick else 30,
        cold_pages=4 if quick else 30,
        load_processes=max(1, args.load_processes),
        stream_processes=max(1, args.stream_processes),
    )


# -- server processes -----------------------------------------------------------------------------


def _server_preexec() -> None:
    _harness.die_with_parent()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


@dataclass
class Reply:
    """One HTTP answer the parent read, and how long it took (request written to last byte)."""

    status: int
    headers: dict[str, str]
    body: bytes
    ms: float

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """One keep-alive connection of the parent (``http.client``), reopened after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Reply:
        start = time.perf_counter_ns()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        elapsed = (time.perf_counter_ns() - start) / 1e6
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, elapsed)

    def get(self, path: str, headers: dict[str, str]) -> Reply:
        return self.request("GET", path, headers)

    def close(self) -> None:
        self.conn.close()


class HttpServer:
    """A server process of this run (``promptreg serve`` or the baseline) on a free loopback port."""

    def __init__(self, label: str, argv: list[str], port: int, log: Path, env: dict[str, str]) -> None:
        self.label = label
        self.port = port
        self.log = log
        with open(log, "wb") as out, _harness.exit_signals_deferred():
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent, preexec_fn=_server_preexec
            )

    def wait_ready(self, path: str, headers: dict[str, str], timeout: float) -> None:
        """Until ``GET path`` answers 200; raises with the log's tail when the process exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            probe = Http(self.port)
            with contextlib.suppress(OSError, http.client.HTTPException):
                if probe.get(path, headers).status == 200:
                    probe.close()
                    return
            probe.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def serve_process(url: str, namespace: str, tokens: dict[str, str], workdir: Path) -> Iterator[HttpServer]:
    """``promptreg serve`` on a free port with the given tokens (role -> token), stopped on exit."""
    port = free_port()
    token_file = workdir / "tokens"
    token_file.write_text("".join(f"{token_line(role + '-bench', role, t)}\n" for role, t in tokens.items()))
    env = {**os.environ, "PROMPTREG_SERVE_TOKENS_FILE": str(token_file), "PYTHONPATH": str(_harness.REPO_ROOT)}
    env.pop("PROMPTREG_SERVE_TOKENS", None)
    argv = [sys.executable, "-m", "promptreg.registry.cli", "--url", url, "--namespace", namespace,
            "serve", "--port", str(port)]  # fmt: skip
    server = HttpServer("promptreg serve", argv, port, workdir / "serve.log", env)
    try:
        server.wait_ready("/api/v1/status", _bearer(tokens["reader"]), READY_TIMEOUT)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def baseline_process(entries: list[dict[str, Any]], workdir: Path) -> Iterator[HttpServer]:
    """The baseline server answering ``entries`` (see ``benchmarks/_serve_baseline.py``), stopped on exit."""
    port = free_port()
    manifest = workdir / "baseline.json"
    manifest.write_text(json.dumps(entries), "utf-8")
    env = {**os.environ, "PYTHONPATH": str(_harness.REPO_ROOT)}
    argv = [sys.executable, "-m", "benchmarks._serve_baseline", "--port", str(port), "--bodies", str(manifest)]
    server = HttpServer("baseline server", argv, port, workdir / "baseline.log", env)
    try:
        server.wait_ready(entries[0]["path"], {}, READY_TIMEOUT)
        yield server
    finally:
        server.stop()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def baseline_entry(path: str, reply: Reply) -> dict[str, Any]:
    """The baseline's route for ``path``: the same body, media type and headers as ``reply``."""
    headers = {k: v for k, v in reply.headers.items() if k not in _HOP_HEADERS}
    media_type = reply.headers.get("content-type", "application/json").split(";")[0]
    return {"path": path.split("?")[0], "media_type": media_type, "headers": headers, "body": reply.body.decode()}


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _recv(conn: Connection) -> Any:
    """The next message on the parent's pipe, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    arrived = loop.create_future()

    def readable() -> None:
        if not arrived.done():
            arrived.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await arrived
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


# -- 1. load generator (a child process) ----------------------------------------------------------


class _LoadRun:
    """What every connection of one load run shares (one event loop, no locks)."""

    __slots__ = ("errors", "expected_length", "latencies", "measure_ns", "request", "statuses", "stop_ns",
                 "wrong_length")  # fmt: skip

    def __init__(self, request: bytes, measure_ns: int, stop_ns: int, expected_length: int) -> None:
        self.request = request
        self.measure_ns = measure_ns
        self.stop_ns = stop_ns
        self.expected_length = expected_length
        self.latencies = array.array("q")
        self.statuses: dict[int, int] = {}
        self.errors = 0
        self.wrong_length = 0


class _LoadConnection(asyncio.Protocol):
    """One keep-alive connection, one request in flight: the next is written when a response ends."""

    def __init__(self, run: _LoadRun, finished: asyncio.Future[None]) -> None:
        self.run = run
        self.finished = finished
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.need = -1  # bytes of the current response (head + body) once its head is parsed
        self.status = 0
        self.length = 0
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self) -> None:
        assert self.transport is not None
        self.sent = time.monotonic_ns()
        self.transport.write(self.run.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        run, buffer = self.run, self.buffer
        buffer += data
        while True:
            if self.need < 0:
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buffer[:end]).lower()
                at = head.find(b"\r\ncontent-length:")
                if at < 0:  # every answer measured here has a length; anything else is an error
                    run.errors += 1
                    self._close()
                    return
                stop = head.find(b"\r\n", at + 2)
                self.length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                self.status = int(head[9:12])
                self.need = end + 4 + self.length
            if len(buffer) < self.need:
                return
            del buffer[: self.need]
            self.need = -1
            run.statuses[self.status] = run.statuses.get(self.status, 0) + 1
            if run.measure_ns <= now <= run.stop_ns:
                run.latencies.append(now - self.sent)
                if self.length != run.expected_length:
                    run.wrong_length += 1
            if now >= run.stop_ns:
                self._close()
                return
            self.send()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if time.monotonic_ns() < self.run.stop_ns:
            self.run.errors += 1  # closed before the run ended
        if not self.finished.done():
            self.finished.set_result(None)


async def _load(port: int, request: bytes, connections: int, start_ns: int, measure_ns: int, stop_ns: int,
                expected_length: int) -> dict[str, Any]:  # fmt: skip
    loop = asyncio.get_running_loop()
    run = _LoadRun(request, measure_ns, stop_ns, expected_length)
    protocols: list[_LoadConnection] = []
    try:
        for _ in range(connections):
            finished: asyncio.Future[None] = loop.create_future()
            _, protocol = await loop.create_connection(
                functools.partial(_LoadConnection, run, finished), "127.0.0.1", port
            )
            protocols.append(protocol)
        await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
        cpu = time.process_time()
        began = time.monotonic_ns()
        for protocol in protocols:
            protocol.send()
        timeout = (stop_ns - time.monotonic_ns()) / 1e9 + 10.0
        await asyncio.wait_for(asyncio.gather(*(p.finished for p in protocols)), timeout)
        cpu = time.process_time() - cpu
        wall = (time.monotonic_ns() - began) / 1e9
    finally:
        for protocol in protocols:
            protocol._close()
    return {"latencies_ns": run.latencies.tobytes(), "statuses": run.statuses, "errors": run.errors,
            "wrong_length": run.wrong_length, "cpu_s": cpu, "wall_s": wall, "connections": connections}  # fmt: skip


def load_worker(conn: Connection) -> None:
    """The load generator process: ``("run", ...)`` -> ``("result", {...})``; ``("stop",)`` ends it."""
    while True:
        command = conn.recv()
        if command[0] == "stop":
            return
        if command[0] != "run":
            raise ValueError(f"unknown command {command!r}")
        conn.send(("result", asyncio.run(_load(*command[1:]))))


def _http_request(path: str, port: int, headers: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def load_run(children: _harness.Children, conns: list[Connection], server: HttpServer, request: bytes,
             connections: int, plan: Plan, expected_length: int) -> dict[str, Any]:  # fmt: skip
    """One closed-loop run of ``connections`` against ``server``; its throughput, latency and CPU."""
    used = conns[: min(len(conns), connections)]
    share = [connections // len(used) + (i < connections % len(used)) for i in range(len(used))]
    start = time.monotonic_ns() + 300_000_000  # time to open the connections
    measure = start + int(plan.warmup * 1e9)
    stop = measure + int(plan.seconds * 1e9)
    for conn, count in zip(used, share, strict=True):
        conn.send(("run", server.port, request, count, start, measure, stop, expected_length))
    time.sleep(max(0.0, (measure - time.monotonic_ns()) / 1e9))
    cpu = server.cpu_seconds()
    time.sleep(max(0.0, (stop - time.monotonic_ns()) / 1e9))
    server_cpu = (server.cpu_seconds() - cpu) / plan.seconds
    results = children.expect_all("result", timeout=plan.seconds + plan.warmup + 60, conns=used)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    for result in results:
        latencies += [ns / 1000 for ns in array.array("q", result["latencies_ns"])]
        for status, count in result["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + count
    if not latencies:
        raise RuntimeError(f"no request completed against {server.label} (statuses {statuses})")
    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / plan.seconds,
        "latency_us": _report.summarize(latencies),
        "statuses": statuses,
        "non_200": sum(n for s, n in statuses.items() if s != "200"),
        "errors": sum(r["errors"] for r in results),
        "wrong_length": sum(r["wrong_length"] for r in results),
        "server_cpu_cores": server_cpu,
        "load_cpu_cores": sum(r["cpu_s"] for r in results) / max(r["wall_s"] for r in results),
        "load_processes": len(used),
    }


def measure_resolve(plan: Plan, serve: HttpServer, baseline: HttpServer, reader: str,
                    expected_length: int) -> dict[str, Any]:  # fmt: skip
    """Resolve and the constant response, alternating, at each concurrency."""
    headers = {**_bearer(reader), "Accept": "application/json"}
    requests = {"baseline": _http_request(RESOLVE_PATH, baseline.port, headers),
                "resolve": _http_request(RESOLVE_PATH, serve.port, headers)}  # fmt: skip
    servers = {"baseline": baseline, "resolve": serve}
    runs: list[dict[str, Any]] = []
    with _harness.Children() as children:
        conns = [children.start(load_worker) for _ in range(plan.load_processes)]
        for concurrency in plan.concurrency:
            for round_ in range(plan.rounds):
                order = ("baseline", "resolve") if round_ % 2 == 0 else ("resolve", "baseline")
                for which in order:
                    result = load_run(children, conns, servers[which], requests[which], concurrency, plan,
                                      expected_length)  # fmt: skip
                    runs.append({"connections": concurrency, "round": round_, "server": which, **result})
        children.send_all(("stop",))
    return {"runs": runs, "summary": _resolve_summary(runs, plan)}


def _resolve_summary(runs: list[dict[str, Any]], plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for concurrency in plan.concurrency:
        cell: dict[str, Any] = {}
        for which in ("baseline", "resolve"):
            mine = [r for r in runs if r["connections"] == concurrency and r["server"] == which]
            cell[which] = {
                "rounds": len(mine),
                "requests_per_s": statistics.median(r["requests_per_s"] for r in mine),
                "p50_us": statistics.median(r["latency_us"]["p50"] for r in mine),
                "p99_us": statistics.median(r["latency_us"]["p99"] for r in mine),
                "server_cpu_cores": statistics.median(r["server_cpu_cores"] for r in mine),
                "load_cpu_cores": statistics.median(r["load_cpu_cores"] for r in mine),
                "requests": sum(r["requests"] for r in mine),
            }
        base, res = cell["baseline"], cell["resolve"]
        paired = [_report.ratio(b["requests_per_s"], r["requests_per_s"]) for b, r in _pairs(runs, concurrency)]
        cell["ratios"] = {
            "time_per_request": _report.ratio(base["requests_per_s"], res["requests_per_s"]),
            "time_per_request_paired_median": statistics.median(paired),
            "p50": _report.ratio(res["p50_us"], base["p50_us"]),
            "p99": _report.ratio(res["p99_us"], base["p99_us"]),
        }
        out[str(concurrency)] = cell
    return out


def _pairs(runs: list[dict[str, Any]], concurrency: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(baseline, resolve) of each round at ``concurrency``."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        if r["connections"] == concurrency:
            by_round.setdefault(r["round"], {})[r["server"]] = r
    return [(pair["baseline"], pair["resolve"]) for pair in by_round.values()]


# -- 2. the change stream (subscriber processes) --------------------------------------------------


class StreamSubscriber(asyncio.Protocol):
    """One SSE connection: HTTP/1.1 head, chunked body, events. Once ``deferred``, an arrival is only
    stamped and kept; it is parsed at the end, so parsing never delays the stamp of another one."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.chunk_left = 0
        self.need_crlf = False
        self.status = 0
        self.ready_rev: int | None = None
        self.changes: list[tuple[int, int]] = []  # (rev from id:, monotonic_ns of arrival)
        self.bad_data = 0
        self.heartbeats = 0
        self.other_events = 0
        self.ended = False
        self.closed = False
        self.error: str | None = None
        self.deferred = False
        self.pending: list[tuple[int, bytes]] = []

    def itself(self) -> StreamSubscriber:
        """The protocol factory of this connection (it is made before it connects)."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.deferred:
            self.pending.append((time.monotonic_ns(), data))
        else:
            self.feed(time.monotonic_ns(), data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def drain(self) -> None:
        pending, self.pending = self.pending, []
        for now, data in pending:
            self.feed(now, data)

    def feed(self, now: int, data: bytes) -> None:
        raw = self.raw
        raw += data
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).lower()
            del raw[: end + 4]
            self.head_done = True
            self.status = int(head[9:12])
            if self.status != 200 or b"\r\ntransfer-encoding: chunked" not in head:
                self.error = f"status {self.status}, head {head[:200]!r}"
                if self.transport is not None:
                    self.transport.close()
                return
        body = self.body
        while raw and not self.ended:
            if self.need_crlf:
                if len(raw) < 2:
                    break
                del raw[:2]
                self.need_crlf = False
            elif self.chunk_left == 0:
                eol = raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(raw[:eol]).split(b";")[0], 16)
                del raw[: eol + 2]
                if size == 0:
                    self.ended = True
                self.chunk_left = size
            else:
                take = min(self.chunk_left, len(raw))
                body += raw[:take]
                del raw[:take]
                self.chunk_left -= take
                self.need_crlf = self.chunk_left == 0
        while True:
            end = body.find(b"\n\n")
            if end < 0:
                return
            block = bytes(body[:end])
            del body[: end + 2]
            self._event(now, block)

    def _event(self, now: int, block: bytes) -> None:
        kind, ident, data, comment = "message", None, None, False
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                comment = True
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"id":
                ident = int(value)
            elif field == b"event":
                kind = value.decode()
            elif field == b"data":
                data = value
        if kind == "change" and ident is not None:
            self.changes.append((ident, now))
            parsed = json.loads(data or b"null")
            if not isinstance(parsed, dict) or parsed.get("rev") != ident:
                self.bad_data += 1
        elif kind == "ready" and ident is not None:
            self.ready_rev = ident
        elif comment and data is None and ident is None:
            self.heartbeats += 1
        elif data is not None or ident is not None:
            self.other_events += 1  # resync, or anything unexpected; the "retry:" block is neither

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _stream_main(conn: Connection, port: int, request: bytes, count: int) -> None:
    loop = asyncio.get_running_loop()
    subscribers = [StreamSubscriber(request) for _ in range(count)]
    try:
        for start in range(0, count, 50):  # in batches: 1,000 SYNs at once would overflow nothing, but no need
            batch = subscribers[start : start + 50]
            await asyncio.gather(*(loop.create_connection(s.itself, "127.0.0.1", port) for s in batch))
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(s.ready_rev is not None or s.error or s.closed for s in subscribers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        for s in subscribers:
            s.deferred = True
        ready = {
            "subscribers": count,
            "ready": sum(s.ready_rev is not None for s in subscribers),
            "errors": [s.error for s in subscribers if s.error][:5],
        }
        conn.send(("ready", ready))
        command = await _recv(conn)
        if command[0] != "finish":
            raise ValueError(f"unknown command {command!r}")
        _, last_rev, timeout = command
        deadline = time.monotonic() + timeout
        while True:
            for s in subscribers:
                s.drain()
            done = all(s.closed or (s.changes and s.changes[-1][0] >= last_rev) for s in subscribers)
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        conn.send(("events", {
            "changes": [s.changes for s in subscribers],
            "ready_revs": [s.ready_rev for s in subscribers],
            "closed_early": sum(s.closed for s in subscribers),
            "errors": [s.error for s in subscribers if s.error][:5],
            "bad_data": sum(s.bad_data for s in subscribers),
            "heartbeats": sum(s.heartbeats for s in subscribers),
            "other_events": sum(s.other_events for s in subscribers),
            "non_200": sum(s.status not in (0, 200) for s in subscribers),
        }))  # fmt: skip
    finally:
        for s in subscribers:
            s.close()
        await asyncio.sleep(0)


def stream_worker(conn: Connection, port: int, request: bytes, count: int) -> None:
    """A subscriber process: ``count`` SSE connections; ``("ready", ...)``, then ``("finish", rev, s)``
    -> ``("events", ...)`` with every connection's ``(rev, arrival)`` of each change event."""
    _raise_nofile(count + 256)
    asyncio.run(_stream_main(conn, port, request, count))


def pubsub_worker(conn: Connection, url: str, channel: str) -> None:
    """The floor: redis-py ``SUBSCRIBE`` on the registry's change channel; stamps each message's rev."""
    client = redis.Redis.from_url(url)
    pubsub: Any = client.pubsub()
    try:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + 30
        while (message := pubsub.get_message(timeout=1.0)) is None or message["type"] != "subscribe":
            if time.monotonic() > deadline:
                raise TimeoutError("no SUBSCRIBE confirmation")
        conn.send(("ready", os.getpid()))
        stamps: list[tuple[int, int]] = []  # (monotonic_ns, rev)
        while not conn.poll():
            message = pubsub.get_message(timeout=0.05)
            now = time.monotonic_ns()
            if message is not None and message["type"] == "message":
                stamps.append((now, decode(message["data"]).rev))
        conn.recv()
        conn.send(("events", {"stamps": stamps}))
    finally:
        pubsub.close()
        client.close()


def measure_stream(plan: Plan, serve: HttpServer, url: str, namespace: str, reader: str,
                   registry: RedisPromptRegistry) -> dict[str, Any]:  # fmt: skip
    """N SSE subscribers, the floor subscriber and a PromptClient; label moves; every arrival."""
    _raise_nofile(plan.subscribers + 512)
    request = _http_request("/api/v1/events", serve.port, {**_bearer(reader), "Accept": "text/event-stream"})
    processes = min(plan.stream_processes, plan.subscribers)
    share = [plan.subscribers // processes + (i < plan.subscribers % processes) for i in range(processes)]
    with _harness.Children() as children:
        sem = _harness.FORK.Semaphore(0)
        client_conn = children.start(_fleet.client_worker, url, namespace, NAME, LABEL, sem)
        floor_conn = children.start(pubsub_worker, url, Keyspace(namespace).channel)
        children.expect_all("ready", timeout=60, conns=[client_conn, floor_conn])
        started = time.perf_counter()
        sub_conns = [children.start(stream_worker, serve.port, request, n) for n in share]
        ready = children.expect_all("ready", timeout=READY_TIMEOUT + 30, conns=sub_conns)
        connect_s = time.perf_counter() - started
        if sum(r["ready"] for r in ready) != plan.subscribers:
            errors = [e for r in ready for e in r["errors"]]
            raise RuntimeError(f"only {sum(r['ready'] for r in ready)}/{plan.subscribers} subscribers ready: {errors}")
        status = Http(serve.port)
        server_count = status.get("/api/v1/status", _bearer(reader)).json()["subscribers"]
        status.close()
        current = registry.get_prompt(NAME).labels[LABEL]  # type: ignore[union-attr]
        rng = random.Random(7)
        moves: list[tuple[int, int, int]] = []  # (t0 before set_label, t1 after, rev)
        cpu, began = serve.cpu_seconds(), time.perf_counter()
        for _ in range(WARMUP_MOVES + plan.moves):
            target = 3 - current
            t0 = time.monotonic_ns()
            event = registry.set_label(NAME, LABEL, target, author="bench")
            moves.append((t0, time.monotonic_ns(), event.rev))
            current = target
            time.sleep(plan.spacing * rng.uniform(0.9, 1.1))
        server_cpu = (serve.cpu_seconds() - cpu) / (time.perf_counter() - began)
        last_rev = moves[-1][2]
        children.send_all(("finish", last_rev, 30.0), sub_conns)
        reports = children.expect_all("events", timeout=90, conns=sub_conns)
        children.send_all(("finish",), [client_conn, floor_conn])
        client_report, floor_report = children.expect_all("events", timeout=60, conns=[client_conn, floor_conn])
    raw = {
        "moves": moves,
        "subscribers": [changes for r in reports for changes in r["changes"]],
        "ready_revs": [rev for r in reports for rev in r["ready_revs"]],
        "floor": {rev: t for t, rev in floor_report["stamps"]},
        "client": {rev: t for t, rev, _v in client_report["stamps"]},
    }
    checks = {
        "server_subscribers_at_start": server_count,
        "connect_seconds": connect_s,
        "closed_early": sum(r["closed_early"] for r in reports),
        "bad_data": sum(r["bad_data"] for r in reports),
        "other_events": sum(r["other_events"] for r in reports),
        "non_200": sum(r["non_200"] for r in reports),
        "errors": [e for r in reports for e in r["errors"]][:5],
        "subscriber_processes": processes,
        "server_cpu_cores_during_moves": server_cpu,
    }
    return _stream_summary(raw, checks, plan)


def _stream_summary(raw: dict[str, Any], checks: dict[str, Any], plan: Plan) -> dict[str, Any]:
    moves = raw["moves"]
    revs = [rev for _t0, _t1, rev in moves]
    expected = set(revs)
    measured = moves[WARMUP_MOVES:]
    missed = duplicates = unexpected = complete = 0
    stamps: list[dict[int, int]] = []
    for changes in raw["subscribers"]:
        got = [rev for rev, _t in changes]
        missed += len(expected - set(got))
        duplicates += len(got) - len(set(got))
        unexpected += len(set(got) - expected)
        complete += sorted(got) == revs
        stamps.append(dict((rev, t) for rev, t in changes))
    every: list[float] = []
    first, median, last, after_return, writes, floor, client = [], [], [], [], [], [], []
    for t0, t1, rev in measured:
        arrivals = sorted((s[rev] - t0) / 1e6 for s in stamps if rev in s)
        writes.append((t1 - t0) / 1e6)
        if rev in raw["floor"]:
            floor.append((raw["floor"][rev] - t0) / 1e6)
        if rev in raw["client"]:
            client.append((raw["client"][rev] - t0) / 1e6)
        if not arrivals:
            continue
        every += arrivals
        first.append(arrivals[0])
        median.append(statistics.median(arrivals))
        last.append(arrivals[-1])
        after_return.append(arrivals[-1] - (t1 - t0) / 1e6)
    figures = {
        "floor_pubsub_ms": floor,
        "prompt_client_on_change_ms": client,
        "sse_first_subscriber_per_move_ms": first,
        "sse_median_subscriber_per_move_ms": median,
        "sse_last_subscriber_per_move_ms": last,
        "sse_every_subscriber_ms": every,
        "sse_last_subscriber_after_write_return_ms": after_return,
        "set_label_call_ms": writes,
    }
    summary: dict[str, Any] = {k: _report.summarize(v) if v else None for k, v in figures.items()}
    lf, fl = summary["sse_last_subscriber_per_move_ms"], summary["floor_pubsub_ms"]
    summary["ratios_last_subscriber_to_floor"] = (
        {"p50": _report.ratio(lf["p50"], fl["p50"]), "p99": _report.ratio(lf["p99"], fl["p99"])} if lf and fl else None
    )
    summary["counts"] = {
        "subscribers": plan.subscribers,
        "moves_measured": len(measured),
        "moves_total": len(moves),
        "missed": missed,
        "duplicates": duplicates,
        "unexpected": unexpected,
        "subscribers_with_every_move_once": complete,
        "floor_missed": len(expected - set(raw["floor"])),
        "client_missed": len(expected - set(raw["client"])),
        "moves_all_within_100ms": sum(ms <= TARGET_MS for ms in last),
        "ready_after_first_move": sum(r is None or r >= revs[0] for r in raw["ready_revs"]),
        **checks,
    }
    return summary


# -- 3. the prompt list ---------------------------------------------------------------------------


def seeded_names(prompts: int) -> list[str]:
    """Every prompt name :func:`seed` writes, sorted as the list pages them."""
    return sorted([*(f"team{i % 50}/prompt-{i}" for i in range(prompts)), NAME])


def measure_list_cold(plan: Plan, serve: HttpServer, reader: str) -> dict[str, Any]:
    """Cold pages: pages whose prompts the server has not described yet (it reads each prompt's
    description once, on the first page that shows it). The API's first page as the first list
    request since start, then further API pages and console pages, each a page never read before
    (by cursor: the name before the page). Returns the figures and the replies the baseline repeats."""
    names = seeded_names(plan.prompts)
    pages = -(-len(names) // PAGE)
    per_kind = max(0, min(plan.cold_pages, (pages - 1) // 2))
    cursors = [names[k * PAGE - 1] for k in range(1, 1 + 2 * per_kind)]
    http_ = Http(serve.port)
    headers = {**_bearer(reader), "Accept": "application/json"}
    statuses: list[int] = []
    api_cold: list[float] = []
    console_cold: list[float] = []
    try:
        first = http_.get(LIST_PATH, headers)
        if first.status != 200:
            raise RuntimeError(f"GET {LIST_PATH}: {first.status} {first.body[:200]!r}")
        page = first.json()
        if [p["name"] for p in page["prompts"]] != names[:PAGE] or page["total"] != len(names):
            raise RuntimeError("the first page is not the seeded prompts' first names")
        for cursor in cursors[:per_kind]:
            reply = http_.get(f"{LIST_PATH}&cursor={quote(cursor, safe='')}", headers)
            statuses.append(reply.status)
            api_cold.append(reply.ms)
        signed_in = http_.request("POST", "/api/v1/session", {"Content-Type": "application/json"},
                                  json.dumps({"token": reader}).encode())  # fmt: skip
        cookie = (signed_in.headers.get("set-cookie") or "").split(";")[0]
        console_headers = {"Cookie": cookie, "Accept": "text/html"}
        console = http_.get(CONSOLE_PATH, console_headers)  # page 1, described by the API's first request
        present = console.status == 200 and console.headers.get("content-type", "").startswith("text/html")
        if present:
            for cursor in cursors[per_kind:]:
                reply = http_.get(f"{CONSOLE_PATH}?cursor={quote(cursor, safe='')}", console_headers)
                statuses.append(reply.status)
                console_cold.append(reply.ms)
    finally:
        http_.close()
    first_page = {"ms": first.ms, "bytes": len(first.body), "total": page["total"], "on_page": len(page["prompts"])}
    return {
        "first_page": first_page,
        "api_cold_pages_ms": api_cold,
        "console_cold_pages_ms": console_cold,
        "non_200": sum(status != 200 for status in statuses),
        "console": {
            "present": present,
            "status": console.status,
            "first_ms": console.ms,
            "bytes": len(console.body),
            "signed_in": signed_in.status == 200 and cookie.startswith(SESSION_COOKIE),
        },
        "replies": {"list": first, "console": console if present else None, "console_headers": console_headers},
    }


def measure_list_warm(plan: Plan, serve: HttpServer, baseline: HttpServer, reader: str,
                      console_headers: dict[str, str] | None) -> dict[str, Any]:  # fmt: skip
    """Warm requests, alternating between ``promptreg serve`` and the baseline (same bytes)."""
    targets = [("list", LIST_PATH, {**_bearer(reader), "Accept": "application/json"})]
    if console_headers is not None:
        targets.append(("console", CONSOLE_PATH, console_headers))
    servers = {"serve": Http(serve.port), "baseline": Http(baseline.port)}
    out: dict[str, Any] = {}
    try:
        for kind, path, headers in targets:
            times: dict[str, list[float]] = {"serve": [], "baseline": []}
            statuses: dict[str, list[int]] = {"serve": [], "baseline": []}
            for conn in servers.values():
                conn.get(path, headers)  # the connection's first request: not measured
            for i in range(plan.list_requests):
                for which in ("serve", "baseline") if i % 2 == 0 else ("baseline", "serve"):
                    reply = servers[which].get(path, headers)
                    times[which].append(reply.ms)
                    statuses[which].append(reply.status)
            out[kind] = {
                "serve_ms": _report.summarize(times["serve"]),
                "baseline_ms": _report.summarize(times["baseline"]),
                "non_200": sum(s != 200 for v in statuses.values() for s in v),
            }
            out[kind]["ratio_p50"] = _report.ratio(out[kind]["serve_ms"]["p50"], out[kind]["baseline_ms"]["p50"])
    finally:
        for conn in servers.values():
            conn.close()
    return out


# -- seeding, output, main ------------------------------------------------------------------------


def seed(url: str, namespace: str, prompts: int) -> RedisPromptRegistry:
    """``prompts`` prompts written directly (``benchmarks/startup.py``'s layout, index included),
    then the resolve prompt through the registry API: versions 1 and 2, ``production`` -> 1."""
    populate(url, namespace, prompts)
    registry = RedisPromptRegistry.from_url(url, namespace=namespace)
    registry.create_prompt(NAME, description="serve benchmark")
    registry.add_version(NAME, f"{TEXT}one.", author="bench")
    registry.add_version(NAME, f"{TEXT}two.", author="bench")
    registry.set_label(NAME, LABEL, 1, author="bench")
    return registry


def _print_resolve(result: dict[str, Any], plan: Plan, body_bytes: int) -> None:
    rows = []
    for concurrency in plan.concurrency:
        cell = result["summary"][str(concurrency)]
        ratios = cell["ratios"]
        for which, text in (("baseline", "constant response (baseline)"), ("resolve", "promptreg resolve")):
            c = cell[which]
            own = which == "resolve"
            rows.append((concurrency, text, _report.fmt(c["requests_per_s"]), _report.fmt(c["p50_us"] / 1000),
                         _report.fmt(c["p99_us"] / 1000),
                         _report.fmt_ratio(ratios["time_per_request"] if own else None),
                         _report.fmt_ratio(ratios["p50"] if own else None),
                         _report.fmt_ratio(ratios["p99"] if own else None),
                         f"{c['server_cpu_cores']:.2f}", f"{c['load_cpu_cores']:.2f}"))  # fmt: skip
    headers = ["connections", "server", "req/s", "p50 ms", "p99 ms", "time/req vs baseline", "p50 vs baseline",
               "p99 vs baseline", "server CPU", "load-gen CPU"]  # fmt: skip
    print(_report.table(headers, rows, title="resolve vs a constant response (same framework and settings)"))
    runs = result["runs"]
    print(
        f"\nMedians of {plan.rounds} rounds per cell ({plan.seconds:g} s measured after {plan.warmup:g} s warm-up; "
        f"rounds alternate B R / R B). Body {body_bytes:,} bytes on both servers (the same bytes and headers). "
        f"time/req = baseline req/s / resolve req/s. CPU in cores (1.00 = one core busy) of the server process "
        f"(/proc) and of the load generator ({plan.load_processes} process(es), asyncio, closed loop). "
        f"Requests: {sum(r['requests'] for r in runs):,}; non-200: {sum(r['non_200'] for r in runs)}; "
        f"connection errors: {sum(r['errors'] for r in runs)}; wrong length: {sum(r['wrong_length'] for r in runs)}."
    )


def _print_stream(s: dict[str, Any], plan: Plan) -> None:
    n = plan.subscribers
    rows = []
    for key, text in (
        ("floor_pubsub_ms", "redis-py SUBSCRIBE on the change channel, 1 process (floor)"),
        ("prompt_client_on_change_ms", "PromptClient on_change, 1 process"),
        ("sse_first_subscriber_per_move_ms", f"SSE: first of {n:,} subscribers"),
        ("sse_median_subscriber_per_move_ms", f"SSE: median of {n:,} subscribers"),
        ("sse_last_subscriber_per_move_ms", f"SSE: last of {n:,} subscribers"),
        ("sse_every_subscriber_ms", "SSE: every (subscriber, move)"),
        ("sse_last_subscriber_after_write_return_ms", "SSE: last subscriber, from set_label's return"),
        ("set_label_call_ms", "set_label() call itself"),
    ):
        st = s[key]
        if st is None:
            rows.append((text, "0", "-", "-", "-"))
            continue
        rows.append((text, f"{st['n']:,}", _report.fmt(st["p50"]), _report.fmt(st["p99"]), _report.fmt(st["max"])))
    print(_report.table(["path (from just before set_label)", "samples", "p50 ms", "p99 ms", "max ms"], rows,
                        title=f"Change stream: label move -> {n:,} SSE subscribers"))  # fmt: skip
    c, r = s["counts"], s["ratios_last_subscriber_to_floor"]
    ratio = ""
    if r:
        ratio = f"last subscriber / floor: p50 {_report.fmt_ratio(r['p50'])}, p99 {_report.fmt_ratio(r['p99'])}. "
    print(
        f"\n{c['moves_measured']} measured moves (+{WARMUP_MOVES} warm-up), one every ~{plan.spacing * 1000:.0f} ms; "
        f"{c['subscriber_processes']} subscriber process(es), connected in {c['connect_seconds']:.1f} s; server "
        f"counted {c['server_subscribers_at_start']:,} subscribers; server CPU while moving: "
        f"{c['server_cpu_cores_during_moves']:.2f} cores. Moves every subscriber had within {TARGET_MS:g} ms: "
        f"{c['moves_all_within_100ms']}/{c['moves_measured']}. {ratio}Missed: {c['missed']} of "
        f"{n:,} x {c['moves_total']}; duplicates: {c['duplicates']}; unexpected ids: {c['unexpected']}; "
        f"subscribers with every move exactly once: {c['subscribers_with_every_move_once']:,}/{n:,}; closed early: "
        f"{c['closed_early']}; floor missed {c['floor_missed']}, PromptClient missed {c['client_missed']}."
    )


def _print_list(cold: dict[str, Any], warm: dict[str, Any], plan: Plan) -> None:
    first, console = cold["first_page"], cold["console"]
    rows: list[tuple[object, ...]] = [
        ("API first page, cold: the first list request since start", "serve", 1, _report.fmt(first["ms"]), "-", "-",
         "-"),
    ]  # fmt: skip
    for key, text in (("api_cold_pages_ms", "API"), ("console_cold_pages_ms", "console GET /?cursor=")):
        if cold[key]:
            st = _report.summarize(cold[key])
            rows.append((f"{text} further pages, cold: never read before", "serve", st["n"], _report.fmt(st["p50"]),
                         _report.fmt(st["p99"]), _report.fmt(st["max"]), "-"))  # fmt: skip
    for kind, text in (("list", "API first page, warm"), ("console", "console GET / (first page), warm")):
        if kind not in warm:
            continue
        w = warm[kind]
        for which, key in (("serve", "serve_ms"), ("baseline (same bytes)", "baseline_ms")):
            st = w[key]
            rows.append((text, which, st["n"], _report.fmt(st["p50"]), _report.fmt(st["p99"]), _report.fmt(st["max"]),
                         _report.fmt_ratio(w["ratio_p50"]) if key == "serve_ms" else "-"))  # fmt: skip
    headers = ["request", "server", "samples", "p50 ms", "p99 ms", "max ms", "p50 vs baseline"]
    print(_report.table(headers, rows, title=f"Prompt list with {first['total']:,} prompts ({PAGE} per page)"))
    note = (
        f"the console's GET / answered {console['status']} ({console['bytes']:,} bytes of HTML, signed in by cookie)"
        if console["present"]
        else f"the console's GET / answered {console['status']}: no page to time, only the API is timed"
    )
    print(
        f"\nRound trip on one keep-alive connection (http.client), request written to last byte. Cold: the server "
        f"reads each prompt's description once, on the first page showing it. API first page {first['bytes']:,} "
        f"bytes; {note}. Warm: {plan.list_requests} requests per server, alternating; non-200: "
        f"{cold['non_200'] + sum(w['non_200'] for w in warm.values())}."
    )


def _versions() -> dict[str, str]:
    out = {}
    for package in ("starlette", "uvicorn", "h11", "httptools", "uvloop"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    out["uvicorn_http"] = "httptools" if importlib.util.find_spec("httptools") else "h11"
    out["uvicorn_loop"] = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return out


def run(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    """Every measurement; the figures (JSON-ready)."""
    tokens = {"reader": new_token(), "writer": new_token()}
    reader = tokens["reader"]
    out: dict[str, Any] = {}
    with _harness.redis_url(args) as url, tempfile.TemporaryDirectory(prefix="promptreg-bench-serve-") as tmp:
        workdir = Path(tmp)
        out["redis_server"] = _harness.server_version(url)
        _raise_nofile(plan.subscribers + 512)
        started = time.perf_counter()
        registry = seed(url, args.namespace, plan.prompts)
        out["seed_seconds"] = time.perf_counter() - started
        try:
            with serve_process(url, args.namespace, tokens, workdir) as serve:
                print("  promptreg serve is up; prompt list, cold", file=sys.stderr, flush=True)
                cold = measure_list_cold(plan, serve, reader)
                replies = cold.pop("replies")
                probe = Http(serve.port)
                resolved = probe.get(RESOLVE_PATH, {**_bearer(reader), "Accept": "application/json"})
                probe.close()
                if resolved.status != 200:
                    raise RuntimeError(f"GET {RESOLVE_PATH}: {resolved.status} {resolved.body[:200]!r}")
                entries = [baseline_entry(RESOLVE_PATH, resolved), baseline_entry(LIST_PATH, replies["list"])]
                if replies["console"] is not None:
                    entries.append(baseline_entry(CONSOLE_PATH, replies["console"]))
                with baseline_process(entries, workdir) as baseline:
                    print("  prompt list, warm", file=sys.stderr, flush=True)
                    console_headers = replies["console_headers"] if replies["console"] is not None else None
                    warm = measure_list_warm(plan, serve, baseline, reader, console_headers)
                    print("  resolve", file=sys.stderr, flush=True)
                    out["resolve"] = measure_resolve(plan, serve, baseline, reader, len(resolved.body))
                    out["resolve"]["body_bytes"] = len(resolved.body)
                out["list"] = {"cold": cold, "warm": warm}
                print(f"  change stream, {plan.subscribers:,} subscribers", file=sys.stderr, flush=True)
                out["stream"] = measure_stream(plan, serve, url, args.namespace, reader, registry)
        finally:
            registry.close()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    plan = _plan(args)
    wall = time.perf_counter()
    load_at_start = list(os.getloadavg())
    figures = run(args, plan)
    env = _report.environment(figures.pop("redis_server"))
    env["load_average_at_start"] = load_at_start
    env["load_average_at_end"] = list(os.getloadavg())
    env["serve_stack"] = _versions()
    stack = env["serve_stack"]
    print(_report.environment_line(env))
    print(f"Load average (1/5/15 min) at the start: {'/'.join(f'{x:.2f}' for x in load_at_start)}; at the end: above.")
    print(_report.NOISE_NOTE)
    print(
        f"Stack: Starlette {stack['starlette']} on uvicorn {stack['uvicorn']} (http: {stack['uvicorn_http']}, "
        f"loop: {stack['uvicorn_loop']}), one process, one worker, access log on (to a file) for both servers. "
        f"Registry: {plan.prompts:,} prompts + the resolve prompt (seeded in {figures['seed_seconds']:.1f} s).\n"
    )
    _print_resolve(figures["resolve"], plan, figures["resolve"]["body_bytes"])
    print()
    _print_stream(figures["stream"], plan)
    print()
    _print_list(figures["list"]["cold"], figures["list"]["warm"], plan)
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s")
    _report.write_json(
        args.json,
        {
            "benchmark": "serve",
            "quick": plan.quick,
            "environment": env,
            "config": {**plan.__dict__, "warmup_moves": WARMUP_MOVES, "resolve_path": RESOLVE_PATH},
            **figures,
            "wall_seconds": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
