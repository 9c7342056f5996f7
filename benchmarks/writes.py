"""Write throughput: ``add_version`` and ``set_label`` with 1 and 4 writer processes.

Each writer is its own process with its own connection and its own prompt; all of them start at the
same instant and write back to back for a fixed time. The floor is the cheapest round trip from the
same processes: ``PING`` on Redis, ``SELECT 1`` on PostgreSQL (on a second connection of the
writer), so the ratio shows what one write (Redis: one Lua script; PostgreSQL: one transaction;
each validates, writes, appends the audit entry, bumps the revision and publishes) costs on top of
the network. Latency is per call (``time.monotonic_ns`` around it); throughput is all calls of all
writers over the wall time. ``--backend both`` measures PostgreSQL, then Redis, in one run; without
``--url`` both servers are started here (no persistence / ``fsync=off``) and stopped at the end.

    python -m benchmarks.writes [--quick] [--json PATH] [--url redis://... | postgresql://...]
        [--backend redis|postgres|both] [--sentinel]
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/writes.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness, _report
from promptreg.registry import PromptRegistry, PromptRegistryFactory

FLOORS = {"redis": "ping", "postgres": "select_1"}
"""The floor operation of each backend: its cheapest round trip."""
WRITES = ("add_version", "set_label")
LABEL = "production"
TEXT = (
    "You are a careful support agent for {{product}}. Answer the customer's question in {{language}}, "
    "in at most three short paragraphs. Quote the relevant policy section when there is one, never "
    "invent order numbers, and hand over to a human when the customer asks for one. " * 2
)
WARMUP_CALLS = 20


def _operations(backend: str) -> tuple[str, ...]:
    return (FLOORS[backend], *WRITES)


def _operation(registry: PromptRegistry, op: str, name: str, extra: list[Any]) -> Callable[[], object]:
    if op == "ping":
        return lambda: registry.redis.ping()  # type: ignore[attr-defined]
    if op == "select_1":
        if not extra:
            extra.append(registry.connect())  # type: ignore[attr-defined]
        cursor = extra[0]
        return lambda: cursor.execute("SELECT 1").fetchone()
    if op == "add_version":
        return lambda: registry.add_version(name, TEXT, author="bench")
    if op == "set_label":
        state = {"next": 2}

        def move() -> object:
            version = state["next"]
            state["next"] = 3 - version  # 1 <-> 2: every call really moves the label
            return registry.set_label(name, LABEL, version, author="bench")

        return move
    raise ValueError(op)


def _writer(conn: Connection, url: str, namespace: str, name: str) -> None:
    """Child: on ``("go", op, start_ns, end_ns)`` call ``op`` back to back from start to end."""
    extra: list[Any] = []  # the SELECT 1 connection, opened once
    with PromptRegistryFactory.from_url(url, namespace=namespace) as registry:
        conn.send(("ready", None))
        while True:
            command = conn.recv()
            if command[0] == "stop":
                for other in extra:
                    other.close()
                return
            _, op, start_ns, end_ns = command
            call = _operation(registry, op, name, extra)
            for _ in range(WARMUP_CALLS if op != "add_version" else 2):
                call()
            clock = time.monotonic_ns
            while clock() < start_ns:
                time.sleep(0.0005)
            latencies: list[int] = []
            first = clock()
            while True:  # at least one call, also when the warm-up ran past the end (a loaded machine)
                before = clock()
                call()
                now = clock()
                latencies.append(now - before)
                if now >= end_ns:
                    break
            conn.send(("done", {"first_ns": first, "last_ns": now, "latencies_ns": latencies}))


def _prepare(url: str, namespace: str, writers: int) -> list[str]:
    names = [f"bench-writes-{writers}w-{i}" for i in range(writers)]
    with PromptRegistryFactory.from_url(url, namespace=namespace) as registry:
        for name in names:
            registry.create_prompt(name, description="writes benchmark")
            registry.add_version(name, TEXT, author="bench")
            registry.add_version(name, TEXT + " (v2)", author="bench")
            registry.set_label(name, LABEL, 1, author="bench")
    return names


def _measure(url: str, namespace: str, writers: int, seconds: float, rounds: int) -> dict[str, dict[str, Any]]:
    """All operations with ``writers`` processes; ``rounds`` alternating passes of ``seconds`` each."""
    names = _prepare(url, namespace, writers)
    operations = _operations(_harness.backend_of(url))
    totals: dict[str, dict[str, Any]] = {op: {"latencies_ns": [], "ops": 0, "wall_ns": 0} for op in operations}
    with _harness.Children() as children:
        for name in names:
            children.start(_writer, url, namespace, name)
        children.expect_all("ready", timeout=30)
        for _ in range(rounds):
            for op in operations:
                start = time.monotonic_ns() + 200_000_000  # every writer has warmed up by then
                end = start + int(seconds * 1e9)
                children.send_all(("go", op, start, end))
                done = children.expect_all("done", timeout=seconds + 60)
                cell = totals[op]
                for part in done:
                    cell["latencies_ns"].extend(part["latencies_ns"])
                    cell["ops"] += len(part["latencies_ns"])
                cell["wall_ns"] += max(p["last_ns"] for p in done) - min(p["first_ns"] for p in done)
        children.send_all(("stop",))
    return totals


def _result(backend: str, op: str, writers: int, cell: dict[str, Any], floor: dict[str, Any] | None) -> dict[str, Any]:
    latency_us = _report.summarize([ns / 1000 for ns in cell["latencies_ns"]])
    ops_per_s = cell["ops"] / (cell["wall_ns"] / 1e9)
    result: dict[str, Any] = {
        "backend": backend,
        "operation": op,
        "writers": writers,
        "ops": cell["ops"],
        "seconds": cell["wall_ns"] / 1e9,
        "ops_per_s": ops_per_s,
        "latency_us": latency_us,
    }
    if floor is not None:
        result["p50_ratio_to_floor"] = _report.ratio(latency_us["p50"], floor["latency_us"]["p50"])
        result["throughput_ratio_to_floor"] = _report.ratio(ops_per_s, floor["ops_per_s"])
    return result


def _options(parser: Any) -> None:
    _harness.add_backend_option(parser)
    parser.add_argument(
        "--sentinel",
        action="store_true",
        help="Redis through a private Sentinel deployment (primary, 2 replicas, 3 sentinels): every write "
        "asks the sentinels before and after it (registry/redis/sentinel.py); the floor is PING on the primary",
    )


@contextlib.contextmanager
def _url(args: Any, backend: str) -> Iterator[str]:
    if args.sentinel and backend == "redis" and not args.url:
        with _harness.sentinel_deployment() as deployment:
            yield deployment.url()
        return
    with _harness.backend_url(args, backend) as url:
        yield url


def _side_by_side(results: list[dict[str, Any]]) -> str:
    """PostgreSQL and Redis per (operation, writers): calls/s, p50/p99, and PostgreSQL / Redis."""
    cells = {(r["backend"], r["operation"], r["writers"]): r for r in results}
    rows = []
    for writers in (1, 4):
        for op in ("floor", *WRITES):
            pg = cells[("postgres", FLOORS["postgres"] if op == "floor" else op, writers)]
            rd = cells[("redis", FLOORS["redis"] if op == "floor" else op, writers)]
            name = "floor (SELECT 1 / PING)" if op == "floor" else op
            rows.append((
                name, writers, _report.fmt(pg["ops_per_s"]), _report.fmt(rd["ops_per_s"]),
                _report.fmt_ratio(_report.ratio(pg["ops_per_s"], rd["ops_per_s"])),
                _report.fmt(pg["latency_us"]["p50"]), _report.fmt(rd["latency_us"]["p50"]),
                _report.fmt(pg["latency_us"]["p99"]), _report.fmt(rd["latency_us"]["p99"]),
                _report.fmt_ratio(pg.get("p50_ratio_to_floor")), _report.fmt_ratio(rd.get("p50_ratio_to_floor")),
            ))  # fmt: skip
    headers = ["operation", "writers", "PG calls/s", "Redis calls/s", "PG / Redis calls/s", "PG p50 us",
               "Redis p50 us", "PG p99 us", "Redis p99 us", "PG p50 / floor", "Redis p50 / floor"]  # fmt: skip
    return _report.table(headers, rows, title="PostgreSQL and Redis side by side (same run)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    backends = _harness.backends(args)
    seconds, rounds = (0.3, 1) if args.quick else (3.0, 2)  # --quick: the smoke run
    wall = time.perf_counter()
    results: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    for backend in backends:
        with _url(args, backend) as url:
            versions[backend] = _harness.server_version(url)
            floor_op = FLOORS[backend]
            for writers in (1, 4):
                cells = _measure(url, args.namespace, writers, seconds, rounds)
                floor = _result(backend, floor_op, writers, cells[floor_op], None)
                results.append(floor)
                results += [_result(backend, op, writers, cells[op], floor) for op in WRITES]
    env = _report.environment(versions.get("redis", "-"), versions.get("postgres"))
    env["load_average_at_end"] = list(os.getloadavg())
    rows = [
        (
            r["backend"],
            r["operation"] + (" (floor)" if r["operation"] in FLOORS.values() else ""),
            r["writers"],
            f"{r['ops']:,}",
            _report.fmt(r["ops_per_s"]),
            _report.fmt(r["latency_us"]["p50"]),
            _report.fmt(r["latency_us"]["p99"]),
            _report.fmt(r["latency_us"]["max"]),
            _report.fmt_ratio(r.get("p50_ratio_to_floor")),
        )
        for r in results
    ]
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    print(
        f"Private servers without persistence (redis-server: no AOF, no RDB; PostgreSQL: fsync=off, "
        f"synchronous_commit=off) unless --url; {rounds} round(s) x {seconds:g} s per cell; each writer process "
        f"has its own prompt and connection.\n"
    )
    print(
        _report.table(
            ["backend", "operation", "writers", "calls", "calls/s", "p50 us", "p99 us", "max us", "p50 / floor"],
            rows,
            title="Write throughput (floor: PING / SELECT 1 round trip from the same processes)",
        )
    )
    if len(backends) > 1:
        print()
        print(_side_by_side(results))
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s")
    _report.write_json(
        args.json,
        {
            "benchmark": "writes",
            "quick": args.quick,
            "environment": env,
            "config": {
                "seconds_per_cell": seconds,
                "rounds": rounds,
                "writers": [1, 4],
                "text_chars": len(TEXT),
                "backends": backends,
            },
            "floor": FLOORS[backends[0]],
            "floors": {b: FLOORS[b] for b in backends},
            "results": results,
            "wall_seconds": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
