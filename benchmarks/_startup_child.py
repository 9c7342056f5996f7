"""The measured process of the start-up benchmark: one start-up, reported as two JSON lines.

:func:`benchmarks.startup.measure` starts it fresh for every run (``hiredis`` hidden first for a
``no hiredis`` run). It imports everything, prints its RSS after the imports, waits for a line on
stdin (the parent resets the server's SLOWLOG and starts the bystander meanwhile), starts, and
prints its figures: ``ready_s`` (wall seconds from the start until ready) and ``cpu_s`` (the CPU
seconds this process used meanwhile, every thread: on a shared machine, wall time well above it is
time spent waiting for the server or for a core).

Peak RSS is the kernel's high-water mark of this process's memory (``VmHWM`` of
``/proc/self/status``): ``getrusage``'s ``ru_maxrss`` keeps the parent's peak across the
``fork``/``exec`` that started the child, so it reported the benchmark's own memory whenever that
was larger.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import redis
import redis.utils

from promptreg.client import PromptClient
from promptreg.registry.redis.keys import Keyspace

CHUNK = 1000
"""Keys per ``MGET`` of the floor, entries per ``HSCAN`` step."""
START_TIMEOUT = 180.0
"""Seconds a client may take to be ready (the slowest start-up measured, 0.1.0 at 50k, took 9 s)."""


def rss_mb() -> float:
    """This process's peak RSS in MB (``VmHWM``; ``ru_maxrss`` where there is no ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _text_mb(texts: Sequence[str], messages: Sequence[Sequence[dict[str, str]] | None]) -> float:
    size = sum(len(text.encode()) for text in texts)
    size += sum(len(m.get("content", "").encode()) for chat in messages if chat for m in chat)
    return size / 2**20


def client(url: str, namespace: str, subset: list[str] | None) -> dict[str, Any]:
    """:class:`~promptreg.PromptClient` until ``wait_ready()`` returns."""
    start, cpu = time.perf_counter(), _cpu_s()
    started = PromptClient(url, namespace=namespace, prompts=subset, start_timeout=START_TIMEOUT)
    ready = started.wait_ready(max(0.1, START_TIMEOUT - (time.perf_counter() - start)))
    figures: dict[str, Any] = {"ready_s": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu, "ready": ready,
                               "peak_rss_mb": rss_mb()}  # fmt: skip
    versions = list(started._cache.versions.values())  # what the client caches (private: a benchmark's view)
    figures.update(versions=len(versions), status=str(started.status()),
                   text_mb=_text_mb([v.prompt_text for v in versions], [v.messages for v in versions]))  # fmt: skip
    started.close()
    return figures


def floor(url: str, namespace: str, subset: list[str] | None) -> dict[str, Any]:
    """Bare redis-py reading what the client needs (``benchmarks/startup.py``'s docstring)."""
    keys = Keyspace(namespace)
    unpack = msgpack.unpackb
    start, cpu = time.perf_counter(), _cpu_s()
    gc.disable()  # as the client does while it builds a full state (client/feeds.py: collector_paused)
    conn: Any = redis.Redis.from_url(url)
    pointers: dict[str, dict[str, int]] = {}
    labels = [raw.decode() for raw in conn.smembers(keys.index_labels)]
    for label, key in [("latest", keys.index_latest), *((label, keys.index_label(label)) for label in labels)]:
        for raw, value in conn.hscan_iter(key, count=CHUNK):
            name = raw.decode()
            numbers = pointers.get(name)
            if numbers is None:
                numbers = pointers[name] = {}
            numbers[label] = int(value)
    wanted = list({(name, n) for name, numbers in pointers.items() for n in numbers.values()})
    chunks = [wanted[first : first + CHUNK] for first in range(0, len(wanted), CHUNK)]
    records: dict[tuple[str, int], Any] = {}
    # The next MGET is sent before this one's records are decoded: the server works meanwhile, as it
    # does for the client (client/redis/versions.py streams its chunks the same way).
    connection = conn.connection_pool.get_connection()
    for index, chunk in enumerate(chunks):
        if index == 0:
            connection.send_command("MGET", *[keys.packed(name, n) for name, n in chunk])
        if index + 1 < len(chunks):
            connection.send_command("MGET", *[keys.packed(name, n) for name, n in chunks[index + 1]])
        for pair, raw in zip(chunk, connection.read_response(), strict=True):
            records[pair] = unpack(raw, raw=False)
    conn.connection_pool.release(connection)
    figures: dict[str, Any] = {"ready_s": time.perf_counter() - start, "cpu_s": _cpu_s() - cpu, "ready": True,
                               "peak_rss_mb": rss_mb()}  # fmt: skip
    gc.enable()
    rows = list(records.values())
    figures.update(versions=len(rows), status="floor", text_mb=_text_mb([r[1] for r in rows], [r[6] for r in rows]))
    conn.close()
    return figures


def main(argv: list[str]) -> None:
    """``main([client|floor, url, namespace, subset as JSON])``: the protocol of the module docstring."""
    kind, url, namespace, subset_json = argv
    start_up = client if kind == "client" else floor
    print(json.dumps({"baseline_rss_mb": rss_mb()}), flush=True)
    sys.stdin.readline()
    figures = start_up(url, namespace, json.loads(subset_json))
    figures["hiredis"] = redis.utils.HIREDIS_AVAILABLE
    print(json.dumps(figures), flush=True)
