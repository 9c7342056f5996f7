"""``benchmarks/composition.py`` runs end to end at a small size on a real redis-server (and
PostgreSQL) and reports every figure, with no missed move. No speed asserted: speed is shown in
the benchmark's output, never timed in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _need_redis_server
from tests.postgres_server import need_postgres

ROOT = Path(__file__).resolve().parent.parent
CLIENTS, DEPENDENTS, MOVES = 3, 50, 3


def _run(tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "composition.json"
    args = ["--quick", "--clients", str(CLIENTS), "--dependents", str(DEPENDENTS), "--moves", str(MOVES)]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.composition", *args, *extra, "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "| " in done.stdout and "noisy" in done.stdout and "Target: get() of a composed prompt" in done.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["benchmark"] == "composition" and data["quick"] is True and data["wall_seconds"] > 0
    config = data["config"]
    assert (config["clients"], config["dependents"], config["moves"]) == (CLIENTS, DEPENDENTS, MOVES)
    return data


def _positive(stats: dict[str, float]) -> None:
    assert stats["n"] > 0 and 0 < stats["min"] <= stats["p50"] <= stats["p99"] <= stats["max"]


def _check_run(run: dict[str, Any]) -> None:
    assert sum(run["seed_seconds"].values()) > 0
    rows = {row["contender"]: row for row in run["lookup"]["rows"]}
    assert set(rows) == {"floor", "composed", "plain"}
    assert rows["floor"]["ratio_to_floor_median"] == 1.0
    for row in rows.values():
        assert 0 < row["median_ns"] <= row["p99_ns"] and row["lookups"] > 0
        assert row["ratio_to_floor_median"] > 0 and row["ratio_to_plain_median"] > 0
    summary, counts = run["summary"], run["counts"]
    assert summary["missed_moves"] == 0
    for kind in ("plain", "partial"):
        figures = summary[kind]
        assert figures["moves"] == MOVES and figures["missed"] == 0 and figures["served_wrong"] == 0
        assert figures["processes_that_missed"] == 0 and figures["waits_timed_out"] == 0
        assert figures["apply_not_recorded"] == 0 and figures["unaligned_moves"] == 0
        for key in ("served_ms", "apply_cpu_ms", "apply_wall_ms"):
            _positive(figures[key])
            assert figures[key]["n"] == MOVES * CLIENTS
        for key in ("last_process_ms", "set_label_ms", "before_publish_ms", "fleet_apply_cpu_per_move_ms"):
            _positive(figures[key])
            assert figures[key]["n"] == MOVES
    assert all(value is not None and value > 0 for value in summary["ratios_partial_to_plain"].values())
    assert counts == {"texts_exact_at_end": CLIENTS, "processes_at_final_version": CLIENTS, "client_states": ["live"]}


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_composition_benchmark_quick_on_redis(tmp_path: Path) -> None:
    _need_redis_server()
    data = _run(tmp_path)
    [run] = data["runs"]
    assert run["backend"] == "redis"
    _check_run(run)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.bench
def test_composition_benchmark_quick_on_postgres(tmp_path: Path) -> None:
    need_postgres()
    data = _run(tmp_path, "--backend", "postgres")
    [run] = data["runs"]
    assert run["backend"] == "postgres" and data["environment"]["postgres_server"]
    _check_run(run)
