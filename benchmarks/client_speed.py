"""The thin client's two speed promises, checked in one short run.

1. ``PromptClient.get()`` costs at most 2x a plain method doing one dict lookup (the CPython floor),
   timed in the same process with the same loop, contenders interleaved block by block.
2. A label move reaches N client processes (default 50) with p99 at most 2x raw redis-py pub/sub
   delivery in the same run, and no move is missed. The fleets are
   :class:`benchmarks.propagation.Fleets` (the fuller ``python -m benchmarks.propagation`` adds
   rollbacks, a TTL-cache comparison and a plot).

    python -m benchmarks.client_speed [--quick] [--json PATH] [--url redis://...] [--clients N] [--strict]

Each promise is printed as PASS or FAIL; the exit status is 0 unless ``--strict`` is given and one
failed (the machine is shared and noisy: a single run is evidence, not a verdict).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/client_speed.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness, _report, propagation
from promptreg.registry import PromptVersionLike, RedisPromptRegistry

LABEL = "production"
PROMPTS = 100
BOUND = 2.0
"""Both promises: at most this many times the floor."""


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=None, help="client processes (default 50; --quick: 10)")
    parser.add_argument("--moves", type=int, default=None, help="measured moves per fleet (default 100; quick 50)")
    parser.add_argument("--strict", action="store_true", help="exit with status 1 when a promise is not met")


class PlainDict:
    """The floor: a plain method doing one dict lookup, same call shape as ``PromptClient.get``."""

    def __init__(self, versions: dict[str, PromptVersionLike]) -> None:
        self._versions = versions

    def get(self, name: str, label: str | None = None) -> PromptVersionLike:
        return self._versions[name]


def _block_ns(get: Callable[..., object], names: Sequence[str], label: str | None) -> float:
    clock = time.perf_counter_ns
    if label is None:
        start = clock()
        for name in names:
            get(name)
        return (clock() - start) / len(names)
    start = clock()
    for name in names:
        get(name, label)
    return (clock() - start) / len(names)


def lookups(url: str, namespace: str, repeats: int) -> dict[str, Any]:
    """Per-call ns of each contender over ``repeats`` blocks of ``PROMPTS`` calls, interleaved."""
    from promptreg.client import PromptClient

    names = [f"bench-lookup-{i:03d}" for i in range(PROMPTS)]
    with RedisPromptRegistry.from_url(url, namespace=namespace) as registry:
        for name in names:
            registry.create_prompt(name)
            registry.add_version(name, f"You review {{{{movie}}}} for {name}.", author="bench")
            registry.set_label(name, LABEL, 1, author="bench")
    with PromptClient(url, namespace=namespace, default_label=LABEL) as client:
        if not client.wait_ready(60.0):
            raise RuntimeError(f"client not ready: {client.status()}")
        # Fresh str objects, as names arriving in a request would be (no identity shortcut).
        queries = [name.encode().decode() for name in names]
        floor = PlainDict({name: client.get(name) for name in names})  # the very objects get() returns
        contenders: dict[str, tuple[Callable[..., object], str | None]] = {
            "plain method, one dict lookup (floor)": (floor.get, None),
            "PromptClient.get(name)": (client.get, None),
            "PromptClient.get(name, 'production')": (client.get, LABEL),
            "PromptClient.get(name, 'latest')": (client.get, "latest"),
        }
        samples: dict[str, list[float]] = {key: [] for key in contenders}
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(repeats):
                for key, (get, label) in contenders.items():
                    samples[key].append(_block_ns(get, queries, label))
        finally:
            if gc_was_enabled:
                gc.enable()
    return {key: _report.summarize(values) for key, values in samples.items()}


def fleet(url: str, namespace: str, clients: int, moves: int) -> dict[str, Any]:
    """Move latency to ``clients`` PromptClient processes and to as many raw subscribers."""
    raw = propagation.run(url, namespace, clients, moves, rollbacks=0, block=5 if moves < 50 else 10)
    client, floor = raw["client"], raw["raw"]
    return {
        "client_ms": _report.summarize(client["samples_ms"]),
        "raw_ms": _report.summarize(floor["samples_ms"]),
        "missed_moves": sum(client["missed_per_process"]),
        "missed_raw": sum(floor["missed_per_process"]),
        "clients_at_final_version": raw["clients_at_final_version"],
        "client_states": raw["client_states"],
        "startup_s": raw["startup_s"],
    }


def _print(look: dict[str, Any], moves: dict[str, Any], config: dict[str, Any], env: dict[str, Any]) -> bool:
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    floor_key = next(iter(look))
    floor = look[floor_key]["p50"]
    rows: list[tuple[str, ...]] = [
        (key, _report.fmt(st["p50"]), _report.fmt(st["p90"]), _report.fmt(st["min"]),
         _report.fmt_ratio(_report.ratio(st["p50"], floor)))
        for key, st in look.items()
    ]  # fmt: skip
    title = f"Lookup: ns per call, {config['repeats']} blocks of {PROMPTS} calls each, interleaved"
    print(_report.table(["call", "p50 ns", "p90 ns", "min ns", "p50 / floor"], rows, title=title))
    get_ratio = max(_report.ratio(st["p50"], floor) for key, st in look.items() if key != floor_key)
    client, raw = moves["client_ms"], moves["raw_ms"]
    n = config["clients"]
    move_ratio = _report.ratio(client["p99"], raw["p99"])
    rows = [
        ("raw redis-py pub/sub (floor)", f"{raw['n']:,}", _report.fmt(raw["p50"]), _report.fmt(raw["p99"]),
         _report.fmt(raw["max"]), "-"),
        ("set_label -> on_change in each client", f"{client['n']:,}", _report.fmt(client["p50"]),
         _report.fmt(client["p99"]), _report.fmt(client["max"]), _report.fmt_ratio(move_ratio)),
    ]  # fmt: skip
    print()
    title = f"Label move -> {n} processes ({config['moves']} moves per fleet, ms)"
    print(_report.table(["path", "samples", "p50 ms", "p99 ms", "max ms", "p99 / floor"], rows, title=title))
    checks = [
        (f"get() <= {BOUND:g}x the floor (worst p50 ratio {get_ratio:.2f}x)", get_ratio <= BOUND),
        (f"move p99 <= {BOUND:g}x raw pub/sub p99 ({move_ratio:.2f}x)", move_ratio <= BOUND),
        (f"no move missed ({moves['missed_moves']} missed of {config['moves']} x {n})", moves["missed_moves"] == 0),
        (f"every client at the final version ({moves['clients_at_final_version']}/{n})",
         moves["clients_at_final_version"] == n),
    ]  # fmt: skip
    print()
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return all(ok for _, ok in checks)


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    config = {
        "clients": args.clients or (10 if args.quick else 50),
        "moves": args.moves or (50 if args.quick else 100),
        "repeats": 300 if args.quick else 3000,
    }
    wall = time.perf_counter()
    with _harness.redis_url(args) as url:
        env = _report.environment(_harness.server_version(url))
        look = lookups(url, args.namespace, config["repeats"])
        moves = fleet(url, args.namespace, config["clients"], config["moves"])
    passed = _print(look, moves, config, env)
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s (fleet start-up {moves['startup_s']:.1f} s of it)")
    _report.write_json(
        args.json,
        {
            "benchmark": "client_speed",
            "quick": args.quick,
            "environment": env,
            "config": {**config, "prompts": PROMPTS, "bound": BOUND},
            "lookup_ns": look,
            "propagation": moves,
            "passed": passed,
            "wall_seconds": elapsed,
        },
    )
    return 1 if args.strict and not passed else 0


if __name__ == "__main__":
    _harness.run_main(main)
