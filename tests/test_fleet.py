"""Fleet presence on a real redis-server: who reports, what, the acknowledgement, expiry, opt-out.

Client processes (``tests/fleet_client_proc.py``) and clients in this process (distinct ids) report
to ``{ns}:fleet``; :meth:`PromptRegistry.fleet` lists them, :meth:`PromptRegistry.wait_for_fleet`
confirms a move, a stopped (SIGSTOP) client lags, a killed one disappears after 3 intervals, a closed
one at once, and ``fleet_report=False`` writes nothing. The CLI's view is in ``test_fleet_cli.py``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from promptreg.client import PromptClient
from promptreg.registry import (
    FleetMember,
    FleetWait,
    InvalidInputError,
    JsonFilePromptRegistry,
    RedisPromptRegistry,
)
from promptreg.registry.cli import cli
from promptreg.registry.fleet import decode_member, encode_member, validate_client_id
from promptreg.registry.redis.fleet import report
from promptreg.registry.redis.keys import Keyspace
from tests.redis_server import RedisServer, wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent
NAME, LABEL = "movie-critic", "production"


class ClientProcesses:
    """``tests.fleet_client_proc`` processes, started together; every one stopped at the end."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self.procs: list[subprocess.Popen[str]] = []
        self.info: dict[int, dict[str, Any]] = {}

    def start(self, count: int, interval: float, prefix: str = "svc") -> list[dict[str, Any]]:
        started = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.fleet_client_proc",
                    self.url,
                    self.namespace,
                    f"{prefix}-{n}",
                    str(interval),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=REPO_ROOT,
            )
            for n in range(count)
        ]
        self.procs.extend(started)
        lines = []
        for proc in started:
            assert proc.stdout is not None
            line = json.loads(proc.stdout.readline() or "{}")
            assert line.get("ready"), line
            self.info[proc.pid] = line
            lines.append(line)
        return lines

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> None:
        os.kill(pid, sig)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)  # a stopped process cannot exit
                assert proc.stdin is not None
                proc.stdin.close()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    reg.create_prompt(NAME)
    for n in (1, 2, 3):
        reg.add_version(NAME, f"v{n}: review {{{{movie}}}}")
    reg.set_label(NAME, LABEL, 1)
    yield reg
    reg.close()


@pytest.fixture
def processes(redis_server: RedisServer, namespace: str) -> Iterator[ClientProcesses]:
    procs = ClientProcesses(redis_server.url, namespace)
    try:
        yield procs
    finally:
        procs.close()


def _rev(registry: RedisPromptRegistry) -> int:
    return int(registry.redis.get(registry.keys.rev) or 0)


def _ids(registry: RedisPromptRegistry) -> set[str]:
    return {member.client_id for member in registry.fleet()}


# -- processes -------------------------------------------------------------------------------------


@pytest.mark.redis
def test_processes_appear_with_their_fields_and_confirm_a_move(
    registry: RedisPromptRegistry, processes: ClientProcesses
) -> None:
    started = processes.start(10, interval=5.0)  # as many as the issue asks for
    ids = {line["client_id"] for line in started}
    assert wait_until(lambda: _ids(registry) == ids, 5), registry.fleet()
    members = {m.client_id: m for m in registry.fleet()}
    for line in started:
        member = members[line["client_id"]]
        assert member.pid == line["pid"] and member.host == socket.gethostname()
        assert member.client_id.startswith(f"{member.host}:{member.pid}:")
        assert member.client_name is not None and member.client_name.startswith("svc-")
        assert (member.label, member.state, member.rev) == (LABEL, "live", _rev(registry))
        assert member.report_interval == 5.0 and member.library_version
        assert member.started_at <= member.last_seen <= datetime.now(UTC) + timedelta(seconds=1)

    event = registry.set_label(NAME, LABEL, 2)
    result = registry.wait_for_fleet(timeout=10)
    assert isinstance(result, FleetWait)
    assert (result.rev, result.complete, result.lagging, result.gone) == (event.rev, True, [], [])
    assert set(result.reached) == ids
    # Confirmed by the acknowledgement, not by the 5 s periodic report.
    assert result.elapsed < 3.0, result
    assert {m.rev for m in registry.fleet()} == {event.rev}


