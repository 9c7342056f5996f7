"""Sentinel: a primary, two replicas and three sentinels the tests start on loopback ports.

Failovers are fast here (``down-after-milliseconds`` 1000): ``SENTINEL FAILOVER`` and ``kill -9`` of
the primary, with 4 client processes doing ``get()`` in a loop and a writer with ``wait_replicas=2``
(every replica) on servers with ``min-replicas-to-write 1``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from promptreg.client import PromptClient
from promptreg.client.cache import ChangeEvent
from promptreg.registry import AuditEvent, RedisPromptRegistry, RegistryUnavailableError
from tests.ha_servers import SentinelDeployment
from tests.helpers import LABEL, NAME, assert_converged, seed
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parent.parent
CONVERGE = 2.0
"""Seconds after the failover completes (and the last write) within which every client serves it."""


def test_a_writer_on_a_replica_gets_unavailable_saying_read_only(namespace: str) -> None:
    with RedisServer() as primary, RedisServer(extra_args=("--replicaof", "127.0.0.1", str(primary.port))) as replica:
        RedisPromptRegistry.from_url(primary.url, namespace=namespace).create_prompt("p")
        on_replica = RedisPromptRegistry.from_url(replica.url, namespace=namespace)
        assert wait_until(lambda: on_replica.list_prompts() == ["p"], 10)
        with pytest.raises(RegistryUnavailableError, match="read-only replica"):
            on_replica.add_version("p", "text")
        with pytest.raises(RegistryUnavailableError, match="read-only replica"):
            on_replica.create_prompt("q")
        assert on_replica.list_prompts() == ["p"]
        on_replica.close()


def test_back_to_back_writes_reuse_the_last_check_and_a_failed_write_asks_again(
    sentinel_deployment: SentinelDeployment, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = RedisPromptRegistry.from_url(sentinel_deployment.url(), namespace=namespace)
    route = writer._route
    assert route is not None
    asked: list[float] = []
    view = route.service.view

    def counted() -> Any:
        asked.append(time.monotonic())
        return view()

    monkeypatch.setattr(route.service, "view", counted)
    seed(writer)
    asked.clear()
    writer.set_label(NAME, LABEL, 2)  # right after the seed's writes: routed by their last after-check
    assert len(asked) == 1
    time.sleep(route.reuse + 0.1)
    writer.set_label(NAME, LABEL, 3)  # the last answer is too old: asked before and after
    assert len(asked) == 3
    route.forget()  # what a write that failed on its way does
    writer.set_label(NAME, LABEL, 1)
    assert len(asked) == 5
    assert writer.get_version(NAME, label=LABEL).version == 1
    writer.close()


def test_sentinel_urls_write_on_the_primary_and_read_from_replicas_without_missing_a_move(
    sentinel_deployment: SentinelDeployment, namespace: str
) -> None:
    writer = RedisPromptRegistry.from_url(sentinel_deployment.url("wait_replicas=2"), namespace=namespace)
    seed(writer)
    replica_url = sentinel_deployment.url("read_from=replica")
    with pytest.raises(RegistryUnavailableError, match="read-only"):
        RedisPromptRegistry.from_url(replica_url, namespace=namespace).create_prompt("nope")
    seen: list[list[int]] = [[], []]
    clients = [PromptClient(replica_url, namespace=namespace, poll_interval=60) for _ in seen]
    try:
        for index, prompts in enumerate(clients):
            assert prompts.wait_ready(10), prompts.status()
            replica_port = prompts._feed._links._pinned_at  # type: ignore[attr-defined]
            assert replica_port is not None and replica_port[1] in [r.port for r in sentinel_deployment.replicas]

            def record(event: ChangeEvent, bucket: list[int] = seen[index]) -> None:
                if event.label == LABEL and event.version is not None:
                    bucket.append(event.version)

            prompts.on_change(record)
        resyncs = [p.status().resyncs for p in clients]
        moves = [2, 3, 1] * 66 + [2, 3]  # 200 moves, each to another version
        for version in moves:
            writer.set_label(NAME, LABEL, version)
        for prompts, bucket in zip(clients, seen, strict=True):
            assert wait_until(lambda: len(bucket) >= len(moves), 10), (len(bucket), prompts.status())  # noqa: B023
            assert bucket == moves  # 0 missed, in order
        assert [p.status().resyncs for p in clients] == resyncs  # all by push, none by resync
    finally:
        for prompts in clients:
            prompts.close()
        writer.close()


def _start_clients(url: str, namespace: str, count: int) -> list[subprocess.Popen[str]]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.ha_client_proc", url, namespace, NAME, LABEL],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()) == {"ready": True}
    return procs


def _stop_clients(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    reports = []
    for proc in procs:
        out, _ = proc.communicate("", timeout=30)
        reports.append(json.loads(out.strip().splitlines()[-1]))
    return reports


def _failover_under_load(deployment: SentinelDeployment, namespace: str, how: str, wait_replicas: int = 2) -> None:
    query = f"wait_replicas={wait_replicas}&wait_timeout=0.5" if wait_replicas else ""
    writer = RedisPromptRegistry.from_url(deployment.url(query), namespace=namespace)
    seed(writer)
    procs = _start_clients(deployment.url(), namespace, 4)
    acked: list[AuditEvent] = []
    refused: list[Exception] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            try:
                acked.append(writer.set_label(NAME, LABEL, 1 + n % 3))
            # The only error allowed during the switch (PrimaryChangedError among them: a write
            # the sentinels no longer vouch for is not acknowledged).
            except RegistryUnavailableError as exc:
                refused.append(exc)
                time.sleep(0.02)

    thread = threading.Thread(target=write, daemon=True)
    try:
        thread.start()
        time.sleep(0.5)
        old = deployment.master_address()
        if how == "failover":
            deployment.failover()
        else:
            assert old is not None
            deployment.node_on(old[1]).kill()
            deployment.wait_new_primary(old)
        switched_at = time.time()
        time.sleep(1.0)  # writes keep going on the new primary
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        last_write_at = time.time()
        time.sleep(CONVERGE)
        reports = _stop_clients(procs)
    finally:
        stop.set()
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    # The registry is what the primary the sentinels name holds. Not what redis-py's master_for
    # reads: after a graceful failover it keeps its connections on the old primary, which stays a
    # primary (and takes writes) until Sentinel turns it into a replica ~10 s later; the writer asks
    # the sentinels before and after each write instead (promptreg.registry.redis.sentinel.WriteRoute).
    new = deployment.master_address()
    assert new is not None and new != old
    registry = RedisPromptRegistry.from_url(f"redis://{new[0]}:{new[1]}/0", namespace=namespace)
    # Every acknowledged write is in the new primary's history, with its revision.
    history = {(e.rev, e.version) for e in registry.history(NAME)}
    lost = [e for e in acked if (e.rev, e.version) not in history]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost"
    assert acked and acked[-1].rev > 0
    final_rev = int(registry.redis.get(registry.keys.rev))
    final_version = registry.get_version(NAME, label=LABEL).version
    for report in reports:
        assert report["errors"] == 0 and report["lookups"] > 0
        rev_at, rev, version = report["changes"][-1]
        assert (rev, version) == (final_rev, final_version), report["changes"][-3:]
        assert rev_at <= max(switched_at, last_write_at) + CONVERGE
    with PromptClient(deployment.url(), namespace=namespace) as prompts:
        assert_converged(prompts, registry)
    registry.close()
    writer.close()


@pytest.mark.slow
@pytest.mark.parametrize("wait_replicas", [2, 0])
def test_sentinel_failover_under_load_loses_no_acknowledged_write(
    sentinel_deployment: SentinelDeployment, namespace: str, wait_replicas: int
) -> None:
    # wait_replicas=0: before the writer asked the sentinels around each write, about half of the
    # writes of the second after the switch were acknowledged by the old primary and lost.
    _failover_under_load(sentinel_deployment, namespace, "failover", wait_replicas)


@pytest.mark.slow
def test_primary_killed_under_load_loses_no_acknowledged_write(
    sentinel_deployment: SentinelDeployment, namespace: str
) -> None:
    _failover_under_load(sentinel_deployment, namespace, "kill")
