"""``promptreg demo`` runs to completion on each kind of server and always cleans up after itself."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import redis

from promptreg.registry import PostgresPromptRegistry
from promptreg.registry.rollouts import picks_candidate
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer, free_port, wait_until

PROMPTREG = Path(sys.executable).with_name("promptreg")
LABEL_MOVES = [("set_label", 3, 2), ("set_label", 2, 3), ("rollback", 3, 2)]
EXPECTED_MOVES = [*LABEL_MOVES, ("start_rollout", 2, 4), ("set_rollout", 2, 4), ("promote_rollout", 2, 4)]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREG_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(PROMPTREG), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def _check(result: dict[str, Any], workers: int) -> None:
    assert [(m["action"], m["previous_version"], m["version"]) for m in result["moves"]] == EXPECTED_MOVES
    assert all(m["seconds"] > 0 for m in result["moves"])
    if not result["server"].startswith("the PostgreSQL"):  # Redis keeps a fleet view: every move confirmed
        assert all(m["fleet_reached"] == m["fleet_total"] == workers for m in result["moves"]), result["moves"]
        assert all(m["fleet_seconds"] is not None and m["fleet_seconds"] > 0 for m in result["moves"])
    assert result["workers"] == workers
    assert result["lookups"] > 0 and result["lookups_per_second"] > 0
    assert result["namespace"].startswith("demo-")


@pytest.mark.slow
def test_demo_default_path_runs_to_completion(tmp_path: Path) -> None:
    """No PROMPTREG_URL, default options: what a newcomer runs."""
    done = _run(["demo"], _env(), tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    expected_server = "a private redis-server" if shutil.which("redis-server") else "an in-process fakeredis server"
    assert out.startswith(f"promptreg demo: using {expected_server}")
    assert "all 4 workers serve production = v3" in out
    for action, before, after in LABEL_MOVES:
        assert re.search(
            rf"{action} +production {before} -> {after}: all 4 workers served v{after} after [0-9.]+ ms", out
        )
    # The rollout: each worker serves v4 to exactly the users the assignment rule picks, then to all.
    for word, percent in (("rollout", 10), ("widen", 50)):
        expected = sum(picks_candidate("movie-critic", "production", 4, percent, f"user-{i}") for i in range(1000))
        assert re.search(
            rf"{word} +production v2 \+ v4 at {percent}%: all 4 workers served v4 to the same {expected} of 1000 "
            r"users after [0-9.]+ ms",
            out,
        ), out
    assert re.search(r"promote +production 2 -> 4: all 4 workers served v4 after [0-9.]+ ms", out)
    assert re.search(r"lookups: [0-9,]+ get\(\)\+render\(\) in [0-9.]+ s by 4 workers", out)


@pytest.mark.parametrize("how", ["option", "environment"])
def test_demo_fakeredis_fallback(tmp_path: Path, how: str) -> None:
    args = ["demo", "--workers", "2", "--seconds", "0.2", "--json"]
    if how == "option":
        done = _run([*args, "--server", "fakeredis"], _env(), tmp_path)
    else:
        done = _run(args, _env(PROMPTREG_DEMO_SERVER="fakeredis"), tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["server"].startswith("an in-process fakeredis server on redis://127.0.0.1:")
    _check(result, workers=2)


def test_demo_uses_promptreg_url_and_removes_its_namespace(tmp_path: Path, redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.set("someone-elses-key", "untouched")

    done = _run(
        ["demo", "--workers", "2", "--seconds", "0.2", "--json"], _env(PROMPTREG_URL=redis_server.url), tmp_path
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["server"] == f"the Redis at {redis_server.url}"
    _check(result, workers=2)
    assert conn.keys("{" + result["namespace"] + "}*") == []
    assert conn.get("someone-elses-key") == b"untouched"

    kept = _run(
        ["demo", "--workers", "1", "--seconds", "0", "--json", "--keep"], _env(PROMPTREG_URL=redis_server.url), tmp_path
    )
    namespace = json.loads(kept.stdout)["namespace"]
    assert conn.exists("{" + namespace + "}:p:movie-critic:v:3")  # a second run works, in its own namespace


def test_demo_unreachable_url_is_one_line(tmp_path: Path) -> None:
    done = _run(["demo"], _env(PROMPTREG_URL=f"redis://:sekret-pw@127.0.0.1:{free_port()}/0"), tmp_path)

    assert done.returncode == 1
    assert done.stderr.startswith("error: redis is unreachable") and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stdout + done.stderr and "sekret-pw" not in done.stdout + done.stderr


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize(("sig", "to_group"), [(signal.SIGINT, True), (signal.SIGTERM, False)], ids=["ctrl-c", "term"])
def test_interrupted_demo_stops_workers_and_server(tmp_path: Path, sig: signal.Signals, to_group: bool) -> None:
    """Ctrl-C (SIGINT to the whole process group) or ``docker stop`` (SIGTERM to the demo)."""
    process = subprocess.Popen(
        [str(PROMPTREG), "demo", "--workers", "2", "--seconds", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=tmp_path,
        start_new_session=True,  # its own process group: the demo, its workers and its server
    )
    pgid = process.pid
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "workers serve production = v3" in line:
                break
        assert any("workers serve production" in line for line in lines), (lines, process.stderr.read())  # type: ignore[union-attr]
        url = re.search(r"redis://127\.0\.0\.1:\d+/0", lines[0])
        if to_group:
            os.killpg(pgid, sig)
        else:
            process.send_signal(sig)
        code = process.wait(timeout=30)
        assert wait_until(lambda: _group_gone(pgid), timeout=15), "a worker or the server outlived the demo"
    finally:
        if not _group_gone(pgid):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=10)
    assert code == 130
    stderr = process.stderr.read()  # type: ignore[union-attr]
    assert stderr == "interrupted: workers and server stopped\n"
    if url is not None:
        with pytest.raises(redis.ConnectionError):
            redis.Redis.from_url(url.group(0), socket_connect_timeout=1).ping()


def test_demo_runs_on_postgresql_in_its_own_namespace(tmp_path: Path, postgres_server: PostgresServer) -> None:
    """``PROMPTREG_URL=postgresql://... make demo``: same scenario, clients pushed by LISTEN/NOTIFY.

    The URL names a namespace of someone else's: the demo still writes only to its own, and leaves
    the other one as it was.
    """
    others = PostgresPromptRegistry(postgres_server.url(namespace="someone-else"))
    others.create_prompt("theirs")
    before = others.history("theirs")
    url = postgres_server.url(namespace="someone-else")

    done = _run(["demo", "--workers", "2", "--seconds", "0.2", "--json"], _env(PROMPTREG_URL=url), tmp_path)

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["server"].startswith("the PostgreSQL at postgresql://")
    _check(result, workers=2)
    assert result["namespace"] != "someone-else"
    demo = PostgresPromptRegistry(postgres_server.url(), namespace=result["namespace"])
    assert demo.list_prompts() == []  # the demo's namespace was dropped at the end
    assert others.list_prompts() == ["theirs"] and others.history("theirs") == before
    demo.close()
    others.close()
