"""Resolve under load: the HTTP load generator process and the alternating rounds against the baseline.

The load generator is a forked child (:func:`load_worker`): asyncio ``Protocol`` connections with
hand-rolled HTTP/1.1 keep-alive, one request in flight per connection (closed loop), latency from
the request's write to its last byte (``time.monotonic_ns``); it reports its own CPU time, and
:func:`load_run` reads the server's from ``/proc``, so the figures show which side was busy.
:func:`measure_resolve` runs ``promptreg serve``'s resolve and the baseline's constant response at
each concurrency, rounds alternating (B R, R B, ...), and summarizes them as medians across rounds.
"""

from __future__ import annotations

import array
import asyncio
import functools
import statistics
import time
from multiprocessing.connection import Connection
from typing import Any

from benchmarks import _harness, _report
from benchmarks._serve_http import HttpServer, bearer, request_bytes
from benchmarks._serve_plan import RESOLVE_PATH, Plan


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
    headers = {**bearer(reader), "Accept": "application/json"}
    requests = {"baseline": request_bytes(RESOLVE_PATH, baseline.port, headers),
                "resolve": request_bytes(RESOLVE_PATH, serve.port, headers)}  # fmt: skip
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