@pytest.mark.redis
def test_a_stopped_client_lags_and_is_reached_once_it_resumes(
    registry: RedisPromptRegistry, processes: ClientProcesses
) -> None:
    (healthy,) = processes.start(1, interval=0.2, prefix="ok")
    (frozen,) = processes.start(1, interval=2.0, prefix="frozen")  # its record lives 6 s
    assert wait_until(lambda: _ids(registry) == {healthy["client_id"], frozen["client_id"]}, 5)
    processes.kill(frozen["pid"], signal.SIGSTOP)
    registry.set_label(NAME, LABEL, 3)
    result = registry.wait_for_fleet(timeout=0.5)
    assert not result.complete
    assert (result.reached, result.lagging) == ([healthy["client_id"]], [frozen["client_id"]])
    assert 0.5 <= result.elapsed < 3
    # The CLI says the same: exit 3, naming it.
    env = {"PROMPTREG_URL": processes.url, "PROMPTREG_NAMESPACE": processes.namespace}
    done = CliRunner().invoke(cli, ["label", NAME, LABEL, "2", "--wait", "0.3"], env=env, catch_exceptions=False)
    assert done.exit_code == 3 and frozen["client_id"] in done.stderr and "reached 1 of 2" in done.stderr
    processes.kill(frozen["pid"], signal.SIGCONT)
    result = registry.wait_for_fleet(timeout=10)
    assert result.complete and set(result.reached) == {healthy["client_id"], frozen["client_id"]}, result


@pytest.mark.redis
def test_a_killed_client_disappears_within_three_intervals(
    registry: RedisPromptRegistry, processes: ClientProcesses
) -> None:
    (victim,) = processes.start(1, interval=0.2, prefix="victim")
    assert wait_until(lambda: victim["client_id"] in _ids(registry), 5)
    processes.kill(victim["pid"])
    killed = time.monotonic()
    assert wait_until(lambda: victim["client_id"] not in _ids(registry), 5)
    assert time.monotonic() - killed < 0.6 + 1.0  # 3 intervals, plus slack for a shared machine
    # The expired member is also dropped from the index by the read that found it gone.
    assert registry.redis.zscore(registry.keys.fleet, victim["client_id"]) is None


# -- clients in this process -----------------------------------------------------------------------


