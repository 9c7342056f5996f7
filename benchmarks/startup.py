"""Client start-up at scale: time to ready against its floor, peak RSS, the server's slowest command.

For each size a registry of realistic data (:mod:`benchmarks._startup_data`: 3 versions and 2 labels
per prompt, texts of 100-300 characters with ``{{variables}}``, one in 1,000 with a literal brace,
one prompt in 20 with chat versions, a distinct ``created_at`` per version, author, message,
metadata and config on a share of them) is written in the exact layout of the Redis backend, each
version's hash with its packed record beside it, labels and index (:mod:`benchmarks._startup_redis`).
Each run then starts in a fresh child process (:mod:`benchmarks._startup_child`), which reports the
wall seconds from its start to ready, the CPU seconds it used meanwhile and its peak RSS (the
kernel's ``VmHWM``; "RSS after imports" is the same figure before the start). Each run is repeated
``--repeat`` times (default 3, the runs of a size taking turns) and its quickest start-up is shown:
on a shared machine the quickest is the nearest to a quiet run. The runs:

* ``floor``: bare redis-py (hiredis) reading what the client needs and building nothing else: the
  index hashes (``HSCAN``, 1,000 a step) for the names and their labels, then the packed records of
  the versions the labels point at (``MGET`` of 1,000 keys a command, the next sent before the
  records of one are decoded, as the client streams them), each decoded with ``msgpack.unpackb``
  into a dict, with the garbage collector paused as the client pauses it. The floor of CPython +
  redis-py on this machine, in this run: "x floor" is a run's ready time over it;
* ``index``: :class:`promptreg.PromptClient`, until ``wait_ready()`` returns;
* ``no hiredis`` (``--no-hiredis``): the same with redis-py's pure-Python parser;
* ``subset``: ``prompts=`` of 100 names;
* ``unpacked``: the packed records deleted (``UNLINK``, 1,000 keys a command), so the client reads
  every version from its hash, as from a registry written before them: what the records buy;
* ``0.1.0`` (up to ``--old-max`` prompts): the index marker deleted too, so the client reads the
  layout of 0.1.0 the old way (one ``MULTI``/``EXEC`` of O(prompts) commands).

The stall other clients see is the server's own SLOWLOG (``slowlog-log-slower-than 1000`` µs, reset
before each start-up): its longest command and how many took over 25 ms, over every start-up of the
run; beside them the server's CPU seconds during the start-up. A SLOWLOG duration is wall time in
the server, which a busy machine stretches when it preempts the server: the floor's slowest command
(the same ``MGET`` s) is the same-run baseline of that column. A bystander process PINGs the server
every 2 ms during each start-up; its round trip is shown for information only: on a shared 2-core
machine it measures CPU scheduling (when the bystander gets a core) more than the server.

PostgreSQL (a private server when one is installed, or ``--pg-url``; ``--no-postgres`` skips it):
the same data in its tables (:mod:`benchmarks._startup_pg`, loaded with ``COPY``), one client
start-up per size, reported with its ratio to the Redis ``index`` run of the same size.

``--json``: ``startup[size]`` holds the client runs on Redis (``index``, ``no hiredis``, ``subset``,
``0.1.0``), ``references[size]`` the ``floor``, ``unpacked`` and ``postgres`` runs.

    python -m benchmarks.startup [--quick] [--prompts 10000,100000] [--repeat 3] [--old-max 50000]
                                 [--no-hiredis] [--pg-url postgresql://... | --no-postgres]
                                 [--url redis://...] [--json PATH]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import multiprocessing.connection
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/startup.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import redis

from benchmarks import _harness, _report, _startup_pg, _startup_redis
from benchmarks._startup_data import prompt_name
from benchmarks._startup_redis import populate as populate  # benchmarks/_serve_list.py seeds its registry with it
from promptreg.registry.redis.keys import Keyspace

SLOWLOG_US = 1000
SLOWLOG_MAX = 100_000
STALL_MS = 25.0
RELEASE_RUNS = ("index", "no hiredis", "subset", "unpacked")
"""The start-ups of this release's client: the no-command-over-25-ms target applies to them."""
TARGETS = (
    "Targets (issue 24): 100k prompts ready <= 1.3 s on a quiet run and peak RSS <= 200 MB; 10k ready <= 0.15 s; "
    "no Redis command over 25 ms during a start-up; PostgreSQL start-up at 100k within 2x of Redis's."
)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", default=None, help="sizes, comma-separated (default 10000,50000,100000)")
    parser.add_argument("--old-max", type=int, default=50000, help="largest size the 0.1.0 read is run at")
    parser.add_argument("--no-hiredis", action="store_true", help="also start each size without hiredis")
    parser.add_argument("--repeat", type=int, default=None, help="start-ups of each run, the quickest kept (default 3, "
                        "quick 1)")  # fmt: skip
    _startup_pg.options(parser)


