"""The processes of the composition benchmark (``benchmarks/composition.py``): the PromptClient
fleet that serves a partial's moves, the parent that moves it, and the one process that times lookups.

Each fleet process is forked (:class:`benchmarks._harness.Children`), runs one
:class:`~promptreg.PromptClient` as deployed (fleet reports on) and, in that process only, wraps
:meth:`promptreg.client.cache.Cache.apply` to read the feed thread's CPU clock
(``time.thread_time_ns``) and ``perf_counter_ns`` around every change message it applies. Its
``on_change`` callback (on the feed thread, after the change is visible to ``get()``) stamps
``CLOCK_MONOTONIC`` on entry, then checks what the process serves: after a move of the partial,
``get(dep).partials["bench-partial"]`` is the new version for *every* dependent; after the baseline
move, ``get("bench-solo").version`` is. It stamps again once the check is done (the *served*
stamp), keeps both, and releases a shared semaphore, so the parent knows when every process serves
the move. Stamps and apply times are sent only at the end: nothing but the stamp, the check and the
release happens while a move is in flight.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

from benchmarks import _baselines, _fleet, _harness, _report, _timing
from benchmarks._composition_seed import LABEL, PARTIAL, SOLO, composed_text, dependent, plain
from promptreg.registry import PromptRegistryFactory

MOVED = (PARTIAL, SOLO)


def _time_applies(record: dict[int, tuple[str, int, int]]) -> None:
    """In this (forked) process: wrap ``Cache.apply`` so each message applied records
    ``rev -> (prompt, feed thread CPU ns, wall ns)``. ``apply`` runs on the feed thread, so the
    thread's CPU clock read around it is the CPU that one message cost, and no other thread's."""
    from promptreg.client.cache import Action, Cache

    original: Callable[..., Any] = Cache.apply

    def timed_apply(self: Any, message: Any, fetch: Any) -> Any:
        wall = time.perf_counter_ns()
        cpu = time.thread_time_ns()  # read inside the wall interval: CPU <= wall, bar clock granularity
        result = original(self, message, fetch)
        spent_cpu = time.thread_time_ns() - cpu
        spent_wall = time.perf_counter_ns() - wall
        if result.action is Action.APPLIED:
            record[message.rev] = (message.prompt, spent_cpu, spent_wall)
        return result

    setattr(Cache, "apply", timed_apply)  # noqa: B010  # this child process only


def client_worker(conn: Connection, url: str, namespace: str, dependents: int, sem: Semaphore) -> None:
    """A service process (module docstring). ``("finish",)``: reply ``("events", {...})`` with every
    stamp, the apply times, and whether every dependent serves exactly the expected composed text."""
    from promptreg.client import PromptClient

    applies: dict[int, tuple[str, int, int]] = {}
    _time_applies(applies)
    client = PromptClient(url, namespace=namespace, default_label=LABEL, start_timeout=120.0)
    try:
        if not client.wait_ready(120.0):
            raise RuntimeError(f"client not ready: {client.status()}")
        names = [dependent(i) for i in range(dependents)]
        get: Any = client.get  # a ComposedVersion's .partials is not on CachedVersion's type
        stamps: list[tuple[int, str, int, int, int, bool]] = []  # (rev, name, version, entered, served, ok)
        highest = [0]

        def on_change(event: Any) -> None:
            entered = time.monotonic_ns()
            if event.label != LABEL or event.name not in MOVED:
                return
            target = event.version
            if event.name == PARTIAL:
                ok = all(get(name).partials[PARTIAL] == target for name in names)
            else:
                ok = get(SOLO).version == target
            stamps.append((event.rev, event.name, target, entered, time.monotonic_ns(), ok))
            if event.rev > highest[0]:  # one release per revision
                highest[0] = event.rev
                sem.release()

        client.on_change(on_change)
        conn.send(("ready", os.getpid()))
        command = conn.recv()
        if command[0] != "finish":
            raise ValueError(f"unknown command {command!r}")
        version = client.get(PARTIAL).version
        texts_ok = all(get(name).prompt_text == composed_text(i, version) for i, name in enumerate(names))
        conn.send(("events", {
            "stamps": stamps, "applies": [(rev, *spent) for rev, spent in applies.items()], "texts_ok": texts_ok,
            "partial_version": version, "state": client.status().state.value, "pid": os.getpid(),
        }))  # fmt: skip
    finally:
        client.close()


class Fleet:
    """The client processes and the parent's registry; every process stopped by :meth:`close`."""

    def __init__(self, url: str, namespace: str, clients: int, dependents: int) -> None:
        self.url, self.namespace, self.clients, self.dependents = url, namespace, clients, dependents
        self.registry = PromptRegistryFactory.from_url(url, namespace=namespace)
        self.sem = _harness.FORK.Semaphore(0)
        self.children = _harness.Children()
        self.clock = _fleet.PublishClock()
        self.current = {PARTIAL: 1, SOLO: 1}

    def start(self) -> None:
        for _ in range(self.clients):
            self.children.start(client_worker, self.url, self.namespace, self.dependents, self.sem)
        self.children.expect_all("ready", timeout=300)

    def move(self, name: str) -> dict[str, Any]:
        """Move ``name``'s ``production`` to its other version; returns once every process serves it
        (or 60 s passed: ``timed_out`` processes). Times in ``CLOCK_MONOTONIC`` ns."""
        target = 3 - self.current[name]
        self.clock.start()
        called = time.monotonic_ns()
        event = self.registry.set_label(name, LABEL, target, author="bench")
        returned = time.monotonic_ns()
        self.current[name] = target
        timed_out = _fleet.await_all(self.sem, self.clients, timeout=60)
        return {"name": name, "rev": event.rev, "version": target, "called_ns": called, "returned_ns": returned,
                "published_ns": self.clock.stamp, "timed_out": timed_out}  # fmt: skip

    def finish(self) -> list[dict[str, Any]]:
        self.children.send_all(("finish",))
        return list(self.children.expect_all("events", timeout=120))

    def close(self, *, failed: bool = False) -> None:
        self.children.close(grace=0.0 if failed else 5.0)
        self.registry.close()


