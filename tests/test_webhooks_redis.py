"""Signed webhooks on a real redis-server: the issue's "done when" (a rollback seen by a live
``PromptClient`` arrives as a signed ``label.moved`` then ``fleet.converged``), ``fleet.lagging``,
two worker processes (one delivers, the other takes over when it is killed), the keys under
``{ns}:wh:``, and the writer role's ACL with the two commands the webhooks add (WATCH, UNWATCH)."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from promptreg.client import PromptClient
from promptreg.client.presence import new_client_id
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.fleet import FleetMember
from promptreg.registry.redis.acl import acl_setuser_args
from promptreg.registry.redis.fleet import report
from promptreg.registry.webhooks import DeliverySettings, WebhookWorker, add_webhook, new_endpoint, webhook_store
from promptreg.registry.webhooks.redis_store import COMMANDS, RedisWebhookStore
from tests.backends import PROMPTREG
from tests.redis_server import RedisServer, wait_until
from tests.webhook_receiver import SECRET, Receiver, verify

pytestmark = pytest.mark.redis

FAST = DeliverySettings(poll_interval=0.05, backoff_base=0.01, backoff_max=0.05, lease_ttl=1.0, fleet_timeout=1.0)
ENV = {"WH_SECRET": SECRET}
NAME, LABEL = "movie-critic", "production"


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    yield reg
    reg.drop_namespace()
    reg.close()


def _seed(registry: RedisPromptRegistry) -> None:
    registry.create_prompt(NAME)
    registry.add_version(NAME, "v1 {{movie}}")
    registry.add_version(NAME, "v2 {{movie}}")
    registry.set_label(NAME, LABEL, 1)
    registry.set_label(NAME, LABEL, 2)


def _add(registry: RedisPromptRegistry, url: str, **options: object) -> str:
    endpoint = new_endpoint(url, "WH_SECRET", **options)  # type: ignore[arg-type]
    add_webhook(registry, webhook_store(registry), endpoint)
    return endpoint.id


def test_a_rollback_arrives_signed_as_label_moved_then_fleet_converged(
    registry: RedisPromptRegistry, redis_server: RedisServer, namespace: str
) -> None:
    _seed(registry)
    with PromptClient(redis_server.url, namespace=namespace, client_name="checkout") as client, Receiver() as receiver:
        assert wait_until(lambda: [m.rev for m in registry.fleet()] == [registry.revision()], 10)
        _add(registry, receiver.url, events=["label.moved", "fleet.*"])
        worker = WebhookWorker(registry, settings=FAST, environ=ENV)
        worker.start()
        try:
            event = registry.rollback(NAME, LABEL, author="oncall", reason="v2 is rude")
            moved, fleet = receiver.wait_delivered(2)
        finally:
            worker.stop()
        assert client.get(NAME, LABEL).version == 1
    assert (moved.type, fleet.type) == ("label.moved", "fleet.converged")
    assert verify(SECRET, moved.headers, moved.body) and verify(SECRET, fleet.headers, fleet.body)
    assert moved.json["data"]["action"] == "rollback" and moved.json["data"]["rev"] == event.rev
    assert (moved.json["data"]["previous_version"], moved.json["data"]["version"]) == (2, 1)
    data = fleet.json["data"]
    assert (data["rev"], data["version"], data["complete"], data["lagging"]) == (event.rev, 1, True, [])
    assert len(data["reached"]) == 1 and moved.id != fleet.id


def test_a_client_that_does_not_follow_is_listed_in_fleet_lagging(registry: RedisPromptRegistry) -> None:
    _seed(registry)
    now = datetime.now(UTC)
    stuck = FleetMember(client_id=new_client_id(), client_name="batch-job", host="worker-7", pid=4242, label=LABEL,
                        library_version="0.9", state="live", rev=registry.revision(), started_at=now, last_seen=now,
                        report_interval=30.0)  # fmt: skip
    report(registry.redis, registry.keys, stuck)  # reports once, then never acknowledges the next write
    with Receiver() as receiver:
        _add(registry, receiver.url, events=["fleet.lagging"], format="slack")
        registry.set_label(NAME, LABEL, 1)
        WebhookWorker(registry, settings=FAST, environ=ENV).run(once=True)
        [lagging] = receiver.delivered()
    assert lagging.json["text"].startswith(f"promptreg: {NAME}: {LABEL} -&gt; v1: 1 of 1 clients lag after ")
    assert lagging.json["text"].endswith(": batch-job")
    assert verify(SECRET, lagging.headers, lagging.body)


def test_two_workers_one_delivers_and_the_other_takes_over_when_it_is_killed(
    registry: RedisPromptRegistry, redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    env = {**os.environ, "PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace, **ENV}
    args = [str(PROMPTREG), "webhooks", "run", "--poll-interval", "0.05", "--lease-ttl", "1", "--backoff-base",
            "0.01", "--fleet-timeout", "0.5"]  # fmt: skip
    store = webhook_store(registry)
    with Receiver() as receiver:
        _add(registry, receiver.url)
        logs = [tmp_path / "a.log", tmp_path / "b.log"]
        procs = []
        for log in logs:
            with open(log, "wb") as out:
                procs.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=out))
        try:
            assert wait_until(lambda: store.lease() is not None, 10)
            registry.create_prompt(NAME)
            registry.add_version(NAME, "v1")
            receiver.wait_delivered(2)
            lease = store.lease()
            assert lease is not None
            holder = next(i for i, p in enumerate(procs) if f":{p.pid}:" in lease.holder)
            assert wait_until(lambda: logs[holder].read_text().count("delivered") == 2, 10)
            assert logs[1 - holder].read_text().count("delivered") == 0  # only the holder delivers
            procs[holder].send_signal(signal.SIGKILL)
            procs[holder].wait(10)
            registry.add_version(NAME, "v2")  # while nobody holds a live lease: nothing is lost
            got = receiver.wait_delivered(3, timeout=20)
            assert [r.rev for r in got] == [1, 2, 3]
            assert wait_until(lambda: logs[1 - holder].read_text().count("delivered") == 1, 10)
            new_lease = store.lease()
            assert new_lease is not None and f":{procs[1 - holder].pid}:" in new_lease.holder
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    assert store.lease() is None  # SIGTERM stops the worker cleanly: it gives the lease up


def test_the_webhooks_live_under_their_own_keys(registry: RedisPromptRegistry, namespace: str) -> None:
    with Receiver(lambda request, index: 500) as receiver:
        endpoint_id = _add(registry, receiver.url, events=["audit.*"])
        registry.create_prompt(NAME)
        WebhookWorker(registry, settings=FAST, environ=ENV).run(once=True)
    keys = {key.decode() for key in registry.redis.scan_iter(match="{" + namespace + "}:wh:*")}
    prefix = "{" + namespace + "}:wh:"
    assert keys == {prefix + "endpoints", prefix + f"cursor:{endpoint_id}", prefix + f"dead:{endpoint_id}"}
    assert len(RedisWebhookStore(registry.redis, namespace).dead_letters()) == 1
    webhook_store(registry).remove_endpoint(endpoint_id)
    assert not list(registry.redis.scan_iter(match=prefix + "*"))


def test_the_writer_role_delivers(registry: RedisPromptRegistry, redis_server: RedisServer, namespace: str) -> None:
    """A worker connected as the writer role, exactly as ``promptreg acl`` prints it: every command the
    webhooks send is granted (the ACL log records no refusal for that user)."""
    root = redis.Redis(host="127.0.0.1", port=redis_server.port)
    user = f"{namespace}-wh"
    root.execute_command(*acl_setuser_args("writer", namespace, password="pw", user=user))  # type: ignore[no-untyped-call]
    url = f"redis://{user}:pw@127.0.0.1:{redis_server.port}/0"
    writer = RedisPromptRegistry.from_url(url, namespace=namespace)
    try:
        _seed(registry)
        with Receiver(lambda request, index: 500 if index < 5 else 204) as receiver:
            _add(writer, receiver.url, events=["label.moved", "audit.*", "fleet.*"])  # the writer adds it
            registry.rollback(NAME, LABEL)
            registry.add_version(NAME, "v3")
            granted = WebhookWorker(writer, settings=FAST, environ=ENV)
            granted.run(once=True)
            assert [r.type for r in receiver.delivered()] == ["audit.add_version"]  # the rollback's was dead-lettered
        assert [x.type for x in granted.store.dead_letters()] == ["label.moved"]
        log = root.execute_command("ACL", "LOG")  # type: ignore[no-untyped-call]
        refused = {entry[entry.index(b"object") + 1].decode() for entry in log if user.encode() in entry}
        assert refused == set(), refused
        granted_commands = {
            rule[1:] for rule in acl_setuser_args("writer", namespace, password="pw") if rule[:1] == "+"
        }
        assert {command.lower() for command in COMMANDS} <= granted_commands
    finally:
        writer.close()
        root.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        root.execute_command("ACL", "LOG", "RESET")  # type: ignore[no-untyped-call]
        root.close()
