"""Lookup cost: ``PromptClient.get`` against the CPython floor and the alternatives users would pick.

Contenders (see ``benchmarks/_baselines.py`` for each one's exact implementation): the floor (a method
doing one dict lookup), a Redis read per lookup (label only, versions cached; and label + version in
one round trip, parsed), a 60 s TTL cache with background refresh (the Langfuse / MLflow pattern) and
redis-py's client-side caching (RESP3) when the server allows it. 1 and 4 threads; 10, 1,000 and
100,000 prompts cached; memory per cached version (tracemalloc). Timing method: ``benchmarks/_timing.py``.
Rollouts (``benchmarks/_rollout_rows.py``): ``get`` of prompts with a 10% rollout running, with a
``key`` and without, and with a key but no rollout, after the other rows of each size.
With OpenTelemetry (``benchmarks/lookup.py``'s ``telemetry_contenders``): ``get`` of a client with
``tracing=True`` under a recording span, and of one with ``metrics=True``; and what counting a lookup
costs as a dict increment against ``Counter.add`` with an attribute dict (``measure_counting``).
Then render: ``PromptClient.render`` (lookup and render) on a seeded prompt against ``str.format`` and
``format_map`` (the template engine's floor) of the same template, and the rows of ``benchmarks/render.py``.

    python -m benchmarks.lookup [--quick] [--json PATH] [--url redis://...]
"""

from __future__ import annotations

import contextlib
import gc
import os
import random
import sys
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from multiprocessing.connection import Connection
from pathlib import Path
from types import SimpleNamespace
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/lookup.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks import _baselines, _harness, _report, _rollout_rows, _timing, render
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.redis.keys import Keyspace

LABEL = _baselines.DEFAULT_LABEL
TEXT = (
    "You are a helpful assistant for {{product}}. Answer in {{language}}, briefly and politely. "
    "If the question is about billing, point to the billing page; never guess account details. "
    "Keep a neutral tone, cite the documentation section you used, and ask one clarifying question "
    "when the request is ambiguous. Prompt number "
)
# Each timing loop walks the same working set of names in random order (all names when fewer), so
# going from 1,000 to 100,000 prompts changes only how much is cached, not what is looked up.
SAMPLE = 1_000
SEED_WORKERS = 3
TELEMETRY = {
    "promptreg_tracing": "PromptClient.get, tracing on (recording span)",
    "promptreg_metrics": "PromptClient.get, metrics on",
}
IN_PROCESS = ("floor", "promptreg", "ttl_cache", *TELEMETRY, *_rollout_rows.ROLLOUT)
DESCRIPTIONS = {
    "floor": "CPython floor: a method doing one dict lookup",
    "promptreg": "PromptClient.get (push-invalidated in-process cache)",
    **TELEMETRY,
    **_rollout_rows.ROLLOUT,
    "ttl_cache": "60 s TTL cache, background refresh (Langfuse/MLflow pattern)",
    "redis_label_get": "Redis read per lookup: GET label, versions cached in-process",
    "redis_full_read": "Redis read per lookup: label + version hash in one EVALSHA, parsed",
    "client_side_cache": "redis-py client-side caching (RESP3), versions cached in-process",
}


def prompt_name(index: int) -> str:
    return f"bench-lookup-{index:06d}"


def _seed_range(conn: Connection, url: str, namespace: str, start: int, stop: int) -> None:
    with RedisPromptRegistry.from_url(url, namespace=namespace) as registry:
        for i in range(start, stop):
            name = prompt_name(i)
            registry.create_prompt(name)
            registry.add_version(name, f"{TEXT}{i}.", author="bench")
            registry.set_label(name, LABEL, 1, author="bench")
    conn.send(("done", stop - start))


