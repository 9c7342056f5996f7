"""What fleet presence costs the server, and how fast a write is confirmed fleet-wide.

1. **Server cost.** ``--reporters`` simulated clients (default 1,000) report every
   ``--interval`` seconds (default 5, the client's default) for ``--seconds``: the exact
   ``SET ... PX`` + ``ZADD`` pipeline a :class:`promptreg.PromptClient` sends
   (:func:`promptreg.registry.redis.fleet.report`), spread evenly over the interval, from a few threads (so a
   few connections, not 1,000: the per-connection cost of idle sockets is not measured). The
   server's CPU (``INFO cpu``, its own process) is compared with the same window at rest; commands
   per second and the memory of the records come from ``INFO commandstats`` / ``INFO memory``; the
   time of one ``fleet()`` read of every member is timed too.
2. **Confirmation.** ``--clients`` real client processes (default 20), then ``--moves`` label moves:
   the time from calling ``set_label`` to a complete ``wait_for_fleet`` (every process acknowledged).

Run: ``python -m benchmarks.fleet [--quick] [--json PATH] [--url redis://...]``.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from typing import Any

import redis

from benchmarks._harness import Children, parse_args, redis_url, run_main, server_version
from benchmarks._report import environment, environment_line, fmt, summarize, table, write_json
from promptreg.registry.fleet import FleetMember
from promptreg.registry.redis.fleet import report
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.store import RedisPromptRegistry

NAME, LABEL = "bench-fleet", "production"
THREADS = 4


def _cpu(conn: redis.Redis) -> float:
    info: dict[str, Any] = conn.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _calls(conn: redis.Redis) -> int:
    stats: dict[str, Any] = conn.info("commandstats")
    return sum(int(value["calls"]) for value in stats.values())


def _usec(conn: redis.Redis, commands: Sequence[str]) -> tuple[int, float]:
    """Calls of ``commands`` and the server's time inside them (``INFO commandstats``), in us."""
    stats: dict[str, Any] = conn.info("commandstats")
    picked = [stats.get(f"cmdstat_{name}", {}) for name in commands]
    return sum(int(s.get("calls", 0)) for s in picked), sum(float(s.get("usec", 0)) for s in picked)


def _member(n: int, rev: int, interval: float) -> FleetMember:
    now = datetime.now(UTC)
    return FleetMember(
        client_id=f"bench-host-{n % 50}:{10000 + n}:{n:08x}", client_name=f"service-{n % 10}",
        host=f"bench-host-{n % 50}", pid=10000 + n, label=LABEL, library_version="0.1.0", state="live", rev=rev,
        started_at=now, last_seen=now, report_interval=interval,
    )  # fmt: skip


def _reporters(url: str, keys: Keyspace, count: int, interval: float, seconds: float) -> int:
    """Run ``count`` simulated reporters for ``seconds``; returns the reports sent."""
    stop = time.monotonic() + seconds
    sent = [0] * THREADS

    def work(index: int) -> None:
        conn = redis.Redis.from_url(url)
        mine = list(range(index, count, THREADS))
        spacing = interval / max(1, len(mine))  # each reporter once per interval, spread evenly
        next_at = time.monotonic() + spacing * index / THREADS
        try:
            while True:
                for n in mine:
                    now = time.monotonic()
                    if now >= stop:
                        return
                    if next_at > now:
                        time.sleep(next_at - now)
                    report(conn, keys, _member(n, 1, interval))
                    sent[index] += 1
                    next_at += spacing
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 30)
    return sum(sent)


def server_cost(url: str, namespace: str, count: int, interval: float, seconds: float) -> dict[str, Any]:
    keys = Keyspace(namespace)
    conn = redis.Redis.from_url(url)
    registry = RedisPromptRegistry.from_url(url, namespace=namespace)
    try:
        memory_before = int(conn.info("memory")["used_memory"])
        cpu0 = _cpu(conn)
        time.sleep(seconds)  # the same window at rest
        idle_cpu = _cpu(conn) - cpu0
        cpu0, calls0, started = _cpu(conn), _calls(conn), time.monotonic()
        inside0 = _usec(conn, ("set", "zadd"))
        sent = _reporters(url, keys, count, interval, seconds)
        wall = time.monotonic() - started
        busy_cpu = _cpu(conn) - cpu0
        inside1 = _usec(conn, ("set", "zadd"))
        calls = _calls(conn) - calls0 - 3  # minus the INFO calls of this measurement
        memory_after = int(conn.info("memory")["used_memory"])
        reads = []
        for _ in range(5):
            t0 = time.perf_counter()
            members = registry.fleet()
            reads.append(time.perf_counter() - t0)
        return {
            "reporters": count,
            "interval_s": interval,
            "window_s": round(wall, 2),
            "reports_per_s": round(sent / wall, 1),
            "commands_per_s": round(calls / wall, 1),
            "server_cpu_percent_at_rest": round(100 * idle_cpu / seconds, 2),
            "server_cpu_percent_reporting": round(100 * busy_cpu / wall, 2),
            "server_cpu_us_per_report": round(1e6 * max(0.0, busy_cpu - idle_cpu * wall / seconds) / max(1, sent), 1),
            "command_us_per_report": round((inside1[1] - inside0[1]) / max(1, sent), 2),
            "memory_bytes": memory_after - memory_before,
            "memory_bytes_per_client": round((memory_after - memory_before) / count),
            "members_listed": len(members),
            "fleet_read_ms": summarize([r * 1000 for r in reads]),
        }
    finally:
        registry.drop_namespace()
        registry.close()
        conn.close()


