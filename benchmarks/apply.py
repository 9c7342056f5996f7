"""The client's CPU per change message: a process woken per message, then decode + apply alone.

Every process of a fleet wakes for every change message, so this cost is paid once per write per
process, and on a busy host the processes pay it one after the other.

**A process woken per message** (the headline). Three processes subscribe to one registry's channel:
a bare redis-py subscriber (``SUBSCRIBE`` and ``pubsub.listen()``, defaults, nothing else: the floor,
as in ``benchmarks/propagation.py``), a :class:`~promptreg.PromptClient` with ``fleet_report=False``,
and a :class:`~promptreg.PromptClient` as deployed (it acknowledges each change with a fleet report).
The parent moves a label of a registry of ``--process-prompts`` prompts, one move at a time with a
pause of 30-60 ms after each (longer than :data:`~promptreg.client.presence.ACK_COALESCE`: every move
is a change after a quiet time, acknowledged at once), and reads each child's CPU time just before
each move: Linux's CPU-time clock of that process (``clock_getcpuclockid``: user + system time of
all its threads, in ns), read from the parent, so the child does nothing for the measurement. A
sample is the CPU a child used from one move to the next: waking, reading, decoding, applying,
acknowledging, and whatever its timers did meanwhile (the listener's 1 s wait step, the periodic
fleet report: they show in p90/p99 and the mean, not the median). No ``on_change`` callback is
registered. The figures are per message, with the ratio of each median to the bare subscriber's.

**Decode + apply in a hot loop, as the registry grows.** For each size a
:class:`promptreg.client.cache.Cache` is loaded with that many prompts (``production``, ``staging``
and ``latest`` each), then label-move messages (msgpack, as the write scripts publish them) are
decoded and applied one by one in this process, each timed with ``perf_counter_ns``. In the same run
the same messages go through the baseline, the apply before 0.2 (rebuilt here: it copied the prompt
index and the moved label's dict for every message, so its cost grew with the registry). Only the
part of a message's cost that depends on the registry's size; no wake-up, no network, no ack.

    python -m benchmarks.apply [--quick] [--url URL] [--process-prompts 100] [--messages 300]
        [--prompts 1000,10000,100000] [--json PATH]
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from sys import intern
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/apply.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
import redis

from benchmarks import _harness, _report
from promptreg.client.cache import Cache
from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.registry.models import PromptVersion
from promptreg.registry.redis.store import RedisPromptRegistry
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
                name,
                cached_from_model(PromptVersion.trusted(number, f"v{number} of {name}: {{{{x}}}}", at, None, None, {})),
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


def _no_fetch(name: str, number: int) -> CachedVersion | None:
    raise AssertionError(f"fetched {name} v{number}: every version is cached")


# -- a process woken per message --------------------------------------------------------------------

PROCESSES = ("bare redis-py subscriber", "PromptClient, fleet_report=False", "PromptClient (acknowledges)")
PAUSE_S = (0.03, 0.06)
"""The pause after each move: longer than ACK_COALESCE, so every move is acknowledged at once."""
WARMUP_MOVES = 5
STOP_SUFFIX = ":bench-stop"


def cpu_ns(pid: int) -> int:
    """CPU time (user + system, every thread) of process ``pid`` so far, in ns: Linux's process
    CPU-time clock (``clock_getcpuclockid(pid)`` is ``(~pid << 3) | 2``), read without disturbing it."""
    return time.clock_gettime_ns(((~pid) << 3) | 2)


def bare_subscriber(conn: Connection, url: str, channel: str) -> None:
    """The floor: redis-py ``SUBSCRIBE`` with its defaults and ``listen()``; counts the messages
    until one comes on ``channel + STOP_SUFFIX`` (the clients never see it)."""
    subscriber = redis.Redis.from_url(url)
    pubsub: Any = subscriber.pubsub()
    pubsub.subscribe(channel, channel + STOP_SUFFIX)
    deadline = time.monotonic() + 30
    confirmed = 0
    while confirmed < 2:
        message = pubsub.get_message(timeout=1.0)
        confirmed += message is not None and message["type"] == "subscribe"
        if time.monotonic() > deadline:
            raise TimeoutError("no SUBSCRIBE confirmation")
    conn.send(("ready", os.getpid()))
    count = 0
    stop = (channel + STOP_SUFFIX).encode()
    for message in pubsub.listen():
        if message["type"] == "message":
            if message["channel"] == stop:
                break
            count += 1
    conn.send(("done", {"messages": count}))
    pubsub.close()
    subscriber.close()


def client_process(conn: Connection, url: str, namespace: str, fleet_report: bool) -> None:
    """A serving process: one PromptClient, idle in the main thread (blocked on the pipe)."""
    from promptreg.client import PromptClient

    with PromptClient(url, namespace=namespace, fleet_report=fleet_report, start_timeout=60) as prompts:
        if not prompts.wait_ready(60):
            raise RuntimeError(f"client not ready: {prompts.status()}")
        reporter = prompts._presence.reporter
        conn.send(("ready", os.getpid()))
        reports = None if reporter is None else reporter.reports
        conn.recv()  # ("finish",)
        status = prompts.status()
        done = None if reporter is None or reports is None else reporter.reports - reports
        conn.send(("done", {"rev": status.rev, "state": status.state.value, "reports": done,
                            "client_id": prompts.client_id}))  # fmt: skip


def seed(registry: RedisPromptRegistry, prompts: int) -> dict[str, int]:
    """``prompts`` prompts with two versions each, ``production`` at 1; returns where it points."""
    for i in range(prompts):
        name = f"team{i % 10}/prompt-{i}"
        registry.create_prompt(name)
        registry.add_version(name, f"v1 of {name}: {{{{x}}}}")
        registry.add_version(name, f"v2 of {name}: {{{{x}}}}")
        registry.set_label(name, "production", 1)
    return {f"team{i % 10}/prompt-{i}": 1 for i in range(prompts)}


def woken_per_message(url: str, namespace: str, prompts: int, count: int) -> dict[str, Any]:
    """CPU per message of each of :data:`PROCESSES`, moved ``count`` times (module docstring)."""
    registry = RedisPromptRegistry.from_url(url, namespace=namespace)
    rng = random.Random(11)
    try:
        where = seed(registry, prompts)
        with _harness.Children() as children:
            conns = [children.start(bare_subscriber, url, registry.keys.channel),
                     children.start(client_process, url, namespace, False),
                     children.start(client_process, url, namespace, True)]  # fmt: skip
            pids = children.expect_all("ready", timeout=120)
            names = sorted(where)
            reads: list[list[int]] = []
            for move in range(WARMUP_MOVES + count + 1):
                if move >= WARMUP_MOVES:
                    reads.append([cpu_ns(pid) for pid in pids])
                if move == WARMUP_MOVES + count:
                    break
                name = rng.choice(names)
                where[name] = 3 - where[name]
                last = registry.set_label(name, "production", where[name])
                time.sleep(rng.uniform(*PAUSE_S))
            deadline = time.monotonic() + 10  # the last move's acknowledgement (a record per fleet member)
            while (acked := max((m.rev for m in registry.fleet()), default=None)) != last.rev:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            children.send_all(("finish",), conns[1:])
            clients = children.expect_all("done", timeout=60, conns=conns[1:])
            registry.redis.publish(registry.keys.channel + STOP_SUFFIX, b"stop")
            (bare,) = children.expect_all("done", timeout=60, conns=conns[:1])
    finally:
        registry.close()
    samples = {
        name: [(after[i] - before[i]) / 1000 for before, after in itertools.pairwise(reads)]
        for i, name in enumerate(PROCESSES)
    }
    checks = {"bare_messages": bare["messages"], "expected_messages": WARMUP_MOVES + count,
              "client_revs": [c["rev"] for c in clients], "final_rev": last.rev,
              "client_states": [c["state"] for c in clients], "acknowledged_rev": acked,
              "reports_while_measured": clients[1]["reports"]}  # fmt: skip
    return {"samples_us": samples, "checks": checks}


def _process_table(result: dict[str, Any], count: int, prompts: int) -> tuple[str, dict[str, Any]]:
    summaries = {name: _report.summarize(values) for name, values in result["samples_us"].items()}
    floor = summaries[PROCESSES[0]]
    rows = [[name, s["n"], _report.fmt(s["p50"]), _report.fmt(s["p90"]), _report.fmt(s["p99"]), _report.fmt(s["mean"]),
             _report.fmt_ratio(_report.ratio(s["p50"], floor["p50"])),
             _report.fmt_ratio(_report.ratio(s["mean"], floor["mean"]))] for name, s in summaries.items()]  # fmt: skip
    title = (f"CPU per change message, a process woken per message ({count} moves of a {prompts}-prompt "
             f"registry, {PAUSE_S[0] * 1000:g}-{PAUSE_S[1] * 1000:g} ms apart)")  # fmt: skip
    headers = ["process", "messages", "p50 us", "p90 us", "p99 us", "mean us", "p50 / bare", "mean / bare"]
    ratios = {name: {"p50": _report.ratio(s["p50"], floor["p50"]), "mean": _report.ratio(s["mean"], floor["mean"])}
              for name, s in summaries.items()}  # fmt: skip
    return _report.table(headers, rows, title=title), {"cpu_us": summaries, "ratio_to_bare": ratios}


# -- both ---------------------------------------------------------------------------------------------


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--process-prompts", type=int, default=100, help="prompts in the woken processes' registry")
    parser.add_argument("--messages", type=int, default=None, help="moves measured in the processes (300; quick 60)")
    parser.add_argument("--prompts", default=None, help="hot-loop sizes, comma-separated (default 1000,10000,100000)")


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__.splitlines()[0], argv, extra=_options)
    sizes = [int(s) for s in (args.prompts or ("1000,10000" if args.quick else "1000,10000,100000")).split(",")]
    count = 100 if args.quick else 500
    moves = args.messages or (60 if args.quick else 300)
    started = time.monotonic()
    with _harness.redis_url(args) as url:
        server = _harness.server_version(url)
        woken = woken_per_message(url, args.namespace, args.process_prompts, moves)
    env = _report.environment(server)
    text, process = _process_table(woken, moves, args.process_prompts)
    print(text)
    checks = woken["checks"]
    print(f"\nChecks: the bare subscriber counted {checks['bare_messages']} of {checks['expected_messages']} messages; "
          f"client revs {checks['client_revs']} (final {checks['final_rev']}), states {checks['client_states']}; "
          f"the acknowledging client's fleet record says rev {checks['acknowledged_rev']}; it wrote "
          f"{checks['reports_while_measured']} reports for its {checks['expected_messages']} moves.\n")  # fmt: skip
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
                        title="Decode + apply alone, in a hot loop (no wake-up, no network, no ack)"))  # fmt: skip
    env["load_average_at_end"] = list(os.getloadavg())
    print(_report.environment_line(env) + f"; load at the end {'/'.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(_report.NOISE_NOTE)
    _report.write_json(args.json, {"quick": args.quick, "process": {**process, "moves": moves, "checks": checks,
                                   "prompts": args.process_prompts, "pause_s": list(PAUSE_S)},
                                   "messages": count, "apply": results, "environment": env,
                                   "wall_seconds": time.monotonic() - started})  # fmt: skip
    return 0


if __name__ == "__main__":
    _harness.run_main(main)
