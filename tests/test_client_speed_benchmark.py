"""``benchmarks/client_speed.py`` runs end to end and reports consistent figures (no speed asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_client_speed_quick_run(tmp_path: Path, redis_server: object) -> None:
    out = tmp_path / "client_speed.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.client_speed", "--quick", "--clients", "4", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "PromptClient.get(name)" in done.stdout
    verdicts = [line.split()[0] for line in done.stdout.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert len(verdicts) == 4
    data = json.loads(out.read_text())
    assert data["benchmark"] == "client_speed" and data["quick"] is True
    lookups = data["lookup_ns"]
    assert len(lookups) == 4
    for stats in lookups.values():
        assert stats["n"] == data["config"]["repeats"]
        assert 0 < stats["min"] <= stats["p50"] <= stats["max"]
    moves = data["propagation"]
    assert moves["missed_moves"] == 0
    assert moves["clients_at_final_version"] == data["config"]["clients"] == 4
    assert moves["client_ms"]["n"] == moves["raw_ms"]["n"] == 4 * data["config"]["moves"]
    assert moves["client_states"] == ["live"]
    assert data["passed"] == ("FAIL" not in verdicts)
