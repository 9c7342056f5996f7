"""``benchmarks/startup.py`` runs end to end on tiny registries and reports every figure (no speed asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import _need_redis_server

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.redis, pytest.mark.slow, pytest.mark.bench]


def test_startup_benchmark_with_and_without_hiredis_subset_and_0_1_0(tmp_path: Path) -> None:
    _need_redis_server()
    out = tmp_path / "startup.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.startup", "--prompts", "300", "--old-max", "300", "--no-hiredis",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "peak RSS MB" in done.stdout and "| 300 prompts" in done.stdout
    runs = json.loads(out.read_text())["startup"]["300"]
    assert set(runs) == {"index", "no hiredis", "subset", "0.1.0"}
    assert runs["no hiredis"]["hiredis"] is False and runs["index"]["hiredis"] is True
    for name, figures in runs.items():
        assert figures["ready_s"] > 0 and figures["ping_max_ms"] > 0, name
        assert figures["peak_rss_mb"] >= figures["baseline_rss_mb"] > 0, name
        assert figures["rss_target_mb"] == pytest.approx(2 * figures["text_mb"] + 60), name
    # 2 versions per prompt cached (production -> 2, staging and latest -> 3); the subset: 100 prompts.
    assert runs["index"]["versions"] == runs["0.1.0"]["versions"] == 600
    assert runs["subset"]["versions"] == 200
