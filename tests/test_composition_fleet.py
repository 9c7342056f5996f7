"""A partial's move reaches client processes with every dependent recomposed (real Redis and
PostgreSQL), and concurrent moves of a partial and a dependent never make a client serve a
composition the registry did not hold at the revision it reports."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptreg.registry import PromptRegistry
from tests.backends import Backend, kinds, open_backend

DEPENDENTS = 5
PROCESSES = 10
SWAPS = 30
"""Versions of the partial and of the dependent the concurrent test moves between."""


@pytest.fixture(params=kinds("redis", "postgres"))
def live(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, namespace, tmp_path) as backend:
        yield backend


def _start(backend: Backend, count: int, names: list[str]) -> list[subprocess.Popen[str]]:
    command = [sys.executable, "-m", "tests.composition_client_proc", backend.url, backend.namespace, "production",
               *names]  # fmt: skip
    return [subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(count)]


def _line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"client {proc.pid} exited"
    parsed: dict[str, Any] = json.loads(line)
    return parsed


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.stdin is not None and not proc.stdin.closed:
            proc.stdin.close()
    deadline = time.monotonic() + 30
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _until_rev(proc: subprocess.Popen[str], rev: int, seen: list[dict[str, Any]]) -> dict[str, Any]:
    """Read ``proc``'s lines until one at ``rev`` or later (each appended to ``seen``); bounded by
    the process's own 120 s limit: it closes its output then."""
    while True:
        line = _line(proc)
        seen.append(line)
        if "rev" in line and line["rev"] >= rev:
            return line


def test_a_partial_move_reaches_every_process_recomposed(live: Backend) -> None:
    reg = live.make()
    reg.create_prompt("safety")
    reg.add_version("safety", "Stay safe, {{user}}.")
    reg.add_version("safety", "Stay very safe, {{user}}.")
    reg.set_label("safety", "production", 1)
    names = [f"dep-{i}" for i in range(DEPENDENTS)]
    for i, name in enumerate(names):
        reg.create_prompt(name)
        reg.add_version(name, f"{{{{> safety}}}} Task {i}: {{{{q}}}}")
        reg.set_label(name, "production", 1)
    procs = _start(live, PROCESSES, names)
    try:
        for proc in procs:
            assert _line(proc)["ready"]
            first = _line(proc)
            assert first["texts"]["dep-3"] == "Stay safe, {{user}}. Task 3: {{q}}"
        move = reg.set_label("safety", "production", 2)
        if live.kind == "redis":  # the fleet view confirms it (PostgreSQL clients do not report presence)
            waited = reg.wait_for_fleet(move.rev, timeout=20)
            assert len(waited.reached) >= PROCESSES and not waited.lagging, waited
        want = {name: f"Stay very safe, {{{{user}}}}. Task {i}: {{{{q}}}}" for i, name in enumerate(names)}
        for proc in procs:  # none missed, every dependent exactly recomposed
            assert _until_rev(proc, move.rev, [])["texts"] == want
    finally:
        _stop(procs)


def _mover(reg: PromptRegistry, name: str, errors: list[BaseException]) -> None:
    try:
        for k in [*range(2, SWAPS + 1), 1]:
            reg.set_label(name, "production", k)
    except BaseException as exc:  # reported by the test
        errors.append(exc)


def test_concurrent_moves_of_a_partial_and_a_dependent(live: Backend) -> None:
    reg = live.make()
    other = live.make()  # a second connection: the two writers race for real
    reg.create_prompt("part")
    reg.create_prompt("dep")
    for k in range(1, SWAPS + 1):
        reg.add_version("part", f"part-{k}")
    for k in range(1, SWAPS + 1):
        reg.add_version("dep", f"dep-{k} {{{{> part}}}}")
    reg.set_label("part", "production", 1)
    reg.set_label("dep", "production", 1)
    start = reg.revision()
    procs = _start(live, 3, ["dep"])
    try:
        lines: dict[int, list[dict[str, Any]]] = {}
        for proc in procs:
            assert _line(proc)["ready"]
            lines[proc.pid] = [_line(proc)]
        errors: list[BaseException] = []
        threads = [threading.Thread(target=_mover, args=(reg, "part", errors)),
                   threading.Thread(target=_mover, args=(other, "dep", errors))]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors
        end = reg.revision()
        # The registry's composition at every revision, replayed from its audit log.
        events = reg.changes_since(start)
        assert events is not None and len(events) == 2 * SWAPS
        at = {"part": 1, "dep": 1}
        expected = {start: "dep-1 part-1"}
        for event in events:
            at[event.prompt] = event.version or 0
            expected[event.rev] = f"dep-{at['dep']} part-{at['part']}"
        assert expected[end] == "dep-1 part-1"
        for proc in procs:
            _until_rev(proc, end, lines[proc.pid])
            assert proc.stdin is not None
            proc.stdin.close()
            while "seen" not in lines[proc.pid][-1]:
                lines[proc.pid].append(_line(proc))
        for pid, seen in lines.items():
            reports = [line for line in seen if "rev" in line]
            for line in reports:  # each report is the state at its revision: exactly the registry's
                assert line["texts"]["dep"] == expected[line["rev"]], (pid, line)
            assert reports[-1]["rev"] == end
            sampled = set(seen[-1]["seen"])
            assert sampled <= set(expected.values()), (pid, sampled - set(expected.values()))
    finally:
        _stop(procs)
