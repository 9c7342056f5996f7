"""``benchmarks/serve.py`` runs end to end (``--quick --json``) and reports consistent figures.

No speed is asserted (speed is read from the benchmark's output): every request answered 200 with
the expected length, every SSE subscriber got every label move exactly once, the floor and the
PromptClient saw every move, every figure is there and positive. The SSE reader the benchmark
uses to stamp arrivals is checked on its own, on a stream cut at every byte.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks._serve_stream import StreamSubscriber

ROOT = Path(__file__).resolve().parent.parent


def _positive(stats: dict[str, float], n: int | None = None) -> None:
    assert stats["n"] > 0 and (n is None or stats["n"] == n)
    assert 0 < stats["min"] <= stats["p50"] <= stats["p99"] <= stats["max"]


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.bench
def test_serve_benchmark_quick_run(tmp_path: Path) -> None:
    pytest.importorskip("starlette")
    pytest.importorskip("uvicorn")
    out = tmp_path / "serve.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.serve", "--quick", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "| " in done.stdout and "noisy" in done.stdout  # tables, and the machine caveat
    data: dict[str, Any] = json.loads(out.read_text())
    assert data["benchmark"] == "serve" and data["quick"] is True and data["wall_seconds"] > 0
    assert data["environment"]["redis_server"] and data["environment"]["serve_stack"]["uvicorn"]
    config = data["config"]

    resolve = data["resolve"]
    cells = {(r["connections"], r["server"]) for r in resolve["runs"]}
    assert cells == {(c, s) for c in config["concurrency"] for s in ("baseline", "resolve")}
    assert len(resolve["runs"]) == 2 * config["rounds"] * len(config["concurrency"])
    for r in resolve["runs"]:
        assert r["requests"] > 0 and r["requests_per_s"] > 0
        assert set(r["statuses"]) == {"200"} and r["non_200"] == 0  # warm-up responses included
        assert r["errors"] == 0 and r["wrong_length"] == 0  # every body the length of the resolve body
        _positive(r["latency_us"], r["requests"])
    for cell in resolve["summary"].values():
        assert cell["baseline"]["requests_per_s"] > 0 and cell["resolve"]["requests_per_s"] > 0
        assert all(v > 0 for v in cell["ratios"].values())

    stream = data["stream"]
    counts = stream["counts"]
    subscribers, moves = counts["subscribers"], counts["moves_measured"]
    assert subscribers == config["subscribers"] and moves == config["moves"]
    assert counts["server_subscribers_at_start"] == subscribers
    assert counts["missed"] == 0 and counts["duplicates"] == 0 and counts["unexpected"] == 0
    assert counts["subscribers_with_every_move_once"] == subscribers
    assert counts["closed_early"] == 0 and counts["non_200"] == 0 and counts["bad_data"] == 0
    assert counts["other_events"] == 0 and counts["ready_after_first_move"] == 0
    assert counts["floor_missed"] == 0 and counts["client_missed"] == 0
    assert 0 <= counts["moves_all_within_100ms"] <= moves
    _positive(stream["sse_every_subscriber_ms"], subscribers * moves)
    for key in ("sse_first_subscriber_per_move_ms", "sse_last_subscriber_per_move_ms", "floor_pubsub_ms",
                "prompt_client_on_change_ms", "set_label_call_ms"):  # fmt: skip
        _positive(stream[key], moves)
    assert stream["sse_first_subscriber_per_move_ms"]["p50"] <= stream["sse_last_subscriber_per_move_ms"]["p50"]
    assert all(v > 0 for v in stream["ratios_last_subscriber_to_floor"].values())

    cold, warm = data["list"]["cold"], data["list"]["warm"]
    assert cold["first_page"]["total"] == config["prompts"] + 1 and cold["first_page"]["on_page"] == 100
    assert cold["first_page"]["ms"] > 0 and cold["api_cold_pages_ms"] and cold["non_200"] == 0
    assert all(ms > 0 for ms in cold["api_cold_pages_ms"])
    kinds = {"list", "console"} if cold["console"]["present"] else {"list"}
    assert set(warm) == kinds
    if cold["console"]["present"]:
        assert cold["console"]["signed_in"] and cold["console_cold_pages_ms"]
    for figures in warm.values():
        assert figures["non_200"] == 0 and figures["ratio_p50"] > 0
        _positive(figures["serve_ms"], config["list_requests"])
        _positive(figures["baseline_ms"], config["list_requests"])


def _chunked(*events: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)


def test_stream_reader_parses_a_chunked_stream_cut_anywhere() -> None:
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    change = b'id: %d\nevent: change\ndata: {"rev":%d,"action":"set_label"}\n\n'
    body = _chunked(
        b"retry: 1000\n\n",
        b'id: 7\nevent: ready\ndata: {"rev":7}\n\n',
        change % (8, 8),
        b": heartbeat\n\n",
        change % (9, 9) + change % (10, 10),  # two events in one chunk
        b'id: 11\nevent: change\ndata: {"rev":12}\n\n',  # data that disagrees with its id
    )
    stream = head + body
    ends = [stream.index(b'{"rev":%d,' % rev) for rev in (8, 9, 10)] + [stream.index(b'{"rev":12}')]
    ends = [stream.index(b"\n\n", at) + 2 for at in ends]  # where each change event is complete
    for cut in range(1, len(stream)):
        reader = StreamSubscriber(b"")
        reader.feed(1, stream[:cut])
        reader.feed(2, stream[cut:])
        assert reader.status == 200 and reader.error is None
        assert reader.ready_rev == 7
        # each event is stamped with the arrival that completed it
        assert reader.changes == [(rev, 1 if end <= cut else 2) for rev, end in zip((8, 9, 10, 11), ends, strict=True)]
        assert reader.heartbeats == 1 and reader.other_events == 0 and reader.bad_data == 1
    error = StreamSubscriber(b"")
    error.feed(1, b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}")
    assert error.status == 401 and error.error is not None and error.changes == []
