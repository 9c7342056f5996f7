"""Timing loops for lookups: timeit-style blocks of N calls, many repeats, from 1 or more threads.

A single lookup (~100 ns) is shorter than the resolution of a clock read, so each sample is a block:
``time.perf_counter_ns()`` before and after ``for key in keys: get(key)`` over ``block`` keys, divided by
``block``. Percentiles are taken across blocks. The garbage collector is off while timing (as in
``timeit``). Every contender runs through this same loop, so loop and call overhead cancel in ratios.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import _report

Lookup = Callable[..., object]


@dataclass
class Samples:
    """Per-lookup nanoseconds of each block, and the totals for throughput."""

    per_lookup_ns: list[float] = field(default_factory=list)
    lookups: int = 0
    wall_ns: int = 0

    def add(self, other: Samples) -> None:
        self.per_lookup_ns += other.per_lookup_ns
        self.lookups += other.lookups
        self.wall_ns += other.wall_ns


def _blocks(get: Lookup, keys: Sequence[str], block: int, repeats: int, offset: int) -> list[float]:
    clock = time.perf_counter_ns
    out: list[float] = []
    position = offset % len(keys)
    for _ in range(repeats):
        if position + block > len(keys):
            position = 0
        chunk = keys[position : position + block]  # sliced before the clock starts
        position += block
        start = clock()
        for key in chunk:
            get(key)
        out.append((clock() - start) / block)
    return out


def _keyed_blocks(get: Lookup, keys: Sequence[str], block: int, repeats: int, offset: int) -> list[float]:
    """:func:`_blocks` of ``get(name, key=user)`` over ``(name, user)`` pairs: a lookup during a rollout."""
    clock = time.perf_counter_ns
    out: list[float] = []
    position = offset % len(keys)
    for _ in range(repeats):
        if position + block > len(keys):
            position = 0
        chunk: Any = keys[position : position + block]
        position += block
        start = clock()
        for name, user in chunk:
            get(name, key=user)
        out.append((clock() - start) / block)
    return out


def time_lookups(
    get: Lookup, keys: Sequence[Any], block: int, repeats: int, threads: int = 1, *, keyed: bool = False
) -> Samples:
    """Time ``get`` over ``keys`` in ``repeats`` blocks of ``block`` calls, in each of ``threads`` threads.

    ``keys`` must hold at least ``block`` entries. With several threads they start together (a
    barrier) and ``wall_ns`` is from the start until the last one finishes. ``keyed``: ``keys`` are
    ``(name, user)`` pairs and each call is ``get(name, key=user)``.
    """
    blocks = _keyed_blocks if keyed else _blocks
    if len(keys) < block:
        raise ValueError("need at least one block of keys")
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        if threads == 1:
            start = time.perf_counter_ns()
            per_lookup = blocks(get, keys, block, repeats, 0)
            return Samples(per_lookup, block * repeats, time.perf_counter_ns() - start)
        results: list[list[float]] = [[] for _ in range(threads)]
        errors: list[BaseException] = []
        barrier = threading.Barrier(threads + 1)

        def worker(index: int) -> None:
            try:
                barrier.wait()
                results[index] = blocks(get, keys, block, repeats, index * (len(keys) // threads))
            except BaseException as exc:  # reported below, in the caller's thread
                errors.append(exc)

        workers = [threading.Thread(target=worker, args=(i,), name=f"lookup-{i}") for i in range(threads)]
        for thread in workers:
            thread.start()
        barrier.wait()
        start = time.perf_counter_ns()
        for thread in workers:
            thread.join()
        wall = time.perf_counter_ns() - start
        if errors:
            raise errors[0]
        return Samples([x for r in results for x in r], block * repeats * threads, wall)
    finally:
        if gc_was_enabled:
            gc.enable()


def row(name: str, size: int, threads: int, got: Samples, floor: dict[str, float]) -> dict[str, Any]:
    """One contender's result (``got``) at ``size`` prompts, beside the floor's summary of the same run."""
    stats = _report.summarize(got.per_lookup_ns)
    return {
        "contender": name, "prompts": size, "threads": threads,
        "median_ns": stats["p50"], "p99_ns": stats["p99"], "blocks": stats["n"],
        "lookups": got.lookups, "lookups_per_s": got.lookups / (got.wall_ns / 1e9),
        "ratio_to_floor_median": _report.ratio(stats["p50"], floor["p50"]),
        "ratio_to_floor_p99": _report.ratio(stats["p99"], floor["p99"]),
    }  # fmt: skip