def seed(url: str, namespace: str, count: int) -> None:
    """``count`` prompts, each with one version labelled ``production``, via the public API."""
    with _harness.Children() as children:
        step = -(-count // SEED_WORKERS)
        for start in range(0, count, step):
            children.start(_seed_range, url, namespace, start, min(count, start + step))
        children.expect_all("done", timeout=600)


def _traced(build: Any) -> tuple[Any, int]:
    """``build()`` and the Python heap it left allocated (tracemalloc, after a full collection)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = build()
        gc.collect()
        return value, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _start_client(url: str, namespace: str) -> Any:
    from promptreg.client import PromptClient

    client = PromptClient(url, namespace=namespace, default_label=LABEL, start_timeout=300.0)
    if not client.wait_ready(300.0):
        client.close()
        raise RuntimeError(f"PromptClient did not become ready: {client.status()}")
    return client


def _contenders(client: Any, keys: Keyspace, ttl: _baselines.TtlCache, conn: redis.Redis,
                csc: redis.Redis | None, versions: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    found: dict[str, Any] = {
        "floor": _baselines.DictFloor(versions),
        "promptreg": client,
        "ttl_cache": ttl,
        "redis_label_get": _baselines.RedisLabelRead(conn, keys),
        "redis_full_read": _baselines.RedisFullRead(conn, keys),
    }
    if csc is not None:
        found["client_side_cache"] = _baselines.ClientSideCacheRead(csc, keys)
    return found


@contextlib.contextmanager
def telemetry_contenders(client: Any) -> Iterator[dict[str, Any]]:
    """``client.get`` as ``PromptClient(..., tracing=True)`` and ``metrics=True`` install it (the
    wrappers :func:`promptreg.client.telemetry.instrument` builds, not installed, so that ``client``
    itself stays the plain contender), with the real SDK behind them: a ``TracerProvider`` without a
    processor, and a recording span current in every thread. (What a lookup of ``metrics=True`` does
    is counting in a dict; the SDK only reads the counts when a reader collects.)

    Timing threads start with an empty context (Python 3.11 threads do not copy it), so for this block
    the runtime context's ``ContextVar`` gets a default holding the span: every thread finds it as the
    current span, through the same ``ContextVar.get`` as always. The threads share that one span (and
    its lock), where a service has one per request.
    """
    from opentelemetry import context as otel_context
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    from promptreg.client.telemetry import _lookup
    from promptreg.client.telemetry_metrics import LookupCounts

    tracer_provider = TracerProvider()
    span = tracer_provider.get_tracer("benchmarks.lookup").start_span("lookups")
    runtime: Any = otel_context._RUNTIME_CONTEXT  # the contextvars runtime context (private: a benchmark only)
    previous = runtime._current_context
    # The very wrappers instrument() installs, built without installing them: a client's instance
    # attributes touched once make CPython give up the specialized reads of the plain contender's
    # attributes for the rest of the run (client/telemetry.py, Telemetry._replace).
    traced_get = _lookup(client, client.get, trace.get_current_span, None)
    counted_get = _lookup(client, client.get, None, LookupCounts())
    current = trace.set_span_in_context(span)  # an OpenTelemetry Context: immutable by its API
    runtime._current_context = ContextVar("current_context", default=current)
    try:
        yield {
            "promptreg_tracing": SimpleNamespace(get=traced_get),
            "promptreg_metrics": SimpleNamespace(get=counted_get),
        }
    finally:
        runtime._current_context = previous
        span.end()
        tracer_provider.shutdown()


def measure_counting(quick: bool) -> dict[str, float]:
    """Median ns per lookup counted: a plain dict increment keyed by a tuple (what ``metrics=True``
    does), against the OpenTelemetry SDK's ``Counter.add(1, {...})`` with the same four attributes."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    counter = provider.get_meter("benchmarks.lookup").create_counter("lookups")
    counts: dict[tuple[Any, ...], int] = {}
    name, label, number, variant = prompt_name(1), LABEL, 1, None

    def dict_increment() -> None:
        key = (name, label, number, variant)
        counts[key] = counts.get(key, 0) + 1

    def counter_add() -> None:
        counter.add(
            1, {"gen_ai.prompt.name": name, "promptreg.prompt.label": label, "promptreg.prompt.version": number}
        )

    try:
        return render.time_contenders(
            {"dict increment (metrics=True)": dict_increment, "Counter.add with attributes": counter_add}, quick
        )
    finally:
        provider.shutdown()


def _time_rows(
    contenders: dict[str, Any], versions: dict[str, Any], sample: list[str], loop_keys: list[str], size: int,
    plan: dict[str, Any],
) -> list[dict[str, Any]]:  # fmt: skip
    """Rows (1 and 4 threads) of ``contenders`` (the floor first), interleaved round by round."""
    for get in contenders.values():  # warm: every sampled name once (fills lazy caches)
        for name in sample:
            if get.get(name).prompt_text != versions[name].prompt_text:
                raise RuntimeError(f"{get!r} returned another text for {name}")
    rows: list[dict[str, Any]] = []
    for threads in (1, 4):
        samples = {name: _timing.Samples() for name in contenders}
        for _ in range(plan["rounds"]):  # interleaved, so drift on a noisy machine hits all alike
            for name, contender in contenders.items():
                in_process = name in IN_PROCESS
                block = plan["block"] if in_process else plan["io_block"]
                repeats = plan["repeats"] if in_process else plan["io_repeats"]
                samples[name].add(
                    _timing.time_lookups(contender.get, loop_keys, block, repeats // plan["rounds"], threads)
                )
        floor = _report.summarize(samples["floor"].per_lookup_ns)
        rows += [_timing.row(name, size, threads, got, floor) for name, got in samples.items()]
    return rows


def measure_size(url: str, namespace: str, size: int, plan: dict[str, Any], csc: redis.Redis | None) -> dict[str, Any]:
    """Every contender at one registry size, 1 and 4 threads; memory of the two in-process caches."""
    keys = Keyspace(namespace)
    names = [prompt_name(i) for i in range(size)]
    sample = random.Random(size).sample(names, min(size, SAMPLE))
    loop_keys = (sample * (-(-plan["block"] // len(sample))))[: max(len(sample), plan["block"])]
    conn = redis.Redis.from_url(url)
    client, client_bytes = _traced(lambda: _start_client(url, namespace))
    ttl = _baselines.TtlCache(_baselines.redis_fetch(conn, keys))
    extras = contextlib.ExitStack()  # telemetry_contenders
    try:
        _, ttl_bytes = _traced(lambda: ttl.prefill(_baselines.fetch_pointed_versions(conn, keys, names)))
        # Keys are fresh string objects, as in the client's own dicts (decoded from Redis): a dict
        # holding the very objects the loop passes in would skip the string compare on every hit.
        versions = {name.encode().decode(): client.get(name) for name in names}
        if len(ttl) != size or any(v.version != 1 for v in versions.values()):
            raise RuntimeError("a cache does not hold every seeded prompt")
        contenders = _contenders(client, keys, ttl, conn, csc, versions)
        rows = _time_rows(contenders, versions, sample, loop_keys, size, plan)
        refreshes = ttl.refreshes  # the TTL cache is timed while its entries are fresh (60 s)
        # Then the telemetry rows, with the floor again, a tenth of the blocks: a traced lookup
        # costs µs, and a full set of blocks would outlast the TTL cache's entries above.
        telemetry = extras.enter_context(telemetry_contenders(client))
        floored = {"floor": contenders["floor"], **telemetry}
        tenth = {**plan, "repeats": plan["repeats"] // 10}
        rows += [r for r in _time_rows(floored, versions, sample, loop_keys, size, tenth) if r["contender"] != "floor"]
        rendered = measure_render(client, sample[0], plan["quick"]) if size == plan["render_size"] else None
        # Last: half the sampled prompts get a rollout (the other half are the keyed view's plain case).
        rolled, plain = sample[::2], sample[1::2] or sample[:1]
        rollout_seconds = _rollout_rows.start_rollouts(url, namespace, rolled, client, LABEL)
        rows += _rollout_rows.measure(client, versions, rolled, plain, size, plan)
        return {
            "rollouts_applied_seconds": rollout_seconds,
            "prompts": size,
            "rows": rows,
            "render": rendered,
            "ttl_refreshes_while_timing": refreshes,
            "memory": {
                "promptreg_bytes_per_version": client_bytes / size,
                "ttl_cache_bytes_per_version": ttl_bytes / size,
            },
        }
    finally:
        extras.close()
        ttl.close()
        client.close()
        conn.close()


RENDER_VALUES = {"product": "promptreg", "language": "English"}


def measure_render(client: Any, name: str, quick: bool) -> dict[str, float]:
    """Median ns per call: ``client.render`` of ``name`` and the version-level contenders of its template."""
    version = client.get(name)
    contenders = {
        "PromptClient.render (get + render)": lambda: client.render(name, **RENDER_VALUES),
        **render.contenders_for(version.prompt_text, RENDER_VALUES),
    }
    return render.time_contenders(contenders, quick)


def _plan(quick: bool) -> dict[str, Any]:
    if quick:
        # --quick proves the benchmark runs end to end and reports every figure (the test suite's
        # smoke run): sizes and repeats as small as still measure something.
        return {"sizes": (10, 1_000, 2_000), "block": 1000, "repeats": 40, "io_block": 10, "io_repeats": 8,
                "rounds": 2, "render_size": 1_000, "quick": True}  # fmt: skip
    return {"sizes": (10, 1_000, 100_000), "block": 1000, "repeats": 1500, "io_block": 20, "io_repeats": 150,
            "rounds": 5, "render_size": 1_000, "quick": False}  # fmt: skip


def _flatness(results: list[dict[str, Any]]) -> str:
    """Median ns (1 thread) of the in-process contenders at each size, and the growth between the
    sizes that share one working set (``SAMPLE`` names): only the amount cached differs there."""
    sizes = [r["prompts"] for r in results]
    base = next((i for i, size in enumerate(sizes) if size >= SAMPLE), 0)
    rows = []
    for name in IN_PROCESS:
        medians = [next(row["median_ns"] for row in r["rows"] if row["contender"] == name and row["threads"] == 1)
                   for r in results]  # fmt: skip
        rows.append((DESCRIPTIONS[name], *(_report.fmt(m) for m in medians),
                     _report.fmt_ratio(_report.ratio(medians[-1], medians[base]))))  # fmt: skip
    growth = f"{sizes[-1]:,} / {sizes[base]:,}"
    headers = ["contender (1 thread, median ns)", *(f"{s:,} prompts" for s in sizes), growth]
    title = (
        f"Does the cost stay flat as the cache grows? (looked up: every name up to {SAMPLE:,} prompts, "
        f"then the same {SAMPLE:,} names)"
    )
    return _report.table(headers, rows, title=title)


def _print(
    results: list[dict[str, Any]],
    renders: dict[str, dict[str, float]],
    csc_note: str,
    csc_ok: bool,
    plan: dict[str, Any],
    env: dict[str, Any],
) -> None:
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    print(
        f"Per-lookup ns = time of a block of {plan['block']} get() calls / {plan['block']} "
        f"({plan['io_block']} for the Redis reads); median and p99 across blocks, GC off while timing. "
        f"With 4 threads a block also holds the time other threads had the GIL."
    )
    print(f"redis-py client-side caching: {'measured, ' if csc_ok else 'not available: '}{csc_note}\n")
    for threads in (1, 4):
        rows = [
            (DESCRIPTIONS[r["contender"]], f"{r['prompts']:,}", _report.fmt(r["median_ns"]), _report.fmt(r["p99_ns"]),
             _report.fmt_ratio(r["ratio_to_floor_median"]), _report.fmt(r["lookups_per_s"]))
            for result in results for r in result["rows"] if r["threads"] == threads
        ]  # fmt: skip
        print(
            _report.table(
                ["contender", "prompts", "median ns", "p99 ns", "median / floor", "lookups/s (all threads)"],
                rows,
                title=f"get() cost, {threads} thread{'s' if threads > 1 else ''}",
            )
        )
        print()
    print(_flatness(results))
    print()
    memory_rows = [
        (f"{r['prompts']:,}", _report.fmt(r["memory"]["promptreg_bytes_per_version"]),
         _report.fmt(r["memory"]["ttl_cache_bytes_per_version"]), r["ttl_refreshes_while_timing"])
        for r in results
    ]  # fmt: skip
    print(render.table(renders))
    print()
    print(
        _report.table(
            ["prompts", "promptreg bytes/version", "TTL cache bytes/version", "TTL refreshes while timing"],
            memory_rows,
            title=f"Memory per cached version (tracemalloc: Python heap kept after loading / versions; "
            f"text {len(TEXT) + 7} chars; small sizes carry the client's fixed cost)",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv)
    plan = _plan(args.quick)
    wall = time.perf_counter()
    with _harness.redis_url(args) as url:
        env = _report.environment(_harness.server_version(url))
        seed_seconds: dict[int, float] = {}
        for size in plan["sizes"]:  # all seeding first: the children are forked before any thread exists
            started = time.perf_counter()
            seed(url, f"{args.namespace}.p{size}", size)
            seed_seconds[size] = time.perf_counter() - started
        csc, csc_note = _baselines.open_client_side_cache(url)
        try:
            results = [measure_size(url, f"{args.namespace}.p{size}", size, plan, csc) for size in plan["sizes"]]
        finally:
            if csc is not None:
                csc.close()
    renders = {f"seeded prompt ({r['prompts']:,} cached)": r["render"] for r in results if r["render"]}
    renders.update(render.measure(plan["quick"]))
    counting = measure_counting(plan["quick"])
    env["load_average_at_end"] = list(os.getloadavg())
    _print(results, renders, csc_note, csc is not None, plan, env)
    rows = [(name, _report.fmt(ns)) for name, ns in counting.items()]
    print(f"\n{_report.table(['counting one lookup', 'median ns'], rows, title='metrics=True: the count')}")
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s (seeding {sum(seed_seconds.values()):.1f} s of it)")
    _report.write_json(
        args.json,
        {
            "benchmark": "lookup",
            "quick": args.quick,
            "environment": env,
            "config": {**plan, "sizes": list(plan["sizes"]), "threads": [1, 4], "text_chars": len(TEXT) + 7},
            "contenders": DESCRIPTIONS,
            "client_side_cache": {"available": csc is not None, "note": csc_note},
            "results": results,
            "render": renders,
            "counting_ns": counting,
            "seed_seconds": seed_seconds,
            "wall_seconds": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
