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

Where it lives: this module is the command (options, the order of the measurements, the printed
report); ``_serve_plan`` the names and sizes; ``_serve_http`` the server processes and the parent's
connections; ``_serve_load`` the load generator and the resolve rounds; ``_serve_stream`` the
subscriber processes; ``_serve_moves`` the label moves and their summary; ``_serve_list`` the
seeding and the prompt list; ``_serve_baseline`` the baseline server.

    python -m benchmarks.serve [--quick] [--json PATH] [--url redis://...] [--subscribers 1000]
        [--prompts 10000] [--moves 20] [--rounds 5] [--seconds 3] [--load-processes 1]
        [--stream-processes 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/serve.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness, _report
from benchmarks._serve_http import Http, baseline_entry, baseline_process, bearer, serve_process
from benchmarks._serve_list import measure_list_cold, measure_list_warm, seed
from benchmarks._serve_load import measure_resolve
from benchmarks._serve_moves import measure_stream
from benchmarks._serve_plan import CONSOLE_PATH, LIST_PATH, PAGE, RESOLVE_PATH, TARGET_MS, WARMUP_MOVES, Plan
from benchmarks._serve_stream import raise_nofile
from promptreg.registry.cli.serve.auth import new_token


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
        raise_nofile(plan.subscribers + 512)  # before promptreg serve starts: it inherits the limit
        started = time.perf_counter()
        registry = seed(url, args.namespace, plan.prompts)
        out["seed_seconds"] = time.perf_counter() - started
        try:
            with serve_process(url, args.namespace, tokens, workdir) as serve:
                print("  promptreg serve is up; prompt list, cold", file=sys.stderr, flush=True)
                cold = measure_list_cold(plan, serve, reader)
                replies = cold.pop("replies")
                probe = Http(serve.port)
                resolved = probe.get(RESOLVE_PATH, {**bearer(reader), "Accept": "application/json"})
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
