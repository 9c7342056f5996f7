"""Propagation: from a label move's publishing command to ``on_change`` in every one of N client processes.

N PromptClient processes (default 50) and, in the same run, N raw subscriber processes (the floor: a
message of the same size on the same path with nothing of promptreg in it). The two fleets take
turns, block by block, so drift on a noisy machine hits both alike. A move starts only when every
process has the previous one. Each client counts the moves it saw; a missed move is reported. Then
a fleet-wide rollback: from the ``rollback()`` call until ``get()`` in every client process returns
the rolled-back version. Beside it, the staleness window of a 60 s TTL cache (analytic, not
measured: see :func:`ttl_staleness`). Process internals: ``benchmarks/_fleet.py``; where they connect:
``benchmarks/_propagation_paths.py``; the figures and tables: ``benchmarks/_propagation_report.py``.

**What is timed.** A move's latency in a process is its arrival stamp there (``CLOCK_MONOTONIC``,
the first thing the process does with the message) minus the start of the move's clock in the
parent, which is the same point for both fleets: the moment the command that publishes is handed to
redis-py (psycopg on PostgreSQL), stamped at the driver's entry (:class:`benchmarks._fleet.PublishClock`).
For a ``set_label`` that is its write script's ``FCALL`` (or, on Sentinel, the ``PUBLISH`` sent once
the write is confirmed; on PostgreSQL the statement calling ``pg_notify``, its ``COMMIT`` following),
for the floor its ``PUBLISH``. What ``set_label`` does in Python before its command is left out (its
median is printed beside the table); what the server does for the write before it publishes counts
against promptreg. The rollback's figures are from the ``rollback()`` call.

``--topology`` (Redis): ``primary`` (one server; floor: ``PUBLISH``/``SUBSCRIBE``), ``replicas``
(a primary, two replicas, three sentinels; clients ``read_from=replica``, raw subscribers spread
over the replicas, the writer and the raw ``PUBLISH`` on the primary) or ``cluster`` (three masters;
clients start from different nodes and ``SSUBSCRIBE`` on the slot's owner; floor:
``SPUBLISH``/``SSUBSCRIBE``). ``--backend postgres`` runs on PostgreSQL (floor: psycopg
``LISTEN``/``NOTIFY``; 3 connections per client pair: max_connections >= 3 N + 5 on a ``--url``);
``both`` runs PostgreSQL, then Redis, in one run. Without ``--url`` every server is started here on
free 127.0.0.1 ports and stopped at the end; a ``--url`` (``redis://``, ``redis+sentinel://``,
``redis+cluster://``, ``postgresql://``) is used as it is and its namespace deleted at the end.

    python -m benchmarks.propagation [--clients 50] [--moves 200] [--topology primary|replicas|cluster]
        [--backend redis|postgres|both] [--url URL] [--quick] [--json PATH] [--plot PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/propagation.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _fleet, _harness, _plot, _report
from benchmarks._propagation_paths import Paths, cluster_url, discover, node_url, url_topology
from benchmarks._propagation_report import (
    TTL_SECONDS,
    counts,
    print_run,
    side_by_side,
    summary_of,
    ttl_staleness,
)
from promptreg.registry import PromptRegistryFactory

__all__ = ["Paths", "discover", "main", "run", "ttl_staleness"]
_node_url, _cluster_url = node_url, cluster_url  # the names the tests know

NAME = "bench-propagation"
LABEL = "production"
WARMUP_MOVES = 3
DEFAULT_PLOT = _harness.REPO_ROOT / "docs" / "propagation_cdf.png"
TOPOLOGIES = ("primary", "replicas", "cluster")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=None, help="client processes (default 50; --quick: 10)")
    parser.add_argument("--moves", type=int, default=None, help="measured moves per fleet (default 200; quick 20)")
    parser.add_argument("--rollbacks", type=int, default=None, help="fleet-wide rollbacks (default 5; quick 2)")
    parser.add_argument("--plot", type=Path, default=None, help=f"CDF PNG (default {DEFAULT_PLOT}, not with --quick)")
    parser.add_argument("--no-plot", action="store_true", help="write no plot")
    parser.add_argument(
        "--topology", choices=TOPOLOGIES, default=None,
        help="Redis topology (default: the one --url names, else primary): clients on the primary, on "
        "replicas (Sentinel, read_from=replica) or on cluster nodes (SSUBSCRIBE on the slot owner)",
    )  # fmt: skip
    _harness.add_backend_option(parser)


class Fleets:
    """Both fleets, the registry and the raw publisher; every process stopped by :meth:`close`."""

    def __init__(self, paths: Paths, namespace: str, clients: int) -> None:
        self.paths = paths
        self.clients = clients
        self.registry = PromptRegistryFactory.from_url(paths.writer_url, namespace=namespace)
        self.raw = _fleet.RawPublisher(paths.raw_kind, paths.writer_url, paths.raw_addresses[0], paths.raw_channel)
        self.clock = _fleet.PublishClock()
        self.leads_us: list[float] = []
        """Per measured client move: set_label's time in Python before its publishing command."""
        self.unaligned = {"client": 0, "raw": 0}
        """Moves whose publishing command was not seen (timed from the call instead): should be 0."""
        self.client_sem = _harness.FORK.Semaphore(0)
        self.raw_sem = _harness.FORK.Semaphore(0)
        self.children = _harness.Children()
        self.current = 1
        self.seq = 0
        self.client_conns: list[Any] = []
        self.raw_conns: list[Any] = []

    def start(self, namespace: str) -> None:
        paths = self.paths
        self.registry.create_prompt(NAME, description="propagation benchmark")
        self.registry.add_version(NAME, "Version one of {{thing}}.", author="bench")
        self.registry.add_version(NAME, "Version two of {{thing}}.", author="bench")
        self.registry.set_label(NAME, LABEL, 1, author="bench")
        for i in range(self.clients):
            url = paths.client_urls[i % len(paths.client_urls)]
            self.client_conns.append(
                self.children.start(_fleet.client_worker, url, namespace, NAME, LABEL, self.client_sem)
            )
        for i in range(self.clients):
            address = paths.raw_addresses[i % len(paths.raw_addresses)]
            self.raw_conns.append(
                self.children.start(_fleet.raw_worker, paths.raw_kind, address, paths.raw_channel, self.raw_sem)
            )
        self.children.expect_all("ready", timeout=120)

    def move_client(self) -> tuple[int, int, int, int]:
        """One label move; waits until every client has it. ``(t0_ns, rev, version, missing)``, ``t0``
        when its publishing command was sent (module docstring)."""
        target = 3 - self.current
        called = self.clock.start()
        event = self.registry.set_label(NAME, LABEL, target, author="bench")
        t0 = self._started("client", called)
        self.leads_us.append((t0 - called) / 1000)
        self.current = target
        return t0, event.rev, target, _fleet.await_all(self.client_sem, self.clients, timeout=30)

    def move_raw(self) -> tuple[int, int, int]:
        """One raw message; waits until every subscriber has it. ``(t0_ns, seq, missing)``."""
        self.seq += 1
        payload = _fleet.raw_payload(self.seq)
        called = self.clock.start()
        self.raw.publish(payload)
        return self._started("raw", called), self.seq, _fleet.await_all(self.raw_sem, self.clients, timeout=30)

    def _started(self, fleet: str, called: int) -> int:
        stamp = self.clock.stamp
        if stamp is None:  # no publishing command seen (a driver path the clock does not know)
            self.unaligned[fleet] += 1
            return called
        return stamp

    def rollback(self) -> dict[str, Any]:
        """``rollback()`` until every client's ``get()`` serves the rolled-back version."""
        target = 3 - self.current
        self.children.send_all(("watch", target, 30.0), self.client_conns)
        self.children.expect_all("watching", timeout=60, conns=self.client_conns)
        time.sleep(0.02)  # let the 50 processes just woken by "watch" go idle, as before a move
        t0 = time.monotonic_ns()
        event = self.registry.rollback(NAME, LABEL, author="bench", reason="benchmark")
        self.current = target
        _fleet.await_all(self.client_sem, self.clients, timeout=30)  # every on_change has fired
        self.children.send_all(("report",), self.client_conns)
        served = self.children.expect_all("served", timeout=60, conns=self.client_conns)
        if event.version != target:
            raise RuntimeError(f"rollback went to {event.version}, expected {target}")
        times = [(t - t0) / 1e6 for t in served if t is not None]
        return {"rev": event.rev, "t0_ns": t0, "served_ms": times, "not_served": sum(t is None for t in served)}

    def finish(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        self.children.send_all(("finish",), self.client_conns)
        clients = self.children.expect_all("events", timeout=60, conns=self.client_conns)
        self.raw.publish(_fleet.RAW_STOP)
        raws = self.children.expect_all("events", timeout=60, conns=self.raw_conns)
        return clients, raws

    def close(self, *, failed: bool = False) -> None:
        self.children.close(grace=0.0 if failed else 2.0)
        self.registry.close()
        self.raw.close()


def _latencies(moves: list[tuple[int, int]], stamps_by_process: list[dict[int, int]]) -> dict[str, Any]:
    """Per (move, process) latency in ms; moves are ``(t0_ns, key)``, stamps map key -> arrival ns."""
    samples: list[float] = []
    last_per_move: list[float] = []
    missed = [0] * len(stamps_by_process)
    for t0, key in moves:
        arrivals = []
        for index, stamps in enumerate(stamps_by_process):
            arrival = stamps.get(key)
            if arrival is None:
                missed[index] += 1
            else:
                arrivals.append((arrival - t0) / 1e6)
        samples += arrivals
        if arrivals:
            last_per_move.append(max(arrivals))
    return {"samples_ms": samples, "last_per_move_ms": last_per_move, "missed_per_process": missed}


def run(target: Paths | str, namespace: str, clients: int, moves: int, rollbacks: int, block: int) -> dict[str, Any]:
    """One measured run on ``target`` (a :class:`Paths`, or a URL: its own topology); the raw figures."""
    paths = target if isinstance(target, Paths) else discover(target, namespace, url_topology(target))
    fleets = Fleets(paths, namespace, clients)
    rng = random.Random(5)
    client_moves: list[tuple[int, int]] = []
    raw_moves: list[tuple[int, int]] = []
    waits_missing = {"client": 0, "raw": 0}
    started = time.perf_counter()
    try:
        fleets.start(namespace)
        startup_s = time.perf_counter() - started
        with fleets.clock.installed():  # after the children forked: the parent's commands only
            for _ in range(WARMUP_MOVES):  # first fetch of version 2, connection warm-up: not measured
                fleets.move_client()
                fleets.move_raw()
            fleets.leads_us.clear()
            while len(client_moves) < moves:
                for _ in range(min(block, moves - len(raw_moves))):
                    t0, seq, missing = fleets.move_raw()
                    raw_moves.append((t0, seq))
                    waits_missing["raw"] += missing
                    time.sleep(rng.uniform(0.002, 0.010))
                for _ in range(min(block, moves - len(client_moves))):
                    t0, rev, _version, missing = fleets.move_client()
                    client_moves.append((t0, rev))
                    waits_missing["client"] += missing
                    time.sleep(rng.uniform(0.002, 0.010))
        rollback_runs = []
        for _ in range(rollbacks):
            rollback_runs.append(fleets.rollback())
            time.sleep(0.05)
        client_reports, raw_reports = fleets.finish()
        final_version = fleets.current
    except BaseException:
        fleets.close(failed=True)
        raise
    fleets.close()
    client_stamps = [{rev: t for t, rev, _v in r["stamps"]} for r in client_reports]
    raw_stamps = [{seq: t for t, seq in r["stamps"]} for r in raw_reports]
    expected_events = WARMUP_MOVES + moves + rollbacks
    for run_ in rollback_runs:  # the same trials seen from on_change (before get() is called)
        run_["on_change_ms"] = [(s[run_["rev"]] - run_["t0_ns"]) / 1e6 for s in client_stamps if run_["rev"] in s]
    return {
        "startup_s": startup_s,
        "client": _latencies(client_moves, client_stamps),
        "raw": _latencies(raw_moves, raw_stamps),
        "rollbacks": rollback_runs,
        "waits_timed_out": waits_missing,
        "events_per_client": [len(r["stamps"]) for r in client_reports],
        "expected_events_per_client": expected_events,
        "clients_at_final_version": sum(r["final_version"] == final_version for r in client_reports),
        "client_states": sorted({r["state"] for r in client_reports}),
        "reports_per_client": [r["reports"] for r in client_reports],
        "write_lead_us": fleets.leads_us,
        "unaligned_moves": fleets.unaligned,
    }


@contextlib.contextmanager
def _servers(args: argparse.Namespace, backend: str, topology: str) -> Iterator[str]:
    """The URL of the servers one run needs: ``--url``, or servers started here and stopped on exit."""
    given = args.url if args.url and _harness.backend_of(args.url) == backend else None
    if backend == "postgres" or topology == "primary" or given:
        with _harness.backend_url(args, backend) as url:
            yield url
    elif topology == "replicas":
        with _harness.sentinel_deployment() as deployment:
            yield deployment.url()
    else:
        with _harness.redis_cluster() as cluster:
            yield cluster.url()


def _topology(args: argparse.Namespace) -> str:
    if args.topology:
        return str(args.topology)
    if args.url and _harness.backend_of(args.url) == "redis":
        return url_topology(args.url)
    return "primary"


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    backends = _harness.backends(args)
    topology = _topology(args)
    if backends == ["postgres"] and topology != "primary":
        raise SystemExit("--topology replicas/cluster is for Redis; PostgreSQL runs on one server here")
    clients = args.clients or (10 if args.quick else 50)
    moves = args.moves or (20 if args.quick else 200)
    rollbacks = args.rollbacks or (2 if args.quick else 5)
    config = {"clients": clients, "moves": moves, "rollbacks": rollbacks, "block": 5 if args.quick else 10,
              "warmup_moves": WARMUP_MOVES}  # fmt: skip
    default_plot = backends == ["redis"] and topology == "primary" and not args.quick
    plot_path = None if args.no_plot else (args.plot or (DEFAULT_PLOT if default_plot else None))
    wall = time.perf_counter()
    runs: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    for backend in backends:
        run_topology = "primary" if backend == "postgres" else topology
        with _servers(args, backend, run_topology) as url:
            paths = discover(url, args.namespace, run_topology)  # exits first when the URL does not fit
            versions[backend] = _harness.server_version(url)
            raw = run(paths, args.namespace, clients, moves, rollbacks, config["block"])
        runs.append({"paths": paths, "raw": raw, "summary": summary_of(raw, clients)})
    env = _report.environment(versions.get("redis", "-"), versions.get("postgres"))
    env["load_average_at_end"] = list(os.getloadavg())
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    for r in runs:
        print_run(r["summary"], r["raw"], config, r["paths"])
    if len(runs) > 1:
        print()
        print(side_by_side(runs))
    first = runs[0]
    plot_note = (
        _plot.propagation_cdf(plot_path, first["raw"], first["summary"], clients) if plot_path else "not requested"
    )
    print(f"\nCDF plot: {plot_note}")
    elapsed = time.perf_counter() - wall
    startup = ", ".join(f"{r['paths'].backend} {r['raw']['startup_s']:.1f} s" for r in runs)
    print(f"wall time {elapsed:.1f} s (fleet start-up: {startup})")
    json_runs = [
        {
            "backend": r["paths"].backend,
            "topology": r["paths"].topology,
            "floor": r["paths"].raw_kind,
            "where": r["paths"].where,
            "summary": r["summary"],
            "counts": counts(r["raw"]),
        }
        for r in runs
    ]
    _report.write_json(
        args.json,
        {
            "benchmark": "propagation",
            "quick": args.quick,
            "environment": env,
            "config": {
                **config,
                "ttl_seconds": TTL_SECONDS,
                "backends": backends,
                "topology": topology,
            },
            "runs": json_runs,
            "summary": json_runs[0]["summary"],  # the first run's, as before --backend both
            "counts": json_runs[0]["counts"],
            "plot": plot_note,
            "wall_seconds": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
