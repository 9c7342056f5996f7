"""Propagation: from the ``set_label`` call to ``on_change`` in every one of N client processes.

N PromptClient processes (default 50) and, in the same run, N raw subscriber processes (the floor: a
message of the same size on the same path with nothing of promptreg in it). The two fleets take
turns, block by block, so drift on a noisy machine hits both alike. A move starts only when every
process has the previous one. Each client counts the moves it saw; a missed move is reported. Then
a fleet-wide rollback: from the ``rollback()`` call until ``get()`` in every client process returns
the rolled-back version. Beside it, the staleness window of a 60 s TTL cache (analytic, not
measured: see :func:`ttl_staleness`). Process internals: ``benchmarks/_fleet.py``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

if __package__ in (None, ""):  # run as ``python benchmarks/propagation.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from benchmarks import _fleet, _harness, _plot, _report
from promptreg.registry import PromptRegistryFactory
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.topology import connect, parse_redis_url

NAME = "bench-propagation"
LABEL = "production"
TTL_SECONDS = 60.0
WARMUP_MOVES = 3
DEFAULT_PLOT = _harness.REPO_ROOT / "docs" / "propagation_cdf.png"
TOPOLOGIES = ("primary", "replicas", "cluster")
FLOOR_TEXT = {
    "publish": ("raw redis-py pub/sub", "PUBLISH", "SUBSCRIBE"),
    "spublish": ("raw redis-py sharded pub/sub", "SPUBLISH", "SSUBSCRIBE"),
    "notify": ("raw psycopg LISTEN/NOTIFY", "NOTIFY", "LISTEN"),
}
"""Per raw path: the floor's name, the parent's send and the subscriber's command."""


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


@dataclass(frozen=True)
class Paths:
    """Where one run's processes connect: the writer, the clients (cycled), the raw subscribers (cycled)."""

    backend: str
    topology: str
    writer_url: str
    client_urls: list[str]
    raw_kind: str
    raw_addresses: list[str]
    raw_channel: str
    where: str
    """One sentence for the report: where the clients and the raw subscribers are."""


def _node_url(original: str, host: str, port: int) -> str:
    """A plain ``redis://`` URL of one data node, with ``original``'s credentials and TLS."""
    parts = urlsplit(original)
    userinfo = parts.netloc.rpartition("@")[0]
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{host}:{port}/0"


def _cluster_url(original: str, host: str, port: int) -> str:
    """``original`` (a ``redis+cluster://`` URL) with ``host:port`` as its only startup node."""
    parts = urlsplit(original)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo + '@' if userinfo else ''}{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def _with_query(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def discover(url: str, namespace: str, topology: str) -> Paths:
    """The :class:`Paths` of a run on ``url``: replicas from Sentinel, the slot owner from the cluster.

    Raises ``SystemExit`` when ``topology`` does not fit the URL.
    """
    channel = Keyspace(namespace).prefix + ":bench-raw"  # same slot as the registry's channel
    if _harness.backend_of(url) == "postgres":
        from promptreg.registry.postgres.conn import parse_postgres_url

        where = "clients and raw listeners on one PostgreSQL"
        return Paths("postgres", "primary", url, [url], "notify", [parse_postgres_url(url)[0]],
                     f"bench_raw_{namespace}", where)  # fmt: skip
    parsed = parse_redis_url(url)
    kind = {"single": "primary", "sentinel": "replicas", "cluster": "cluster"}[parsed.kind]
    if topology != kind and not (topology == "primary" and parsed.kind == "sentinel"):
        raise SystemExit(f"--topology {topology} does not fit the URL (a {parsed.kind} URL)")
    if parsed.kind == "single":
        return Paths("redis", "primary", url, [url], "publish", [url], channel, "every process on one redis-server")
    if parsed.kind == "sentinel":
        assert parsed.service is not None
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=parsed.sentinel_kwargs)
        if topology == "primary":
            host, port = sentinel.discover_master(parsed.service)
            where = "clients through Sentinel on the primary, raw subscribers on the primary"
            return Paths("redis", "primary", url, [url], "publish", [_node_url(url, host, port)], channel, where)
        replicas = sentinel.discover_slaves(parsed.service)
        if not replicas:
            raise SystemExit("Sentinel names no replica: --topology replicas needs at least one")
        raw = [_node_url(url, str(host), int(port)) for host, port in replicas]
        where = (
            f"writer and raw PUBLISH on the primary; clients read_from=replica (Sentinel's slave_for picks one of "
            f"{len(replicas)} replicas), raw subscribers alternate over the {len(replicas)} replicas"
        )
        return Paths("redis", "replicas", url, [_with_query(url, "read_from=replica")], "publish", raw, channel, where)
    cluster = connect(parsed)
    try:
        assert isinstance(cluster, RedisCluster)
        nodes = [(n.host, n.port) for n in cluster.get_nodes()]  # type: ignore[no-untyped-call]
        owner = cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
    finally:
        cluster.close()
    clients = [_cluster_url(url, host, port) for host, port in sorted(nodes)]
    where = (f"clients start from the {len(nodes)} nodes in turn and SSUBSCRIBE on the slot's owner; raw "
             f"subscribers SSUBSCRIBE on the owner, the raw SPUBLISH goes through RedisCluster")  # fmt: skip
    return Paths("redis", "cluster", url, clients, "spublish", [_node_url(url, owner.host, owner.port)], channel, where)


class RawPublisher:
    """The parent's side of the floor: ``PUBLISH``, ``SPUBLISH`` (RedisCluster) or ``NOTIFY``."""

    def __init__(self, paths: Paths) -> None:
        self.kind = paths.raw_kind
        self.channel = paths.raw_channel
        self.conn: Any
        if self.kind == "notify":
            from promptreg.registry.postgres.conn import connect as pg_connect

            self.conn = pg_connect(paths.raw_addresses[0])
        else:
            self.conn = connect(parse_redis_url(paths.writer_url))

    def publish(self, payload: bytes) -> None:
        if self.kind == "notify":
            self.conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload.decode()))
        elif self.kind == "spublish":
            self.conn.spublish(self.channel, payload)
        else:
            self.conn.publish(self.channel, payload)

    def close(self) -> None:
        self.conn.close()


