"""Several processes writing one registry at once, on a real redis-server and on the JSON file.

Each worker is a separate process (spawned, so nothing is shared but the store) that opens the
registry through ``PromptRegistryFactory.from_url``, waits at a barrier so all start together,
and reports what it got back through a queue.
"""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Iterator
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import pytest

from promptreg.registry import LabelConflictError, PromptRegistry, PromptRegistryFactory

pytestmark = pytest.mark.slow

NAME = "movie-critic"
LABEL = "production"
WORKERS = 4
VERSIONS_EACH = 25
ROUNDS = 6
TIMEOUT = 120.0


def _text(worker: int, n: int) -> str:
    return f"worker {worker} version {n}: review {{{{movie}}}}"


def _add_versions(url: str, options: dict[str, Any], worker: int, barrier: Any, results: Any) -> None:
    try:
        reg = PromptRegistryFactory.from_url(url, **options)
        barrier.wait(timeout=TIMEOUT)
        got = [(reg.add_version(NAME, _text(worker, n), author=f"w{worker}").version, n) for n in range(VERSIONS_EACH)]
        results.put((worker, got))
    except BaseException:
        results.put((worker, traceback.format_exc()))


def _race_for_label(url: str, options: dict[str, Any], worker: int, barrier: Any, results: Any) -> None:
    """Each round: all read the label, then all try to move it with that value as expected_version."""
    try:
        reg = PromptRegistryFactory.from_url(url, **options)
        outcomes: list[tuple[int, int, int, bool, int | None]] = []
        for round_ in range(ROUNDS):
            barrier.wait(timeout=TIMEOUT)  # the previous round is over
            prompt = reg.get_prompt(NAME)
            assert prompt is not None
            seen = prompt.labels.get(LABEL, 0)
            barrier.wait(timeout=TIMEOUT)  # everyone has read the same value
            # Targets differ between workers, and between consecutive rounds, so every move shows.
            target = worker + 1 + (WORKERS if round_ % 2 else 0)
            try:
                reg.set_label(NAME, LABEL, target, expected_version=seen, author=f"w{worker}")
                outcomes.append((round_, seen, target, True, None))
            except LabelConflictError as exc:
                outcomes.append((round_, seen, target, False, exc.actual))
        results.put((worker, outcomes))
    except BaseException:
        results.put((worker, traceback.format_exc()))


def _run_workers(target: Any, url: str, options: dict[str, Any]) -> dict[int, Any]:
    ctx: SpawnContext = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=target, args=(url, options, w, barrier, results), name=f"promptreg-worker-{w}")
        for w in range(WORKERS)
    ]
    try:
        for process in processes:
            process.start()
        reports = dict(results.get(timeout=TIMEOUT) for _ in processes)
        for process in processes:
            process.join(timeout=TIMEOUT)
            assert process.exitcode == 0, process.name
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
        results.close()
    failures = {w: r for w, r in reports.items() if isinstance(r, str)}
    assert not failures, failures
    return reports


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), "file"])
def store(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """A URL and options every process can open the same registry with."""
    if request.param == "redis":
        yield request.getfixturevalue("redis_server").url, {"namespace": namespace}
    else:
        (tmp_path / "shared").mkdir()
        yield f"file://{tmp_path / 'shared' / 'registry.json'}", {"lock_timeout": TIMEOUT}


def _open(store: tuple[str, dict[str, Any]]) -> PromptRegistry:
    url, options = store
    return PromptRegistryFactory.from_url(url, **options)


def test_concurrent_add_version_loses_and_duplicates_nothing(store: tuple[str, dict[str, Any]]) -> None:
    with _open(store) as reg:
        reg.create_prompt(NAME)
        reports = _run_workers(_add_versions, *store)
        prompt = reg.get_prompt(NAME)
        history = reg.history(NAME)
    assert prompt is not None
    total = WORKERS * VERSIONS_EACH
    assert [v.version for v in prompt.versions] == list(range(1, total + 1))
    expected_texts = {_text(w, n) for w in range(WORKERS) for n in range(VERSIONS_EACH)}
    assert sorted(v.prompt_text for v in prompt.versions) == sorted(expected_texts)
    for worker, got in reports.items():
        numbers = [number for number, _ in got]
        assert numbers == sorted(numbers)  # one process's versions come in its own order
        for number, n in got:  # each worker got back the number its text is stored under
            version = prompt.versions[number - 1]
            assert (version.prompt_text, version.author) == (_text(worker, n), f"w{worker}")
    added = [e for e in history if e.action == "add_version"]
    assert sorted(e.version for e in added if e.version is not None) == list(range(1, total + 1))
    assert len({e.rev for e in history}) == len(history)


def test_concurrent_compare_and_set_has_exactly_one_winner_per_round(store: tuple[str, dict[str, Any]]) -> None:
    with _open(store) as reg:
        reg.create_prompt(NAME)
        for n in range(2 * WORKERS):
            reg.add_version(NAME, f"text {n + 1}")
        reports = _run_workers(_race_for_label, *store)
        prompt = reg.get_prompt(NAME)
        moves = [e for e in reg.history(NAME) if e.action == "set_label"]
    assert prompt is not None
    previous = 0
    winners = []
    for round_ in range(ROUNDS):
        outcomes = [report[round_] for report in reports.values()]
        assert {seen for _, seen, _, _, _ in outcomes} == {previous}
        won = [target for _, _, target, ok, _ in outcomes if ok]
        assert len(won) == 1, outcomes
        assert [actual for _, _, _, ok, actual in outcomes if not ok] == [won[0]] * (WORKERS - 1)
        winners.append(won[0])
        previous = won[0]
    assert prompt.labels[LABEL] == winners[-1]
    assert [(e.previous_version or 0, e.version) for e in moves] == list(zip([0, *winners[:-1]], winners, strict=True))