def _bystander(url: str, conn: multiprocessing.connection.Connection) -> None:
    """PING in a loop until told to stop; send back every round trip in seconds."""
    _harness.child_setup()
    client = redis.Redis.from_url(url)
    samples: list[float] = []
    conn.send("ready")
    while not conn.poll():
        start = time.perf_counter()
        client.ping()
        samples.append(time.perf_counter() - start)
        time.sleep(0.002)  # a light load: the bystander shares the 2 cores with what it watches
    conn.recv()
    conn.send(samples)


def _start_bystander(url: str) -> tuple[BaseProcess, multiprocessing.connection.Connection]:
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(target=_bystander, args=(url, child), daemon=True)
    process.start()
    parent.recv()
    return process, parent


def _stop_bystander(process: BaseProcess, conn: multiprocessing.connection.Connection) -> list[float]:
    conn.send("stop")
    samples: list[float] = conn.recv()
    process.join(5)
    return samples


def _ping_figures(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"ping_max_ms": 0.0, "ping_p99_ms": 0.0}
    return {"ping_max_ms": max(samples) * 1000, "ping_p99_ms": _report.percentile(samples, 99) * 1000}


@contextlib.contextmanager
def _watching(url: str | None) -> Iterator[dict[str, Any]]:
    """Around a start-up on the Redis at ``url``: the SLOWLOG reset before, a bystander PINGing
    during it; their figures land in the yielded dict after the block (nothing for ``None``)."""
    figures: dict[str, Any] = {}
    if url is None:
        yield figures
        return
    with redis.Redis.from_url(url) as admin:
        process, conn = _start_bystander(url)
        admin.slowlog_reset()
        cpu = _server_cpu_s(admin)
        try:
            yield figures
        finally:
            samples = _stop_bystander(process, conn)
        figures["server_cpu_s"] = _server_cpu_s(admin) - cpu
        logged: list[dict[str, Any]] = admin.slowlog_get(SLOWLOG_MAX)
    slow = [entry for entry in logged if _command_name(entry.get("command")) not in _OWN_COMMANDS]
    slowest = max(slow, key=lambda entry: int(entry["duration"]), default=None)
    figures.update(_ping_figures(samples))
    figures["slowest_command_ms"] = 0.0 if slowest is None else slowest["duration"] / 1000
    figures["slowest_command"] = None if slowest is None else _command_name(slowest.get("command"))
    figures["commands_over_25ms"] = sum(1 for entry in slow if entry["duration"] > STALL_MS * 1000)


_OWN_COMMANDS = frozenset({"SLOWLOG", "INFO"})
"""This benchmark's own commands around a start-up (a ``SLOWLOG RESET`` of many entries can take 1 ms)."""


def _server_cpu_s(admin: redis.Redis) -> float:
    info = admin.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _command_name(command: object) -> str:
    text = command.decode("utf-8", "replace") if isinstance(command, bytes) else str(command)
    return text.split(" ", 1)[0].upper()


