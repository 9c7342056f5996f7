"""The benchmarks run end to end (``--quick --json``) on a real redis-server and report every figure.

No speed thresholds here: speed is judged from the benchmark output, never asserted in tests. What is
asserted: the scripts run both ways (``-m`` and by path), start and stop their own server or use
``--url`` (and leave no keys behind), and their JSON holds consistent figures (no missed moves).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import redis

from benchmarks import _baselines, _report, propagation
from benchmarks.propagation import ttl_staleness
from promptreg.registry.models import PromptVersion
from tests.conftest import _need_redis_server, need_binaries
from tests.postgres_server import need_postgres
from tests.redis_server import RedisServer, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], json_path: Path, timeout: float = 120) -> dict[str, Any]:
    _need_redis_server()
    done = subprocess.run(
        [sys.executable, *args, "--quick", "--json", str(json_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "| " in done.stdout and "noisy" in done.stdout  # a table, and the machine caveat
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert data["quick"] is True and data["wall_seconds"] > 0
    assert data["environment"]["redis_server"] and data["environment"]["cpu_count"] >= 1
    return data


def _positive_stats(stats: dict[str, float]) -> None:
    assert stats["n"] > 0
    assert 0 < stats["min"] <= stats["p50"] <= stats["p99"] <= stats["max"]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_writes_benchmark_by_path_through_sentinel(tmp_path: Path) -> None:
    need_binaries("redis-server", "redis-sentinel")
    data = _run(["benchmarks/writes.py", "--sentinel"], tmp_path / "writes.json", timeout=180)
    results = data["results"]
    assert {(r["operation"], r["writers"]) for r in results} == {
        (op, w) for op in ("ping", "add_version", "set_label") for w in (1, 4)
    }
    for r in results:
        assert r["ops"] > 0 and r["ops_per_s"] > 0 and r["seconds"] > 0
        assert r["latency_us"]["n"] == r["ops"]
        _positive_stats(r["latency_us"])
        if r["operation"] != "ping":
            assert r["p50_ratio_to_floor"] > 0 and r["throughput_ratio_to_floor"] > 0


def test_apply_benchmark_by_path(tmp_path: Path) -> None:
    data = _run(["benchmarks/apply.py"], tmp_path / "apply.json")
    assert set(data["apply"]) == {"1000", "10000"}
    for figures in data["apply"].values():
        assert set(figures) == {"in place (this version)", "copying (before)"}
        for summary in figures.values():
            _positive_stats(summary)
            assert summary["n"] == data["messages"]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_lookup_benchmark(tmp_path: Path) -> None:
    data = _run(["-m", "benchmarks.lookup"], tmp_path / "lookup.json")
    csc = data["client_side_cache"]
    assert isinstance(csc["available"], bool) and csc["note"]
    expected = {"floor", "promptreg", "ttl_cache", "redis_label_get", "redis_full_read", "promptreg_tracing",
                "promptreg_metrics", "floor_keyword", "promptreg_rollout_key", "promptreg_rollout_random",
                "promptreg_key_no_rollout"}  # fmt: skip
    if csc["available"]:
        expected.add("client_side_cache")
    assert [r["prompts"] for r in data["results"]] == data["config"]["sizes"]
    assert len(data["config"]["sizes"]) == 3
    for result in data["results"]:
        rows = result["rows"]
        assert {(r["contender"], r["threads"]) for r in rows} == {(c, t) for c in expected for t in (1, 4)}
        for row in rows:
            assert 0 < row["median_ns"] <= row["p99_ns"]
            assert row["lookups"] > 0 and row["lookups_per_s"] > 0 and row["blocks"] > 0
            assert row["ratio_to_floor_median"] > 0
            if row["contender"] == "floor":
                assert row["ratio_to_floor_median"] == 1.0
        assert result["memory"]["promptreg_bytes_per_version"] > 0
        assert result["memory"]["ttl_cache_bytes_per_version"] > 0
        assert result["ttl_refreshes_while_timing"] == 0  # the TTL cache was timed on fresh entries
        assert result["rollouts_applied_seconds"] > 0
    assert set(data["counting_ns"]) == {"dict increment (metrics=True)", "Counter.add with attributes"}
    renders = data["render"]  # PromptClient.render on a seeded prompt, then benchmarks/render.py's templates
    assert "PromptClient.render (get + render)" in renders["seeded prompt (1,000 cached)"]
    for figures in renders.values():
        assert {"str.format", "format_map (engine floor)", "PromptVersion.render"} <= set(figures)
        assert all(ns > 0 for ns in figures.values())


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_propagation_benchmark_on_a_given_url(tmp_path: Path, redis_server: RedisServer) -> None:
    namespace = "benchtest" + os.urandom(4).hex()
    plot = tmp_path / "cdf.png"
    data = _run(
        ["-m", "benchmarks.propagation", "--url", redis_server.url, "--namespace", namespace, "--plot", str(plot)],
        tmp_path / "propagation.json",
    )
    config, summary, counts = data["config"], data["summary"], data["counts"]
    clients, moves = config["clients"], config["moves"]
    assert summary["promptreg_on_change_ms"]["n"] == clients * moves
    assert summary["raw_pubsub_ms"]["n"] == clients * moves
    assert summary["promptreg_last_client_per_move_ms"]["n"] == moves
    for key in ("promptreg_on_change_ms", "raw_pubsub_ms", "promptreg_last_client_per_move_ms"):
        _positive_stats(summary[key])
    assert summary["missed_moves"] == 0 and summary["missed_raw_messages"] == 0
    assert counts["missed_per_client"] == [0] * clients
    assert counts["events_per_client"] == [counts["expected_events_per_client"]] * clients
    assert counts["clients_at_final_version"] == clients
    assert counts["waits_timed_out"] == {"client": 0, "raw": 0}
    assert summary["rollback_fleet_ms"]["n"] == config["rollbacks"] and summary["rollback_not_served"] == 0
    assert summary["rollback_on_change_per_client_ms"]["n"] == config["rollbacks"] * clients
    assert all(v > 0 for v in summary["ratios_to_raw"].values())
    assert summary["ttl_cache"]["last_client_s"]["p50"] > summary["ttl_cache"]["per_client_s"]["p50"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert data["plot"].startswith("not written")
    else:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with redis.Redis.from_url(redis_server.url) as conn:  # --url: the benchmark removes its keys
        assert list(conn.scan_iter(match="{" + namespace + "*")) == []


def _check_propagation_run(run: dict[str, Any], clients: int, moves: int) -> None:
    summary, counts = run["summary"], run["counts"]
    assert summary["promptreg_on_change_ms"]["n"] == clients * moves
    assert summary["raw_pubsub_ms"]["n"] == clients * moves
    for key in ("promptreg_on_change_ms", "raw_pubsub_ms", "promptreg_last_client_per_move_ms"):
        _positive_stats(summary[key])
    assert summary["missed_moves"] == 0 and summary["missed_raw_messages"] == 0
    assert counts["events_per_client"] == [counts["expected_events_per_client"]] * clients
    assert counts["clients_at_final_version"] == clients and counts["client_states"] == ["live"]
    assert all(v > 0 for v in summary["ratios_to_raw"].values())


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
@pytest.mark.parametrize(("topology", "floor"), [("replicas", "publish"), ("cluster", "spublish")])
def test_propagation_benchmark_per_topology(tmp_path: Path, topology: str, floor: str) -> None:
    need_binaries("redis-server", "redis-sentinel" if topology == "replicas" else "redis-cli")
    data = _run(["-m", "benchmarks.propagation", "--topology", topology], tmp_path / "p.json", timeout=240)
    [run] = data["runs"]
    assert (run["backend"], run["topology"], run["floor"]) == ("redis", topology, floor)
    _check_propagation_run(run, data["config"]["clients"], data["config"]["moves"])
    assert data["plot"] == "not requested"  # docs/propagation_cdf.png is the primary topology's


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.bench
def test_propagation_benchmark_postgres_and_redis_side_by_side(tmp_path: Path) -> None:
    need_postgres()
    data = _run(["benchmarks/propagation.py", "--backend", "both"], tmp_path / "p.json", timeout=240)
    assert [(r["backend"], r["floor"]) for r in data["runs"]] == [("postgres", "notify"), ("redis", "publish")]
    for run in data["runs"]:
        _check_propagation_run(run, data["config"]["clients"], data["config"]["moves"])
    assert data["environment"]["postgres_server"] and data["summary"] == data["runs"][0]["summary"]


@pytest.mark.redis
@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.bench
def test_writes_benchmark_postgres_and_redis_side_by_side(tmp_path: Path) -> None:
    need_postgres()
    data = _run(["-m", "benchmarks.writes", "--backend", "both"], tmp_path / "w.json", timeout=240)
    floors = {"postgres": "select_1", "redis": "ping"}
    assert data["floors"] == floors
    assert {(r["backend"], r["operation"], r["writers"]) for r in data["results"]} == {
        (b, op, w) for b in floors for op in (floors[b], "add_version", "set_label") for w in (1, 4)
    }
    for r in data["results"]:
        assert r["ops"] > 0 and r["latency_us"]["n"] == r["ops"]
        _positive_stats(r["latency_us"])
        if r["operation"] != floors[r["backend"]]:
            assert r["p50_ratio_to_floor"] > 0


@pytest.mark.parametrize(
    "argv",
    [
        ["--backend", "postgres", "--topology", "cluster"],
        ["--url", "redis://127.0.0.1:1/0", "--backend", "postgres"],
        ["--url", "redis://127.0.0.1:1/0", "--topology", "replicas"],
    ],
)
def test_propagation_refuses_options_that_do_not_fit(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as raised:  # before any server is started or contacted
        propagation.main([*argv, "--quick"])
    assert raised.value.code not in (0, None)


def test_node_urls_keep_credentials_and_tls() -> None:
    url = "rediss+sentinel://u:p@127.0.0.1:26379,127.0.0.1:26380/svc/0?read_from=primary"
    assert propagation._node_url(url, "10.0.0.2", 6380) == "rediss://u:p@10.0.0.2:6380/0"
    assert propagation._node_url("redis+cluster://h:1/", "10.0.0.3", 7000) == "redis://10.0.0.3:7000/0"
    cluster = "redis+cluster://:secret@a:1,b:2/?socket_timeout=3"
    assert propagation._cluster_url(cluster, "c", 3) == "redis+cluster://:secret@c:3/?socket_timeout=3"


def test_percentiles_and_tables() -> None:
    values = [float(v) for v in range(1, 101)]
    assert _report.percentile(values, 50) == pytest.approx(50.5)
    assert _report.percentile(values, 99) == pytest.approx(99.01)
    assert _report.summarize([3.0, 1.0, 2.0])["p50"] == 2.0
    with pytest.raises(ValueError):
        _report.summarize([])
    text = _report.table(["name", "ns"], [("floor", "51.4"), ("60 s TTL", "391")])
    lines = text.splitlines()
    assert lines[1].endswith(":|") and lines[2] == "| floor    | 51.4 |"
    assert lines[3] == "| 60 s TTL |  391 |"  # numbers right-aligned; text starting with a digit is not


def test_ttl_staleness_model() -> None:
    one = ttl_staleness(1, ttl=60.0)
    assert one["per_client_s"]["p50"] == 30.0 and one["last_client_s"]["p50"] == pytest.approx(30.0)
    fifty = ttl_staleness(50, ttl=60.0)
    assert fifty["last_client_s"]["mean"] == pytest.approx(60.0 * 50 / 51)
    assert 58 < fifty["last_client_s"]["p50"] < 60


def test_ttl_cache_serves_stale_and_refreshes_once_in_background() -> None:
    now = [0.0]
    fetched: list[str] = []
    release = threading.Event()

    def fetch(name: str, label: str) -> PromptVersion:
        fetched.append(name)
        if len(fetched) > 1:
            release.wait(5)
        return PromptVersion(version=len(fetched), prompt_text=f"text {len(fetched)}")

    cache = _baselines.TtlCache(fetch, ttl=60.0, clock=lambda: now[0])
    try:
        assert cache.get("p").version == 1  # cold miss: fetched synchronously
        now[0] = 59.0
        assert cache.get("p").version == 1 and fetched == ["p"]  # fresh: no fetch
        now[0] = 61.0
        assert cache.get("p").version == 1 and cache.get("p").version == 1  # stale served, one refresh
        release.set()
        assert wait_until(lambda: cache.refreshes == 1, timeout=5)
        assert cache.get("p").version == 2 and fetched == ["p", "p"]
    finally:
        cache.close()