@pytest.mark.redis
def test_clients_report_periodically_and_a_closed_one_disappears_at_once(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    first = PromptClient(redis_server.url, namespace=namespace, client_name="a", report_interval=0.1)
    second = PromptClient(redis_server.url, namespace=namespace, default_label="staging", report_interval=0.1)
    try:
        assert first.client_id != second.client_id
        assert wait_until(lambda: _ids(registry) == {first.client_id, second.client_id}, 5)
        seen = {m.client_id: m for m in registry.fleet()}
        assert (seen[second.client_id].label, seen[second.client_id].client_name) == ("staging", None)
        before = seen[first.client_id].last_seen
        assert wait_until(lambda: {m.client_id: m for m in registry.fleet()}[first.client_id].last_seen > before, 2)
        first.close()
        assert _ids(registry) == {second.client_id}  # removed by close(), not left to expire
        assert registry.redis.exists(registry.keys.member(first.client_id)) == 0
        assert first.get(NAME).version == 1  # lookups still answer after close
    finally:
        first.close()
        second.close()
    assert registry.fleet() == []


@pytest.mark.redis
def test_a_burst_of_moves_is_acknowledged_in_a_few_reports_ending_at_the_last(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    # One report per change would be a Redis write per change from every process of a fleet.
    with PromptClient(redis_server.url, namespace=namespace, report_interval=60) as prompts:
        reporter = prompts._presence.reporter
        assert reporter is not None
        assert prompts.wait_ready(5) and wait_until(lambda: reporter.reports >= 1, 5)
        before = reporter.reports
        for i in range(40):
            registry.set_label(NAME, LABEL, 1 + i % 3)
            time.sleep(0.002)
        result = registry.wait_for_fleet(timeout=5)
        assert result.complete and result.reached == [prompts.client_id]
        assert {m.client_id: m.rev for m in registry.fleet()}[prompts.client_id] == _rev(registry)
        assert 1 <= reporter.reports - before < 20


@pytest.mark.redis
def test_fleet_report_false_never_writes(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    with PromptClient(redis_server.url, namespace=namespace, fleet_report=False, report_interval=0.05) as quiet:
        assert quiet.wait_ready(5)
        registry.set_label(NAME, LABEL, 2)
        assert wait_until(lambda: quiet.get(NAME).version == 2, 5)
        time.sleep(0.3)  # six report intervals: nothing may appear
        assert quiet.client_id  # it still has an id
        assert list(registry.redis.scan_iter(match=registry.keys.fleet + "*")) == []
        result = registry.wait_for_fleet(timeout=0.1)
        assert (result.reached, result.lagging, result.complete) == ([], [], True)


@pytest.mark.redis
def test_reports_never_raise_into_the_application(namespace: str, private_redis_server: RedisServer) -> None:
    url = private_redis_server.url
    with RedisPromptRegistry.from_url(url, namespace=namespace) as reg:
        reg.create_prompt(NAME)
        reg.add_version(NAME, "v1")
        reg.set_label(NAME, LABEL, 1)
    prompts = PromptClient(url, namespace=namespace, report_interval=0.05)
    try:
        assert prompts.wait_ready(5)
        private_redis_server.stop()
        time.sleep(0.3)  # several failed reports
        assert prompts.get(NAME).version == 1
        assert prompts.status().state.value == "stale"
    finally:
        prompts.close()  # removing the record fails quietly: the server is gone


@pytest.mark.redis
def test_garbage_in_the_index_is_skipped_and_pruned(registry: RedisPromptRegistry) -> None:
    keys = registry.keys
    registry.redis.zadd(keys.fleet, {"forged:1:aa": 1, "expired:2:bb": 2})
    registry.redis.set(keys.member("forged:1:aa"), b"\x93not a record")
    member = _member("real:3:cc", rev=5)
    report(registry.redis, keys, member)
    assert registry.fleet() == [member]
    assert registry.redis.zrange(keys.fleet, 0, -1) == [b"real:3:cc"]  # the unreadable and the expired dropped
    assert registry.redis.pttl(keys.member("real:3:cc")) > 0


def test_file_registry_has_an_empty_fleet(tmp_path: Path) -> None:
    registry = JsonFilePromptRegistry(tmp_path / "r.json")
    registry.create_prompt(NAME)
    registry.add_version(NAME, "v1")
    with PromptClient(f"file://{tmp_path / 'r.json'}") as prompts:
        assert prompts.client_id.split(":")[1] == str(os.getpid())
        assert registry.fleet() == []
        result = registry.wait_for_fleet(timeout=1)
        assert (result.rev, result.reached, result.lagging, result.complete) == (2, [], [], True)
        assert result.elapsed < 0.5


# -- models and arguments --------------------------------------------------------------------------


def _member(client_id: str, rev: int) -> FleetMember:
    now = datetime.now(UTC).replace(microsecond=0)
    return FleetMember(
        client_id=client_id, client_name="x", host="h", pid=3, label=LABEL, library_version="0.1.0",
        state="live", rev=rev, started_at=now, last_seen=now, report_interval=60.0,
    )  # fmt: skip


def test_record_round_trips_and_garbage_decodes_to_none() -> None:
    member = _member("h:3:ab", 7)
    assert decode_member(encode_member(member)) == member
    assert len(encode_member(member)) < 300
    for raw in (b"", b"\xc1", b"\x91\x01", b"\x81\xa1a\x01", b"not msgpack at all"):
        assert decode_member(raw) is None


@pytest.mark.parametrize("bad", ["", "{ns}", "a b", "x" * 201, ":leading", "a*b"])
def test_client_ids_that_could_forge_a_key_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError):
        validate_client_id(bad)
    assert Keyspace("shop").member("h:1:ab") == "{shop}:fleet:h:1:ab"


@pytest.mark.parametrize(
    "options",
    [{"client_name": ""}, {"client_name": "two\nlines"}, {"report_interval": 0}, {"report_interval": "5"}],
)
def test_bad_fleet_options_are_typed_errors(tmp_path: Path, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        PromptClient(f"file://{tmp_path / 'r.json'}", start_timeout=0.1, **options)


@pytest.mark.parametrize("call", [{"rev": -1}, {"timeout": -1.0}, {"rev": True}])
def test_bad_wait_arguments_are_typed_errors(tmp_path: Path, call: dict[str, Any]) -> None:
    with pytest.raises(InvalidInputError):
        JsonFilePromptRegistry(tmp_path / "r.json").wait_for_fleet(**call)