def run_moves(fleet: Fleet, moves: int, block: int, warmup: int) -> list[dict[str, Any]]:
    """``warmup`` moves of each kind (not measured), then ``moves`` of each in alternating blocks of
    ``block``: baseline first, so drift on a noisy machine hits both alike. A 2-10 ms pause after
    each move. Returns the measured moves."""
    rng = random.Random(11)
    with fleet.clock.installed():  # after the children forked: the parent's commands only
        for _ in range(warmup):  # the first fetch of each version, connections warm: not measured
            fleet.move(SOLO)
            fleet.move(PARTIAL)
        measured: list[dict[str, Any]] = []
        done = dict.fromkeys(MOVED, 0)
        while min(done.values()) < moves:
            for name in (SOLO, PARTIAL):
                for _ in range(min(block, moves - done[name])):
                    measured.append(fleet.move(name))
                    done[name] += 1
                    time.sleep(rng.uniform(0.002, 0.010))
    return measured


def lookup_worker(conn: Connection, url: str, namespace: str, dependents: int, plan: dict[str, Any]) -> None:
    """One process, one PromptClient: ``get()`` of the composed dependents, of their plain
    look-alikes (same text, same size) and the floor (``benchmarks/lookup.py``'s: a method doing
    one dict lookup, over the same names), timed by ``benchmarks/_timing.py`` in interleaved rounds.
    Replies ``("lookup", {...})``."""
    from promptreg.client import PromptClient
    from promptreg.client.composition import ComposedVersion

    client = PromptClient(url, namespace=namespace, default_label=LABEL, start_timeout=120.0)
    try:
        if not client.wait_ready(120.0):
            raise RuntimeError(f"client not ready: {client.status()}")
        order = random.Random(dependents).sample(range(dependents), dependents)
        block: int = plan["block"]

        def cycle(names: list[str]) -> list[str]:  # every name, in random order, at least one block of them
            return (names * (-(-block // len(names))))[: max(len(names), block)]

        # Fresh string objects, as the client's own keys are (decoded from the registry): a dict
        # holding the very objects the loop passes in would skip the string compare on every hit.
        composed_keys = cycle([dependent(i) for i in order])
        plain_keys = cycle([plain(i) for i in order])
        versions: dict[str, Any] = {dependent(i).encode().decode(): client.get(dependent(i)) for i in range(dependents)}
        for i in range(dependents):
            served, lookalike = client.get(dependent(i)), client.get(plain(i))
            if not isinstance(served, ComposedVersion) or served.prompt_text != composed_text(i, 1):
                raise RuntimeError(f"{dependent(i)} is not served composed")
            if type(lookalike) is ComposedVersion or lookalike.prompt_text != served.prompt_text:
                raise RuntimeError(f"{plain(i)} is not the plain look-alike of {dependent(i)}")
        contenders: dict[str, tuple[Any, list[str]]] = {
            "floor": (_baselines.DictFloor(versions).get, composed_keys),
            "composed": (client.get, composed_keys),
            "plain": (client.get, plain_keys),
        }
        for get, keys in contenders.values():  # warm
            for key in keys:
                get(key)
        samples = {name: _timing.Samples() for name in contenders}
        for _ in range(plan["rounds"]):  # interleaved, so drift on a noisy machine hits all alike
            for name, (get, keys) in contenders.items():
                samples[name].add(_timing.time_lookups(get, keys, block, plan["repeats"] // plan["rounds"]))
        floor = _report.summarize(samples["floor"].per_lookup_ns)
        plain_stats = _report.summarize(samples["plain"].per_lookup_ns)
        rows = []
        for name, got in samples.items():
            row = _timing.row(name, dependents, 1, got, floor)
            row["ratio_to_plain_median"] = _report.ratio(row["median_ns"], plain_stats["p50"])
            row["ratio_to_plain_p99"] = _report.ratio(row["p99_ns"], plain_stats["p99"])
            rows.append(row)
        text_chars = len(composed_text(0, 1))
        conn.send(("lookup", {"rows": rows, "text_chars": text_chars, "names": len(set(composed_keys))}))
    finally:
        client.close()