class Fleets:
    """Both fleets, the registry and the raw publisher; every process stopped by :meth:`close`."""

    def __init__(self, paths: Paths, namespace: str, clients: int) -> None:
        self.paths = paths
        self.clients = clients
        self.registry = PromptRegistryFactory.from_url(paths.writer_url, namespace=namespace)
        self.raw = RawPublisher(paths)
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
        """One label move; waits until every client has it. ``(t0_ns, rev, version, missing)``."""
        target = 3 - self.current
        t0 = time.monotonic_ns()
        event = self.registry.set_label(NAME, LABEL, target, author="bench")
        self.current = target
        return t0, event.rev, target, _fleet.await_all(self.client_sem, self.clients, timeout=30)

    def move_raw(self) -> tuple[int, int, int]:
        """One raw message; waits until every subscriber has it. ``(t0_ns, seq, missing)``."""
        self.seq += 1
        payload = _fleet.raw_payload(self.seq)
        t0 = time.monotonic_ns()
        self.raw.publish(payload)
        return t0, self.seq, _fleet.await_all(self.raw_sem, self.clients, timeout=30)

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


def ttl_staleness(clients: int, ttl: float = TTL_SECONDS) -> dict[str, Any]:
    """Analytic staleness of a TTL cache after a label move (not measured).

    Model: each process fetched its entry at a moment unrelated to the move, so the entry's
    remaining life at the move is uniform on [0, ttl]; the process serves the old version that long
    (plus one refresh round trip, ignored; stale-while-revalidate serves one more stale answer).
    Per process: the q-quantile is ``q * ttl``. Last of N processes: the max of N uniforms, whose
    q-quantile is ``ttl * q ** (1 / N)`` and mean ``ttl * N / (N + 1)``.
    """
    return {
        "method": "analytic: remaining TTL uniform on [0, ttl], independent per process",
        "ttl_s": ttl,
        "per_client_s": {"p50": 0.5 * ttl, "p99": 0.99 * ttl, "max": ttl},
        "last_client_s": {
            "p50": ttl * 0.5 ** (1 / clients),
            "p99": ttl * 0.99 ** (1 / clients),
            "mean": ttl * clients / (clients + 1),
            "max": ttl,
        },
    }


def run(target: Paths | str, namespace: str, clients: int, moves: int, rollbacks: int, block: int) -> dict[str, Any]:
    """One measured run on ``target`` (a :class:`Paths`, or a URL: its own topology); the raw figures."""
    paths = target if isinstance(target, Paths) else discover(target, namespace, _url_topology(target))
    fleets = Fleets(paths, namespace, clients)
    rng = random.Random(5)
    client_moves: list[tuple[int, int]] = []
    raw_moves: list[tuple[int, int]] = []
    waits_missing = {"client": 0, "raw": 0}
    started = time.perf_counter()
    try:
        fleets.start(namespace)
        startup_s = time.perf_counter() - started
        for _ in range(WARMUP_MOVES):  # first fetch of version 2, connection warm-up: not measured
            fleets.move_client()
            fleets.move_raw()
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
    }


