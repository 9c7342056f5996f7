"""Client start-up at scale: time to ready and the stall other Redis clients see.

For each size (3 versions and 2 labels per prompt: ``production`` -> 2, ``staging`` -> 3) it starts
a :class:`promptreg.PromptClient` in a fresh child process and measures the time until ``wait_ready()``
returns and the child's peak RSS (``getrusage``; the RSS after the imports, before the client, is its
baseline), four ways:

* ``index``: the state read from the index (``{ns}:ix:*``) in bounded chunks (this version);
* ``no hiredis``: the same with redis-py's pure-Python parser (``hiredis`` hidden from the child);
* ``0.1.0``: the same registry without its index marker, read the old way (one MULTI/EXEC of
  O(prompts) commands, then every version): the baseline, run up to ``--old-max`` prompts;
* ``subset``: ``prompts=`` of 100 names, from the index.

The RSS target is ``2 x`` the UTF-8 size of the prompt texts the client caches ``+ 60 MB``.

During each start-up a bystander process PINGs the server in a loop on its own connection (its
worst round trip is the stall another client sees), and the server's SLOWLOG records every command
over 1 ms (its longest is the largest single command, a ``MULTI``/``EXEC`` counting as one).
The bystander's idle PING time is measured in the same run as the baseline. The registry is written
directly with pipelines in the exact key layout of :mod:`promptreg.registry.redis.keys` (index included), since
writing 100k prompts through the scripts would take minutes and is not what is measured.

    python -m benchmarks.startup [--quick] [--prompts 10000,50000,100000] [--old-max 50000] [--no-hiredis]
                                 [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/startup.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgpack
import redis

from benchmarks import _harness, _report
from promptreg.registry.redis.keys import Keyspace

TEXT = "You are a careful assistant for {{team}}. Answer the question about {{topic}} briefly. " * 2


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompts", default=None, help="sizes, comma-separated (default 10000,50000,100000)")
    parser.add_argument("--old-max", type=int, default=50000, help="largest size the 0.1.0 read is run at")
    parser.add_argument("--no-hiredis", action="store_true", help="also start each size without hiredis")


def populate(url: str, namespace: str, prompts: int) -> None:
    """Write ``prompts`` prompts (3 versions, production -> 2, staging -> 3) and their index."""
    keys = Keyspace(namespace)
    at = datetime.now(UTC).isoformat()
    metadata = msgpack.packb({})
    with redis.Redis.from_url(url) as conn:
        for start in range(0, prompts, 1000):
            pipe: Any = conn.pipeline(transaction=False)
            names = [f"team{i % 50}/prompt-{i}" for i in range(start, min(prompts, start + 1000))]
            for name in names:
                pipe.hset(keys.prompt(name), mapping={"created_at": at, "latest": 3})
                for number in (1, 2, 3):
                    pipe.hset(
                        keys.version(name, number),
                        mapping={"prompt_text": f"{TEXT} v{number} {name}", "created_at": at, "metadata": metadata},
                    )
                pipe.set(keys.label(name, "production"), 2)
                pipe.set(keys.label(name, "staging"), 3)
                pipe.sadd(keys.labels(name), "production", "staging")
            pipe.sadd(keys.prompts, *names)
            pipe.hset(keys.index_latest, mapping=dict.fromkeys(names, 3))
            pipe.hset(keys.index_label("production"), mapping=dict.fromkeys(names, 2))
            pipe.hset(keys.index_label("staging"), mapping=dict.fromkeys(names, 3))
            pipe.execute()
        conn.sadd(keys.index_labels, "production", "staging")
        conn.set(keys.rev, prompts * 6)
        conn.set(keys.index_format, 1)


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
        time.sleep(0.0005)
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


_CHILD = (
    "import sys\n"
    "if sys.argv[1] == 'no-hiredis':\n"
    "    sys.modules['hiredis'] = None  # redis-py falls back to its pure-Python parser and packer\n"
    "from benchmarks.startup import client_child\n"
    "client_child(sys.argv[2:])\n"
)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def client_child(argv: list[str]) -> None:
    """In the child: import, report the baseline RSS, wait for ``go``, start the client, report."""
    url, namespace, subset_json = argv
    import redis.utils

    from promptreg.client import PromptClient

    subset = json.loads(subset_json)
    print(json.dumps({"baseline_rss_mb": _rss_mb()}), flush=True)
    sys.stdin.readline()
    start = time.perf_counter()
    client = PromptClient(url, namespace=namespace, prompts=subset, start_timeout=600)
    ready = client.wait_ready(600)
    elapsed = time.perf_counter() - start
    versions = client._cache.versions  # the versions the client caches (private: a benchmark's view)
    text_mb = sum(len(v.prompt_text.encode()) for v in versions.values()) / 2**20
    figures = {"ready": ready, "ready_s": elapsed, "peak_rss_mb": _rss_mb(), "text_mb": text_mb,
               "versions": len(versions), "hiredis": redis.utils.HIREDIS_AVAILABLE,
               "status": str(client.status())}  # fmt: skip
    client.close()
    print(json.dumps(figures), flush=True)


def measure(url: str, namespace: str, subset: Sequence[str] | None, hiredis: bool = True) -> dict[str, Any]:
    """One start-up in a fresh child process: seconds to ready, its peak RSS, the bystander's worst
    and p99 PING, the longest server command."""
    env = {**os.environ, "PYTHONPATH": str(_harness.REPO_ROOT)}
    args = [sys.executable, "-c", _CHILD, "hiredis" if hiredis else "no-hiredis", url, namespace, json.dumps(subset)]
    child = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdin is not None and child.stdout is not None
    try:
        baseline = json.loads(child.stdout.readline())
        with redis.Redis.from_url(url) as admin:
            admin.config_set("slowlog-log-slower-than", 1000)
            admin.slowlog_reset()
            process, conn = _start_bystander(url)
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline()
            samples = _stop_bystander(process, conn)
            slow: list[Any] = admin.slowlog_get(128)
        child.wait(60)
    finally:
        if child.poll() is None:
            child.kill()
    if not line:
        raise RuntimeError(f"the client child exited with {child.returncode}")
    figures = json.loads(line)
    if not figures.pop("ready"):
        raise RuntimeError(f"client not ready: {figures['status']}")
    if figures["hiredis"] != hiredis:
        raise RuntimeError(f"the child ran with hiredis={figures['hiredis']}, not {hiredis}")
    return {
        **figures,
        **baseline,
        "rss_target_mb": 2 * figures["text_mb"] + 60,
        "ping_max_ms": max(samples) * 1000,
        "ping_p99_ms": _report.percentile(samples, 99) * 1000,
        "slowest_command_ms": max((entry["duration"] for entry in slow), default=0) / 1000,
    }


def idle_ping(url: str, seconds: float = 1.0) -> dict[str, float]:
    """The bystander with nothing else running: the baseline of its PING round trip."""
    process, conn = _start_bystander(url)
    time.sleep(seconds)
    samples = _stop_bystander(process, conn)
    return {"ping_max_ms": max(samples) * 1000, "ping_p99_ms": _report.percentile(samples, 99) * 1000}


def main(argv: Sequence[str] | None = None) -> int:
    args = _harness.parse_args(__doc__ or "", argv, _options)
    sizes = [int(s) for s in (args.prompts or ("2000,10000" if args.quick else "10000,50000,100000")).split(",")]
    rows: list[list[object]] = []
    results: dict[str, Any] = {}
    with _harness.redis_url(args) as url:
        env = _report.environment(_harness.server_version(url))
        baseline = idle_ping(url)
        results["idle"] = baseline
        rows.append(["idle bystander", "-", "-", "-", "-", "-", _report.fmt(baseline["ping_p99_ms"]),
                     _report.fmt(baseline["ping_max_ms"]), "-", "-"])  # fmt: skip
        for size in sizes:
            namespace = f"{args.namespace}.{size}"
            populate(url, namespace, size)
            names = [f"team{i % 50}/prompt-{i}" for i in range(0, size, max(1, size // 100))][:100]
            runs = {"index": measure(url, namespace, None)}
            if args.no_hiredis:
                runs["no hiredis"] = measure(url, namespace, None, hiredis=False)
            runs["subset"] = measure(url, namespace, names)
            if size <= args.old_max:
                with redis.Redis.from_url(url) as admin:
                    admin.delete(Keyspace(namespace).index_format)
                runs["0.1.0"] = measure(url, namespace, None)
            results[str(size)] = runs
            for path, figures in runs.items():
                old = runs.get("0.1.0")
                versus = _report.fmt_ratio(figures["ready_s"] / old["ready_s"]) if old else "-"
                cells = [figures[k] for k in ("ready_s", "peak_rss_mb", "rss_target_mb", "baseline_rss_mb",
                                              "ping_p99_ms", "ping_max_ms", "slowest_command_ms")]  # fmt: skip
                rows.append([f"{size:,} prompts", path, *(_report.fmt(c) for c in cells), versus])
            _harness.drop_namespace(url, namespace)
            print(f"  {size:,} prompts done", file=sys.stderr, flush=True)
        headers = ["registry", "read", "ready s", "peak RSS MB", "RSS target MB", "RSS after imports MB",
                   "PING p99 ms", "PING max ms", "slowest cmd ms", "vs 0.1.0"]  # fmt: skip
        title = "PromptClient start-up (one client in a fresh process, bystander PING)"
        print(_report.table(headers, rows, title=title))
        print("RSS target = 2 x the UTF-8 size of the prompt texts the client caches + 60 MB")
        env["load_average_at_end"] = list(os.getloadavg())
        print(_report.environment_line(env))
        _report.write_json(args.json, {"environment": env, "startup": results})
    return 0


if __name__ == "__main__":
    _harness.install_exit_handlers()
    raise SystemExit(main())