_CHILD = (
    "import sys\n"
    "if sys.argv[1] == 'no-hiredis':\n"
    "    sys.modules['hiredis'] = None  # redis-py falls back to its pure-Python parser and packer\n"
    "from benchmarks._startup_child import main\n"
    "main(sys.argv[2:])\n"
)


def measure(
    url: str, namespace: str, subset: Sequence[str] | None = None, *, hiredis: bool = True, floor: bool = False
) -> dict[str, Any]:
    """One start-up in a fresh child process (the client's, or the floor's): its figures; on Redis also
    the server's slowest command and the bystander's PING."""
    env = {**os.environ, "PYTHONPATH": str(_harness.REPO_ROOT)}
    entry = "floor" if floor else "client"
    args = [sys.executable, "-c", _CHILD, "hiredis" if hiredis else "no-hiredis", entry, url, namespace,
            json.dumps(subset)]  # fmt: skip
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    try:
        first = child.stdout.readline()
        if not first:
            raise RuntimeError(f"the {entry} process exited with {child.wait(60)} before starting")
        baseline = json.loads(first)
        with _watching(url if _harness.backend_of(url) == "redis" else None) as server:
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline()
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
    if not line:
        raise RuntimeError(f"the {entry} process exited with {child.returncode}")
    figures = json.loads(line)
    if not figures.pop("ready"):
        raise RuntimeError(f"client not ready: {figures['status']}")
    if figures["hiredis"] != hiredis:
        raise RuntimeError(f"the child ran with hiredis={figures['hiredis']}, not {hiredis}")
    # rss_target_mb: the rule of earlier releases (2 x the cached text + 60 MB), kept in the JSON.
    return {**figures, **baseline, **server, "rss_target_mb": 2 * figures["text_mb"] + 60,
            "load_1m": os.getloadavg()[0]}  # fmt: skip


def idle_ping(url: str, seconds: float = 1.0) -> dict[str, float]:
    """The bystander with nothing else running: the baseline of its PING round trip."""
    process, conn = _start_bystander(url)
    time.sleep(seconds)
    return _ping_figures(_stop_bystander(process, conn))


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The quickest of a run's start-ups, with the slowest server command and the count over 25 ms of them all."""
    best = {**min(rounds, key=lambda figures: float(figures["ready_s"])), "ready_s_all": [f["ready_s"] for f in rounds]}
    if "slowest_command_ms" in best:
        worst = max(rounds, key=lambda figures: float(figures["slowest_command_ms"]))
        best.update(slowest_command_ms=worst["slowest_command_ms"], slowest_command=worst["slowest_command"],
                    commands_over_25ms=sum(int(f["commands_over_25ms"]) for f in rounds))  # fmt: skip
    return best