def _summary(raw: dict[str, Any], clients: int) -> dict[str, Any]:
    client, floor = raw["client"], raw["raw"]
    rollback_fleet = [max(r["served_ms"]) for r in raw["rollbacks"] if r["served_ms"]]
    rollback_all = [t for r in raw["rollbacks"] for t in r["served_ms"]]
    notified_fleet = [max(r["on_change_ms"]) for r in raw["rollbacks"] if r["on_change_ms"]]
    notified_all = [t for r in raw["rollbacks"] for t in r["on_change_ms"]]
    out: dict[str, Any] = {
        "promptreg_on_change_ms": _report.summarize(client["samples_ms"]),
        "promptreg_last_client_per_move_ms": _report.summarize(client["last_per_move_ms"]),
        "raw_pubsub_ms": _report.summarize(floor["samples_ms"]),
        "raw_pubsub_last_subscriber_per_move_ms": _report.summarize(floor["last_per_move_ms"]),
        "missed_moves": sum(client["missed_per_process"]),
        "missed_raw_messages": sum(floor["missed_per_process"]),
        "rollback_fleet_ms": _report.summarize(rollback_fleet) if rollback_fleet else None,
        "rollback_per_client_ms": _report.summarize(rollback_all) if rollback_all else None,
        "rollback_on_change_fleet_ms": _report.summarize(notified_fleet) if notified_fleet else None,
        "rollback_on_change_per_client_ms": _report.summarize(notified_all) if notified_all else None,
        "rollback_not_served": sum(r["not_served"] for r in raw["rollbacks"]),
        "ttl_cache": ttl_staleness(clients),
    }
    a, b = out["promptreg_on_change_ms"], out["raw_pubsub_ms"]
    c, d = out["promptreg_last_client_per_move_ms"], out["raw_pubsub_last_subscriber_per_move_ms"]
    out["ratios_to_raw"] = {
        "p50": _report.ratio(a["p50"], b["p50"]), "p99": _report.ratio(a["p99"], b["p99"]),
        "max": _report.ratio(a["max"], b["max"]), "last_client_p50": _report.ratio(c["p50"], d["p50"]),
        "last_client_p99": _report.ratio(c["p99"], d["p99"]),
    }  # fmt: skip
    return out


def _print(summary: dict[str, Any], raw: dict[str, Any], config: dict[str, Any], paths: Paths) -> None:
    n, m = config["clients"], config["moves"]
    floor, send, listen = FLOOR_TEXT[paths.raw_kind]
    print(f"\n### {paths.backend}, topology {paths.topology}\n")
    print(
        f"{n} PromptClient processes and {n} raw {listen} processes ({paths.where}); {m} measured moves per "
        f"fleet (after {WARMUP_MOVES} warm-up), in alternating blocks of {config['block']}; the next move starts "
        f"when every process has the last one, after a 2-10 ms pause. Latency = arrival stamp in the process "
        f"(CLOCK_MONOTONIC) - stamp just before set_label() / {send} in the parent.\n"
    )
    s = summary
    rows = []
    for label, key, ratio_key in (
        (f"{floor} (floor), every subscriber", "raw_pubsub_ms", None),
        ("promptreg set_label -> on_change, every client", "promptreg_on_change_ms", ""),
        (f"{floor}, last subscriber per move", "raw_pubsub_last_subscriber_per_move_ms", None),
        ("promptreg, last client per move", "promptreg_last_client_per_move_ms", "last_client_"),
    ):
        st = s[key]
        ratios = s["ratios_to_raw"]
        p99_ratio = None if ratio_key is None else ratios[f"{ratio_key}p99"]
        p50_ratio = None if ratio_key is None else ratios[f"{ratio_key}p50"]
        rows.append((label, f"{st['n']:,}", _report.fmt(st["p50"]), _report.fmt(st["p99"]), _report.fmt(st["max"]),
                     _report.fmt_ratio(p50_ratio), _report.fmt_ratio(p99_ratio)))  # fmt: skip
    headers = ["path", "samples", "p50 ms", "p99 ms", "max ms", "p50 / floor", "p99 / floor"]
    print(_report.table(headers, rows, title=f"Label move -> {n} processes ({paths.backend}, {paths.topology})"))
    expected = raw["expected_events_per_client"]
    complete = sum(count == expected for count in raw["events_per_client"])
    print(
        f"\nMissed moves: {s['missed_moves']} (of {m} x {n}); raw messages missed: {s['missed_raw_messages']}; "
        f"clients that counted all {expected} changes: {complete}/{n}; clients at the final version: "
        f"{raw['clients_at_final_version']}/{n}; client states: {', '.join(raw['client_states'])}."
    )
    ttl = s["ttl_cache"]
    rollback_rows = []
    for text, fleet, per in (
        ("promptreg: rollback() -> on_change in every client", s["rollback_on_change_fleet_ms"],
         s["rollback_on_change_per_client_ms"]),
        ("promptreg: rollback() -> get() serves it in every client", s["rollback_fleet_ms"],
         s["rollback_per_client_ms"]),
    ):  # fmt: skip
        if fleet and per:
            rollback_rows.append((text, str(fleet["n"]), _report.fmt(fleet["p50"]), _report.fmt(fleet["max"]),
                                  _report.fmt(per["p50"]), _report.fmt(per["p99"])))  # fmt: skip
    rollback_rows.append(
        ("60 s TTL cache (analytic, uniform 0-60 s)", "-", _report.fmt(ttl["last_client_s"]["p50"] * 1000),
         _report.fmt(ttl["last_client_s"]["max"] * 1000), _report.fmt(ttl["per_client_s"]["p50"] * 1000),
         _report.fmt(ttl["per_client_s"]["p99"] * 1000))
    )  # fmt: skip
    print()
    print(
        _report.table(
            ["fleet-wide rollback", "runs", "fleet p50 ms", "fleet max ms", "per-client p50 ms", "per-client p99 ms"],
            rollback_rows,
            title=f"Fleet-wide rollback, {n} processes (fleet = until the last process has it; same trials)",
        )
    )
    print(
        f"\nTTL cache model: each process's entry has a remaining life uniform on 0-{ttl['ttl_s']:g} s when the "
        f"label moves, independently; the last of {n} processes then serves the old version for "
        f"{ttl['last_client_s']['mean']:.1f} s on average. Analytic, not measured."
    )
    if s["rollback_not_served"]:
        print(f"WARNING: {s['rollback_not_served']} client(s) did not serve a rollback within 30 s")


