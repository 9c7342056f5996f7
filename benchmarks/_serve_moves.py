"""The change stream's measurement: label moves against N SSE subscribers, the floor and a PromptClient.

:func:`measure_stream` starts the subscriber processes (``benchmarks/_serve_stream.py``), a
:class:`~promptreg.PromptClient` process (``benchmarks/_fleet.py``) and the redis-py floor, moves the
label with ``set_label`` (one every ~``plan.spacing`` s, :data:`WARMUP_MOVES` first), collects every
arrival and summarizes them per move: the time from just before the write until the first, median
and last subscriber has the event, against the floor's; and checks every subscriber got every move
exactly once (by ``id:``).
"""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from benchmarks import _fleet, _harness, _report
from benchmarks._serve_http import Http, HttpServer, bearer, request_bytes
from benchmarks._serve_plan import LABEL, NAME, READY_TIMEOUT, TARGET_MS, WARMUP_MOVES, Plan
from benchmarks._serve_stream import pubsub_worker, raise_nofile, stream_worker
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.redis.keys import Keyspace


def measure_stream(plan: Plan, serve: HttpServer, url: str, namespace: str, reader: str,
                   registry: RedisPromptRegistry) -> dict[str, Any]:  # fmt: skip
    """N SSE subscribers, the floor subscriber and a PromptClient; label moves; every arrival."""
    raise_nofile(plan.subscribers + 512)
    request = request_bytes("/api/v1/events", serve.port, {**bearer(reader), "Accept": "text/event-stream"})
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
        server_count = status.get("/api/v1/status", bearer(reader)).json()["subscribers"]
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
