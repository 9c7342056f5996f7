"""``benchmarks/fleet.py --quick`` runs end to end on a real redis-server and reports every figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_fleet_benchmark_quick(tmp_path: Path) -> None:
    out = tmp_path / "fleet.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/fleet.py", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=180, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "| " in done.stdout and "noisy" in done.stdout
    data: dict[str, Any] = json.loads(out.read_text())
    cost, confirmed = data["server_cost"], data["confirmation"]
    assert cost["reporters"] == cost["members_listed"] == 200
    assert cost["reports_per_s"] > 0 and 1.5 * cost["reports_per_s"] < cost["commands_per_s"]
    assert cost["memory_bytes_per_client"] > 0 and cost["fleet_read_ms"]["p50"] > 0
    assert confirmed["incomplete"] == 0 and confirmed["clients"] == 3
    assert 0 < confirmed["write_to_confirmed_ms"]["p50"] < 5000