def _side_by_side(runs: list[dict[str, Any]]) -> str:
    """One table: each run's floor and promptreg, p50/p99 and ratios, missed."""
    rows = []
    for r in runs:
        s, paths = r["summary"], r["paths"]
        floor = FLOOR_TEXT[paths.raw_kind][0]
        fl, pr = s["raw_pubsub_ms"], s["promptreg_on_change_ms"]
        lf, lp = s["raw_pubsub_last_subscriber_per_move_ms"], s["promptreg_last_client_per_move_ms"]
        ratios = s["ratios_to_raw"]
        rows.append((paths.backend, paths.topology, f"{floor} (floor)", _report.fmt(fl["p50"]), _report.fmt(fl["p99"]),
                     _report.fmt(lf["p50"]), "-", "-", str(s["missed_raw_messages"])))  # fmt: skip
        rows.append((paths.backend, paths.topology, "promptreg set_label -> on_change", _report.fmt(pr["p50"]),
                     _report.fmt(pr["p99"]), _report.fmt(lp["p50"]), _report.fmt_ratio(ratios["p50"]),
                     _report.fmt_ratio(ratios["p99"]), str(s["missed_moves"])))  # fmt: skip
    headers = ["backend", "topology", "path", "p50 ms", "p99 ms", "last client p50 ms", "p50 / floor", "p99 / floor",
               "missed"]  # fmt: skip
    return _report.table(headers, rows, title="Side by side (each ratio to the floor of its own backend, same run)")


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


def _url_topology(url: str) -> str:
    if _harness.backend_of(url) == "postgres":
        return "primary"
    return {"single": "primary", "sentinel": "replicas", "cluster": "cluster"}[parse_redis_url(url).kind]


def _topology(args: argparse.Namespace) -> str:
    if args.topology:
        return str(args.topology)
    if args.url and _harness.backend_of(args.url) == "redis":
        return _url_topology(args.url)
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
    config = {"clients": clients, "moves": moves, "rollbacks": rollbacks, "block": 5 if args.quick else 10}
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
        runs.append({"paths": paths, "raw": raw, "summary": _summary(raw, clients)})
    env = _report.environment(versions.get("redis", "-"), versions.get("postgres"))
    env["load_average_at_end"] = list(os.getloadavg())
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    for r in runs:
        _print(r["summary"], r["raw"], config, r["paths"])
    if len(runs) > 1:
        print()
        print(_side_by_side(runs))
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
            "counts": _counts(r["raw"]),
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
                "warmup_moves": WARMUP_MOVES,
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


def _counts(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "events_per_client": raw["events_per_client"],
        "expected_events_per_client": raw["expected_events_per_client"],
        "missed_per_client": raw["client"]["missed_per_process"],
        "missed_per_raw_subscriber": raw["raw"]["missed_per_process"],
        "clients_at_final_version": raw["clients_at_final_version"],
        "waits_timed_out": raw["waits_timed_out"],
        "client_states": raw["client_states"],
    }


if __name__ == "__main__":
    _harness.run_main(main)
