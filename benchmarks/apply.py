"""The client's CPU per change message as the registry grows: decode and apply, in one process.

Every process of a fleet decodes and applies every change message, so this cost is paid once per
write per process. For each size a :class:`promptreg.client.cache.Cache` is loaded with that many prompts
(``production``, ``staging`` and ``latest`` each), then label-move messages (msgpack, as the write
scripts publish them) are decoded and applied one by one, each timed with ``perf_counter_ns``;
the figures are the median and p99 per message. In the same run the same messages go through the
baseline, the apply before this version (rebuilt here: it copied the prompt index and the moved
label's dict for every message, so its cost grew with the registry). No server is involved: the
network part of a message is the same for both and is measured by ``benchmarks/propagation.py``.

    python -m benchmarks.apply [--quick] [--prompts 1000,10000,100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from sys import intern
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/apply.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack

from benchmarks import _report
from promptreg.client.cache import Cache
from promptreg.registry.models import PromptVersion
from promptreg.registry.wire import ChangeMessage, decode

LABELS = ("production", "staging")


def loaded_cache(prompts: int) -> Cache:
    """A cache of ``prompts`` prompts, 2 versions each: production -> 1, staging and latest -> 2."""
    cache = Cache("production")
    at = datetime.now(UTC)
    pointers = {}
    for i in range(prompts):
        name = f"team{i % 50}/prompt-{i}"
        for number in (1, 2):
            cache.add_version(
                name, PromptVersion.trusted(number, f"v{number} of {name}: {{{{x}}}}", at, None, None, {})
            )
        pointers[name] = {"production": 1, "staging": 2, "latest": 2}
    cache.replace(1, pointers, events=False)
    return cache


def messages(prompts: int, count: int, seed: int = 7) -> list[bytes]:
    """``count`` label moves of random prompts, packed as a write script publishes them (revs 2, 3, ...)."""
    rng = random.Random(seed)
    out = []
    for rev in range(2, count + 2):
        name = f"team{(i := rng.randrange(prompts)) % 50}/prompt-{i}"
        fields = {"op": "set_label", "prompt": name, "label": rng.choice(LABELS), "author": "ci", "at": time.time(),
                  "rev": rev, "version": rng.choice((1, 2)), "prev": None}  # fmt: skip
        out.append(msgpack.packb(fields))
    return out


def copying_apply(cache: Cache, message: ChangeMessage) -> None:
    """The baseline: the apply before this version, which rebuilt the state it changed by copying."""
    old = cache.pointers.get(message.prompt)
    labels = dict(old) if old is not None else {}
    assert message.label is not None and message.version is not None
    labels[message.label] = message.version
    pointers = dict(cache.pointers)  # O(prompts)
    pointers[message.prompt] = labels
    view = dict(cache.view)
    by_name = dict(view.get(message.label, ()))  # O(prompts with the label)
    by_name[intern(message.prompt)] = cache.versions[message.prompt, message.version]
    view[message.label] = by_name
    if message.label == "production":
        view[None] = by_name
    cache.view, cache.pointers, cache.rev = view, pointers, message.rev


def time_path(prompts: int, packed: list[bytes], apply: Callable[[Cache, ChangeMessage], Any]) -> list[float]:
    """Microseconds per message (decode + apply) for every message, on a freshly loaded cache."""
    cache = loaded_cache(prompts)
    samples = []
    clock = time.perf_counter_ns
    for data in packed:
        start = clock()
        apply(cache, decode(data))
        samples.append((clock() - start) / 1000)
    assert cache.rev == len(packed) + 1  # every message applied
    return samples


def in_place_apply(cache: Cache, message: ChangeMessage) -> None:
    """This version: :meth:`Cache.apply` (a move between cached versions never fetches)."""
    result = cache.apply(message, _no_fetch)
    assert result.action.value == "applied", result


def _no_fetch(name: str, number: int) -> PromptVersion | None:
    raise AssertionError(f"fetched {name} v{number}: every version is cached")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer messages (a few seconds)")
    parser.add_argument("--prompts", default=None, help="sizes, comma-separated (default 1000,10000,100000)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in (args.prompts or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")]
    count = 100 if args.quick else 500
    started = time.monotonic()
    rows: list[list[object]] = []
    results: dict[str, Any] = {}
    for size in sizes:
        packed = messages(size, count)
        figures = {
            "in place (this version)": _report.summarize(time_path(size, packed, in_place_apply)),
            "copying (before)": _report.summarize(time_path(size, packed, copying_apply)),
        }
        results[str(size)] = figures
        floor = figures["in place (this version)"]["p50"]
        for path, summary in figures.items():
            rows.append([f"{size:,}", path, count, _report.fmt(summary["p50"]), _report.fmt(summary["p99"]),
                         _report.fmt_ratio(_report.ratio(summary["p50"], floor))])  # fmt: skip
    print(_report.table(["prompts", "apply", "messages", "p50 us", "p99 us", "p50 vs in place"], rows,
                        title="CPU per change message: decode + apply"))  # fmt: skip
    env = _report.environment("-")
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    _report.write_json(args.json, {"quick": args.quick, "messages": count, "apply": results, "environment": env,
                                   "wall_seconds": time.monotonic() - started})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
