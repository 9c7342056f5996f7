"""Composition: ``get()`` of a composed prompt against the floor, and a partial's move served
recomposed by a fleet of client processes, with each client's CPU for the recomposition.

The registry (``benchmarks/_composition_seed.py``): a partial ``bench-partial`` (two versions with
the same variables, each including ``bench-base``: nested once), a fixed partial ``bench-tone``,
``--dependents`` prompts (default 1,000) including both at ``production`` (created with
``--compatibility``, default ``backward``, so every move checks each dependent's composed
interface), as many plain prompts whose text is a dependent's composed text (same size), and
``bench-solo``, a plain prompt with no dependents. Everything is written through the public API.

**Lookup** (one process, one :class:`~promptreg.PromptClient`): ``get()`` of the dependents (each a
:class:`~promptreg.client.composition.ComposedVersion`), ``get()`` of their plain look-alikes, and
the floor of ``benchmarks/lookup.py`` (a method doing one dict lookup) over the same names, each
timed by ``benchmarks/_timing.py`` (blocks of 1,000 calls, GC off) in interleaved rounds. Median and
p99 across blocks, each a ratio to the floor of the same run. Target: median <= 1.3x the floor.

**Propagation of a partial move** (``--clients`` processes, default 50, forked; each a PromptClient
as deployed). The parent moves ``bench-partial``'s ``production`` between its two versions (a
*partial move*: every process recomposes every dependent in the same ``Cache.apply`` that moves the
label), and, as the baseline in the same run and on the same fleet, ``bench-solo``'s ``production``
(a *plain move*). Blocks of each kind alternate; a move starts when every process serves the last.
A sample is one (move, process): ``CLOCK_MONOTONIC`` in the process once its ``on_change`` callback
has checked that ``get(dep).partials["bench-partial"]`` is the new version for every dependent
(for the plain move, ``get("bench-solo").version``), minus ``CLOCK_MONOTONIC`` in the parent as
``set_label()`` is called (one clock for every process of the machine). A process that never
serves a move, or serves another version, *missed* it (must be 0); at the end each process also
compares every dependent's full text with the expected composition. Reported beside it: the
parent's ``set_label()`` wall time (for a partial move it includes the graph check over every
dependent, in Python before the write script), and the part of it before the command that publishes
(``benchmarks._fleet.PublishClock``), so the reader sees where the time goes.

**Client CPU per move.** In each process, :meth:`promptreg.client.cache.Cache.apply` is wrapped
(in that forked process only) to read ``time.thread_time_ns()`` before and after: ``apply`` runs on
the feed thread, so the difference is the CPU that thread spent applying that one message, the
recomposition of every dependent included (and any garbage collection its allocations set off),
and nothing of any other thread. That is the figure reported, per (move, process), with its wall
time beside it (on 2 cores shared by 50 processes the wall time holds the waits for a core too),
and its sum over the processes per move (the fleet's CPU for one move). Not chosen: the process's
CPU time across the move (``time.process_time()`` deltas, or the parent reading each child's CPU
clock as ``benchmarks/apply.py`` does), which would also count the message's receipt and decoding,
the fleet acknowledgement, timers, and this benchmark's own ``on_change`` check of every dependent
(about as many lookups as dependents); the whole process's cost per message is
``benchmarks/apply.py``'s subject. Left out here: receiving and decoding the message (the same for both kinds of move).

Without ``--url`` every server is started here on free 127.0.0.1 ports and stopped at the end; a
``--url`` is used as it is and the benchmark's namespace deleted at the end. ``--backend both`` runs
PostgreSQL, then Redis. ``--part lookup`` or ``--part propagation`` runs one half only.

    python -m benchmarks.composition [--clients 50] [--dependents 1000] [--moves 100]
        [--backend redis|postgres|both] [--compatibility none|backward|full] [--part all|lookup|propagation]
        [--url URL] [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/composition.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import _harness, _report
from benchmarks._composition_fleet import Fleet, lookup_worker, run_moves
from benchmarks._composition_report import counts, print_run, summary_of
from benchmarks._composition_seed import PARTIAL, seed

__all__ = ["main", "run_backend"]

PARTS = ("all", "lookup", "propagation")


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clients", type=int, default=None, help="client processes (default 50; --quick: 5)")
    parser.add_argument("--dependents", type=int, default=None, help="prompts including the partial (1000; 100)")
    parser.add_argument("--moves", type=int, default=None, help="measured moves of each kind (default 100; 6)")
    parser.add_argument(
        "--compatibility", choices=("none", "backward", "full"), default="backward",
        help="the dependents' compatibility mode (default backward: each move checks their composed interface)",
    )  # fmt: skip
    parser.add_argument("--part", choices=PARTS, default="all", help="run the lookup or the propagation half only")
    _harness.add_backend_option(parser)


def _config(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    config = {
        "clients": args.clients or (5 if quick else 50),
        "dependents": args.dependents or (100 if quick else 1000),
        "moves": args.moves or (6 if quick else 100),
        "block": 3 if quick else 10,
        "warmup_moves": 1 if quick else 3,
        "compatibility": args.compatibility,
        "part": args.part,
        "lookup": {"block": 1000, "repeats": 40 if quick else 3000, "rounds": 2 if quick else 5},
    }
    if min(config["clients"], config["dependents"], config["moves"]) < 1:
        raise SystemExit("--clients, --dependents and --moves must be at least 1")
    return config


def run_backend(url: str, namespace: str, config: dict[str, Any]) -> dict[str, Any]:
    """Seed, then the parts ``config`` asks for, on the registry at ``url``; the raw figures."""
    deps = config["dependents"]
    run: dict[str, Any] = {"backend": _harness.backend_of(url)}
    run["seed_seconds"] = seed(url, namespace, deps, config["compatibility"])
    if config["part"] in ("all", "lookup"):  # first, on a quiet machine: no fleet running yet
        with _harness.Children() as children:
            children.start(lookup_worker, url, namespace, deps, config["lookup"])
            [run["lookup"]] = children.expect_all("lookup", timeout=600)
    if config["part"] in ("all", "propagation"):
        fleet = Fleet(url, namespace, config["clients"], deps)
        started = time.perf_counter()
        try:
            fleet.start()
            run["fleet_startup_s"] = time.perf_counter() - started
            moves = run_moves(fleet, config["moves"], config["block"], config["warmup_moves"])
            reports = fleet.finish()
        except BaseException:
            fleet.close(failed=True)
            raise
        fleet.close()
        run["summary"] = summary_of(moves, reports)
        run["counts"] = counts(reports, fleet.current[PARTIAL])
    return run


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    backends = _harness.backends(args)
    config = _config(args)
    wall = time.perf_counter()
    load_at_start = list(os.getloadavg())
    runs: list[dict[str, Any]] = []
    versions: dict[str, str] = {}
    for backend in backends:
        with _harness.backend_url(args, backend) as url:
            versions[backend] = _harness.server_version(url)
            runs.append(run_backend(url, args.namespace, config))
    env = _report.environment(versions.get("redis", "-"), versions.get("postgres"))
    env["load_average_at_start"], env["load_average_at_end"] = load_at_start, list(os.getloadavg())
    print(_report.environment_line(env))
    print(_report.NOISE_NOTE)
    loads = [" / ".join(f"{x:.2f}" for x in env[key]) for key in ("load_average_at_start", "load_average_at_end")]
    own = " (the fleet's own processes count in it: a partial move makes every one of them runnable at once)"
    if config["part"] == "lookup":
        own = ""
    print(f"Load average (1 / 5 / 15 min) at the start of the run {loads[0]}, at its end {loads[1]}{own}.")
    for run in runs:
        print_run(run, config)
    elapsed = time.perf_counter() - wall
    print(f"\nwall time {elapsed:.1f} s")
    _report.write_json(
        args.json,
        {
            "benchmark": "composition",
            "quick": args.quick,
            "environment": env,
            "config": {**config, "backends": backends},
            "runs": runs,
            "wall_seconds": elapsed,
        },
    )
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