def client_worker(conn: Connection, url: str, namespace: str, index: int) -> None:
    """A service process: one PromptClient (default report interval) until told to stop."""
    from promptreg.client import PromptClient

    with PromptClient(url, namespace=namespace, client_name=f"bench-{index}", start_timeout=60) as prompts:
        if not prompts.wait_ready(60):
            raise RuntimeError(f"client not ready: {prompts.status()}")
        conn.send(("ready", prompts.client_id))
        if conn.recv()[0] != "stop":
            raise ValueError("expected ('stop',)")
    conn.send(("stopped", os.getpid()))


def confirmation(url: str, namespace: str, clients: int, moves: int) -> dict[str, Any]:
    registry = RedisPromptRegistry.from_url(url, namespace=namespace)
    try:
        registry.create_prompt(NAME)
        for n in (1, 2):
            registry.add_version(NAME, f"v{n}")
        registry.set_label(NAME, LABEL, 1)
        with Children() as children:
            for index in range(clients):
                children.start(client_worker, url, namespace, index)
            ids = set(children.expect_all("ready", 120))
            deadline = time.monotonic() + 30
            while {m.client_id for m in registry.fleet()} != ids and time.monotonic() < deadline:
                time.sleep(0.05)
            totals, waits, incomplete = [], [], 0
            for move in range(moves):
                time.sleep(0.2)  # let the previous move's acknowledgements settle
                started = time.perf_counter()
                event = registry.set_label(NAME, LABEL, 1 + (move + 1) % 2)
                result = registry.wait_for_fleet(event.rev, timeout=10)
                totals.append((time.perf_counter() - started) * 1000)
                waits.append(result.elapsed * 1000)
                incomplete += 0 if result.complete and len(result.reached) == clients else 1
            children.send_all(("stop",))
            children.expect_all("stopped", 60)
        return {
            "clients": clients,
            "moves": moves,
            "incomplete": incomplete,
            "write_to_confirmed_ms": summarize(totals),
            "wait_for_fleet_ms": summarize(waits),
        }
    finally:
        registry.drop_namespace()
        registry.close()


def main(argv: Sequence[str] | None = None) -> int:
    def extra(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--reporters", type=int, default=None, help="simulated clients (default 1000)")
        parser.add_argument("--interval", type=float, default=None, help="their report interval (default 5 s)")
        parser.add_argument("--seconds", type=float, default=None, help="measuring window (default 20 s)")
        parser.add_argument("--clients", type=int, default=None, help="real client processes (default 20)")
        parser.add_argument("--moves", type=int, default=None, help="label moves to confirm (default 30)")

    args = parse_args(__doc__.splitlines()[0], argv, extra)
    reporters = args.reporters or (200 if args.quick else 1000)
    interval = args.interval or (1.0 if args.quick else 5.0)
    seconds = max(interval, args.seconds or (2.0 if args.quick else 20.0))  # every reporter reports
    clients = args.clients or (3 if args.quick else 20)
    moves = args.moves or (5 if args.quick else 30)
    wall = time.monotonic()
    with redis_url(args) as url:
        env = environment(server_version(url))
        cost = server_cost(url, args.namespace + ".cost", reporters, interval, seconds)
        confirmed = confirmation(url, args.namespace, clients, moves)
    print(environment_line(env))
    print(env["note"])
    print()
    print(table(
        ["reporters", "interval s", "reports/s", "commands/s", "server CPU % at rest", "server CPU % reporting",
         "CPU us/report", "in commands us/report", "memory KB", "bytes/client", "fleet() read p50 ms"],
        [[cost["reporters"], fmt(cost["interval_s"]), fmt(cost["reports_per_s"]), fmt(cost["commands_per_s"]),
          fmt(cost["server_cpu_percent_at_rest"]), fmt(cost["server_cpu_percent_reporting"]),
          fmt(cost["server_cpu_us_per_report"]), fmt(cost["command_us_per_report"]),
          fmt(cost["memory_bytes"] / 1024), cost["memory_bytes_per_client"], fmt(cost["fleet_read_ms"]["p50"])]],
        title="Presence: server cost of simulated reporters",
    ))  # fmt: skip
    print()
    total, wait = confirmed["write_to_confirmed_ms"], confirmed["wait_for_fleet_ms"]
    print(table(
        ["client processes", "moves", "incomplete", "write->confirmed p50 ms", "p99 ms", "max ms",
         "wait_for_fleet p50 ms"],
        [[clients, moves, confirmed["incomplete"], fmt(total["p50"]), fmt(total["p99"]), fmt(total["max"]),
          fmt(wait["p50"])]],
        title="Confirmation: set_label() -> wait_for_fleet() complete",
    ))  # fmt: skip
    write_json(args.json, {
        "benchmark": "fleet", "quick": args.quick, "environment": env, "server_cost": cost,
        "confirmation": confirmed, "wall_seconds": round(time.monotonic() - wall, 1),
    })  # fmt: skip
    return 0 if confirmed["incomplete"] == 0 else 1


if __name__ == "__main__":
    run_main(main)
