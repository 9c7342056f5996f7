"""``promptreg fleet`` and ``label`` / ``rollback --wait`` on a real redis-server and on a JSON file.

Clients in this process report with a short interval; a lagging client is a presence record written
with an old revision (the SIGSTOP case with a real process is in ``test_fleet.py``).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from promptreg.client import PromptClient
from promptreg.registry import FleetMember, RedisPromptRegistry
from promptreg.registry.cli import cli
from promptreg.registry.models import utcnow
from promptreg.registry.redis.fleet import report
from tests.redis_server import RedisServer, wait_until

NAME, LABEL = "movie-critic", "production"


def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def setup(redis_server: RedisServer, namespace: str) -> Iterator[tuple[dict[str, str], RedisPromptRegistry]]:
    registry = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    registry.create_prompt(NAME)
    for n in (1, 2):
        registry.add_version(NAME, f"v{n}")
    registry.set_label(NAME, LABEL, 1)
    clients = [
        PromptClient(redis_server.url, namespace=namespace, client_name=name, report_interval=0.2)
        for name in ("web", "worker")
    ]
    try:
        ids = {c.client_id for c in clients}
        assert wait_until(lambda: {m.client_id for m in registry.fleet()} == ids, 5)
        yield {"PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace}, registry
    finally:
        for client in clients:
            client.close()
        registry.close()


def _stale_member(registry: RedisPromptRegistry, client_id: str = "old-host:7:deadbeef") -> str:
    now = utcnow()
    report(registry.redis, registry.keys, FleetMember(
        client_id=client_id, client_name="frozen", host="old-host", pid=7, label=LABEL, library_version="0.1.0",
        state="live", rev=1, started_at=now, last_seen=now, report_interval=60.0,
    ))  # fmt: skip
    return client_id


@pytest.mark.redis
def test_fleet_table_lists_every_client(setup: tuple[dict[str, str], RedisPromptRegistry]) -> None:
    env, registry = setup
    code, out, _ = run(env, "fleet")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["CLIENT", "HOST:PID", "LABEL", "REV", "STATE", "LAST", "SEEN"]
    rev = str(int(registry.redis.get(registry.keys.rev)))
    for name, row in zip(("web", "worker"), lines[1:3], strict=True):
        assert row.split()[:5] == [name, f"{socket.gethostname()}:{os.getpid()}", LABEL, rev, "live"]
        assert row.endswith("s ago")
    assert lines[3] == f"2 clients; registry at rev {rev}"


@pytest.mark.redis
def test_fleet_prompt_shows_the_version_each_client_serves(setup: tuple[dict[str, str], RedisPromptRegistry]) -> None:
    env, registry = setup
    stale = _stale_member(registry)  # at rev 1 production did not exist yet
    code, out, _ = run(env, "fleet", "--prompt", NAME)
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
    assert rows["web"][-1] == rows["worker"][-1] == "1" and rows["frozen"][-1] == "-"
    assert out.splitlines()[-1].endswith("; 1 behind")
    registry.set_label(NAME, LABEL, 2)
    assert registry.wait_for_fleet(timeout=5).lagging == [stale]
    code, out, _ = run(env, "fleet", "--prompt", NAME, "--json")
    data = {row["client_name"]: row for row in json.loads(out)}
    assert (data["web"]["version"], data["worker"]["version"], data["frozen"]["version"]) == (2, 2, None)
    assert data["web"]["prompt"] == NAME and data["web"]["pid"] == os.getpid()
    assert set(data["web"]) >= {"client_id", "host", "label", "state", "rev", "started_at", "last_seen"}


@pytest.mark.redis
def test_label_and_rollback_wait_for_the_fleet(setup: tuple[dict[str, str], RedisPromptRegistry]) -> None:
    env, _ = setup
    code, out, err = run(env, "label", NAME, LABEL, "2", "--wait", "5")
    assert code == 0, err
    assert out.splitlines()[0] == f"{NAME}: label {LABEL} 1 -> 2"
    assert out.splitlines()[1].startswith("reached 2 of 2 clients in ") and out.rstrip().endswith(" ms")
    code, out, err = run(env, "rollback", NAME, LABEL, "--wait", "--json")  # --wait alone: 5 s
    assert code == 0, err
    data = json.loads(out)
    assert data["action"] == "rollback" and data["version"] == 1
    assert data["fleet"]["complete"] is True and len(data["fleet"]["reached"]) == 2
    assert data["fleet"]["rev"] == data["rev"]


@pytest.mark.redis
def test_wait_exits_3_naming_the_lagging_clients(setup: tuple[dict[str, str], RedisPromptRegistry]) -> None:
    env, registry = setup
    stale = _stale_member(registry)
    code, out, err = run(env, "label", NAME, LABEL, "2", "--wait", "0.3")
    assert code == 3
    assert out == f"{NAME}: label {LABEL} 1 -> 2\n"  # the move is made; only its confirmation is missing
    assert err.startswith("reached 2 of 3 clients in ") and "lagging (rev < " in err and stale in err
    code, _, err = run(env, "rollback", NAME, LABEL)  # without --wait: no waiting, exit 0
    assert code == 0, err


def test_file_registry_has_no_fleet(tmp_path: Path) -> None:
    env = {"PROMPTREG_URL": f"file://{tmp_path / 'r.json'}"}
    assert run(env, "create", NAME)[0] == 0
    pushed = CliRunner().invoke(cli, ["push", NAME, "--label", LABEL], input="v1\n", env=env, catch_exceptions=False)
    assert pushed.exit_code == 0
    code, out, _ = run(env, "fleet")
    assert code == 0 and out.startswith("no client reports to this registry")
    assert json.loads(run(env, "fleet", "--json")[1]) == []
    code, out, _ = run(env, "label", NAME, LABEL, "1", "--wait", "1")
    assert code == 0 and out.splitlines()[-1].startswith("reached 0 of 0 clients in ")


@pytest.mark.redis
def test_approve_and_apply_wait_for_the_fleet(setup: tuple[dict[str, str], RedisPromptRegistry]) -> None:
    """The approval that moves a protected label waits like ``label --wait``; a lagging client: exit 3."""
    env, registry = setup
    registry.protect_label(NAME, LABEL)
    first = registry.request_label_move(NAME, LABEL, 2, author="bob", reason="r")
    code, out, err = run(env, "approve", first.id, "--author", "carol", "--wait", "5")
    assert code == 0, err
    assert out.splitlines()[0] == f"{NAME}: request {first.id} approved by carol: label {LABEL} 1 -> 2"
    assert out.splitlines()[1].startswith("reached 2 of 2 clients in ")
    second = registry.request_label_move(NAME, LABEL, 1, author="bob", reason="back")
    registry.approve(second.id, author="carol", apply=False)
    stale = _stale_member(registry)
    code, out, err = run(env, "apply", second.id, "--author", "dan", "--wait", "0.3", "--json")
    assert code == 3
    data = json.loads(out)
    assert data["state"] == "applied" and data["fleet"]["complete"] is False
    assert data["fleet"]["rev"] == data["applied_rev"] and data["fleet"]["lagging"] == [stale]