def _repeated(times: int, runs: Mapping[str, Callable[[], dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each run ``times`` times, the runs taking turns (a slow moment of the machine hits them alike)."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in runs}
    for _ in range(times):
        for name, run in runs.items():
            rounds[name].append(run())
    return {name: _best(found) for name, found in rounds.items()}


def measure_size(args: argparse.Namespace, url: str, pg_url: str | None, size: int) -> tuple[dict[str, Any], ...]:
    """Every run at one size: ``(client runs, references)`` (module docstring)."""
    namespace = f"{args.namespace}.{size}"
    times = args.repeat or (1 if args.quick else 3)
    subset = [prompt_name(i) for i in range(0, size, max(1, size // 100))][:100]
    first = {"floor": partial(measure, url, namespace, floor=True), "index": partial(measure, url, namespace)}
    if args.no_hiredis:
        first["no hiredis"] = partial(measure, url, namespace, hiredis=False)
    first["subset"] = partial(measure, url, namespace, subset)
    try:
        populate(url, namespace, size)
        runs = _repeated(times, first)
        refs = {"floor": runs.pop("floor")}
        if pg_url is not None:
            try:
                _startup_pg.populate(pg_url, namespace, size)
                refs.update(_repeated(times, {"postgres": partial(measure, pg_url, namespace)}))
                refs["postgres"]["ratio_to_redis"] = refs["postgres"]["ready_s"] / runs["index"]["ready_s"]
            finally:
                _startup_pg.drop(pg_url, namespace)
        unlinked = _startup_redis.unlink_packed(url, namespace, size)
        refs.update(_repeated(times, {"unpacked": partial(measure, url, namespace)}))
        refs["unpacked"]["records_unlinked"] = unlinked
        if size <= args.old_max:
            with redis.Redis.from_url(url) as admin:
                admin.delete(Keyspace(namespace).index_format)
            runs.update(_repeated(times, {"0.1.0": partial(measure, url, namespace)}))
    finally:
        _harness.drop_namespace(url, namespace)
    for name, figures in (*runs.items(), *refs.items()):
        if name not in ("subset", "postgres"):  # a subset reads 100 prompts, not the floor's all
            figures["ratio_to_floor"] = _report.ratio(figures["ready_s"], refs["floor"]["ready_s"])
    return runs, refs


def _size(size: int) -> str:
    return f"{size:,} prompts"


def _row(size: int, name: str, figures: dict[str, Any]) -> list[object]:
    ratio = figures.get("ratio_to_floor")
    return [_size(size), name, _report.fmt(figures["ready_s"]), "-" if ratio is None else _report.fmt_ratio(ratio),
            *(_report.fmt(figures[k]) for k in ("cpu_s", "server_cpu_s", "peak_rss_mb", "baseline_rss_mb",
                                                 "slowest_command_ms")),
            figures["slowest_command"] or "-", figures["commands_over_25ms"],
            *(_report.fmt(figures[k]) for k in ("ping_p99_ms", "ping_max_ms")),
            f"{figures['load_1m']:.2f}"]  # fmt: skip


def _met(ok: bool) -> str:
    return "met" if ok else "MISSED"


def verdicts(results: dict[str, Any], references: dict[str, Any]) -> list[str]:
    """This run against each target of :data:`TARGETS` it measured."""
    found: list[str] = []
    big, small = results.get("100000", {}).get("index"), results.get("10000", {}).get("index")
    if big is not None:
        found.append(f"100k ready {_report.fmt(big['ready_s'])} s ({_met(big['ready_s'] <= 1.3)}, load "
                     f"{big['load_1m']:.2f}), peak RSS {_report.fmt(big['peak_rss_mb'])} MB "
                     f"({_met(big['peak_rss_mb'] <= 200)})")  # fmt: skip
    if small is not None:
        found.append(f"10k ready {_report.fmt(small['ready_s'])} s ({_met(small['ready_s'] <= 0.15)}, load "
                     f"{small['load_1m']:.2f})")  # fmt: skip
    release = [figures for size, refs in references.items()
               for name, figures in (*results[size].items(), *refs.items()) if name in RELEASE_RUNS]  # fmt: skip
    if release:
        slowest = max(release, key=lambda figures: float(figures["slowest_command_ms"]))
        over = sum(int(figures["commands_over_25ms"]) for figures in release)
        worst = (f"{_report.fmt(slowest['slowest_command_ms'])} ms ({slowest['slowest_command']})"
                 if slowest["slowest_command"] else "none over 1 ms")  # fmt: skip
        found.append(f"slowest command of this release's start-ups: {worst}, {over} over 25 ms ({_met(over == 0)})")
    pg = references.get("100000", {}).get("postgres")
    if pg is not None:
        ratio = pg["ratio_to_redis"]
        found.append(f"PostgreSQL at 100k {_report.fmt_ratio(ratio)} Redis ({_met(ratio <= 2)})")
    return found


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__ or "", argv, _options)
    sizes = [int(s) for s in (args.prompts or ("2000,10000" if args.quick else "10000,50000,100000")).split(",")]
    started = time.monotonic()
    results: dict[str, Any] = {}
    references: dict[str, Any] = {}
    with _harness.redis_url(args) as url, _startup_pg.postgres_url(args) as pg_url:
        env = _report.environment(_harness.server_version(url), _harness.server_version(pg_url) if pg_url else None)
        with redis.Redis.from_url(url) as admin:
            admin.config_set("slowlog-log-slower-than", SLOWLOG_US)
            admin.config_set("slowlog-max-len", SLOWLOG_MAX)
        results["idle"] = idle_ping(url)
        for size in sizes:
            results[str(size)], references[str(size)] = measure_size(args, url, pg_url, size)
            print(f"  {size:,} prompts done (load {os.getloadavg()[0]:.2f})", file=sys.stderr, flush=True)
    idle = results["idle"]
    rows: list[list[object]] = [["idle bystander", *["-"] * 10, _report.fmt(idle["ping_p99_ms"]),
                                 _report.fmt(idle["ping_max_ms"]), "-"]]  # fmt: skip
    pg_rows: list[list[object]] = []
    for size in sizes:
        runs, refs = results[str(size)], references[str(size)]
        order = [("floor", refs["floor"]), *((n, runs[n]) for n in ("index", "no hiredis", "subset") if n in runs),
                 ("unpacked", refs["unpacked"]), *((n, runs[n]) for n in ("0.1.0",) if n in runs)]  # fmt: skip
        rows += [_row(size, name, figures) for name, figures in order]
        if "postgres" in refs:
            pg = refs["postgres"]
            pg_rows.append([_size(size), *(_report.fmt(pg[k]) for k in ("ready_s", "cpu_s", "peak_rss_mb",
                                                                        "baseline_rss_mb")),
                            _report.fmt(runs["index"]["ready_s"]), _report.fmt_ratio(pg["ratio_to_redis"]),
                            f"{pg['load_1m']:.2f}"])  # fmt: skip
    times = args.repeat or (1 if args.quick else 3)
    headers = ["registry", "run", "ready s", "x floor", "CPU s", "server CPU s", "peak RSS MB", "RSS after imports MB",
               "slowest cmd ms", "slowest cmd", "cmds > 25 ms", "PING p99 ms (info)", "PING max ms (info)",
               "load 1m"]  # fmt: skip
    each = "one start-up" if times == 1 else f"the quickest of {times} start-ups"
    title = f"PromptClient start-up on Redis (each run: {each}, each in a fresh process)"
    print(_report.table(headers, rows, title=title))
    print("x floor: ready time over the floor's (bare redis-py reading the index and the packed records), same size, "
          "same run. CPU s: the start-up process's; server CPU s: redis-server's meanwhile. slowest cmd: the "
          "server's SLOWLOG, the worst of every start-up of the run (wall time in the server: a preempted server "
          "stretches it; the floor's is its same-run baseline). PING: a bystander's round trip during the "
          "start-up, sensitive to CPU scheduling: information, not the stall.")  # fmt: skip
    if pg_rows:
        pg_headers = ["registry", "ready s", "CPU s", "peak RSS MB", "RSS after imports MB", "Redis index ready s",
                      "PostgreSQL / Redis", "load 1m"]  # fmt: skip
        print()
        print(_report.table(pg_headers, pg_rows, title="PromptClient start-up on PostgreSQL (same data)"))
    elif not args.no_postgres:
        print("\nPostgreSQL not measured: no PostgreSQL installed (pass --pg-url postgresql://...)")
    print()
    print(TARGETS)
    print("This run: " + "; ".join(verdicts(results, references)))
    print(_report.NOISE_NOTE)
    env["load_average_at_end"] = list(os.getloadavg())
    print(_report.environment_line(env))
    _report.write_json(args.json, {"environment": env, "quick": args.quick, "wall_seconds": time.monotonic() - started,
                                   "targets": TARGETS, "startup": results, "references": references})  # fmt: skip
    return 0


if __name__ == "__main__":
    _harness.install_exit_handlers()
    raise SystemExit(main())
