"""Redis Cluster: 3 masters the tests start; sharded pub/sub; a slot migrated under writes.

The contract suite also runs over ``redis+cluster://`` (tests/test_contract.py, backend ``cluster``).
"""

from __future__ import annotations

import threading
import time

import pytest

from promptreg.client import PromptClient
from promptreg.registry import (
    Prompt,
    PromptRegistryError,
    RedisPromptRegistry,
    RegistryUnavailableError,
    ReplicationTimeoutError,
)
from tests.ha_servers import ClusterDeployment
from tests.helpers import LABEL, NAME, assert_converged, seed
from tests.redis_server import wait_until

pytestmark = pytest.mark.redis


def _other_node(cluster: ClusterDeployment, namespace: str) -> int:
    owner = cluster.owner_of("{" + namespace + "}:rev")
    return next(i for i, node in enumerate(cluster.nodes) if node is not owner)


def test_a_client_on_a_node_not_owning_the_slot_goes_live_over_sharded_pubsub(
    redis_cluster: ClusterDeployment, namespace: str
) -> None:
    writer = RedisPromptRegistry.from_url(redis_cluster.url(), namespace=namespace)
    seed(writer)
    owner = redis_cluster.owner_of(writer.keys.channel)
    with PromptClient(redis_cluster.url(_other_node(redis_cluster, namespace)), namespace=namespace) as prompts:
        assert prompts.wait_ready(10), prompts.status()
        assert prompts.get(NAME).version == 1
        with owner.client() as conn:  # the client's subscription is a shard channel on the slot's owner
            reply = conn.execute_command("PUBSUB", "SHARDNUMSUB", writer.keys.channel)
            assert list(reply) == [writer.keys.channel.encode(), 1]
        resyncs = prompts.status().resyncs
        for version in (2, 3, 1):
            writer.set_label(NAME, LABEL, version)
            assert wait_until(lambda: prompts.get(NAME).version == version, 5.0), prompts.status()  # noqa: B023
        assert prompts.status().resyncs == resyncs  # applied from SPUBLISHed messages, not by polling
    writer.close()


def test_wait_replicas_on_a_cluster_without_replicas_raises_with_the_applied_write(
    redis_cluster: ClusterDeployment, namespace: str
) -> None:
    reg = RedisPromptRegistry.from_url(
        redis_cluster.url(query="wait_replicas=1&wait_timeout=0.05"), namespace=namespace
    )
    with pytest.raises(ReplicationTimeoutError) as caught:
        reg.create_prompt("p")
    assert isinstance(caught.value, RegistryUnavailableError)
    assert isinstance(caught.value.event, Prompt) and caught.value.event.name == "p"
    assert (caught.value.confirmed, caught.value.wanted) == (0, 1)
    assert reg.list_prompts() == ["p"]  # applied on the primary all the same
    reg.close()


@pytest.mark.slow
def test_slot_migration_while_writing_loses_nothing_and_clients_converge(
    redis_cluster: ClusterDeployment, namespace: str
) -> None:
    writer = RedisPromptRegistry.from_url(redis_cluster.url(), namespace=namespace)
    seed(writer, versions=5)
    source = redis_cluster.owner_of(writer.keys.rev)
    target = next(node for node in redis_cluster.nodes if node is not source)
    clients = [
        PromptClient(redis_cluster.url(i), namespace=namespace, poll_interval=0.5)
        for i in range(len(redis_cluster.nodes))
    ]
    acked: list[int] = []
    errors: list[Exception] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        deadline = time.monotonic() + 30
        while not stop.is_set() and time.monotonic() < deadline and n < 2000:
            n += 1
            try:
                if n % 10 == 0:
                    writer.add_version(NAME, f"v-extra-{n}")
                else:
                    writer.set_label(NAME, LABEL, 1 + n % 5)
                acked.append(n)
            except PromptRegistryError as exc:  # typed: the only kind allowed
                errors.append(exc)
            time.sleep(0.002)

    thread = threading.Thread(target=write, daemon=True)
    try:
        for prompts in clients:
            assert prompts.wait_ready(10), prompts.status()
        thread.start()
        time.sleep(0.2)
        redis_cluster.migrate_slot(writer.keys.rev, source, target)
        time.sleep(0.3)
        stop.set()
        thread.join(20)
        assert not thread.is_alive()
        assert redis_cluster.owner_of(writer.keys.rev) is target
        assert all(isinstance(e, RegistryUnavailableError) for e in errors), errors
        # None lost: every acknowledged write has its audit entry (plus the seed's 7 writes); a
        # refused one may or may not have applied, never twice.
        applied = len(writer.history(NAME)) - (1 + 5 + 1)
        assert len(acked) <= applied <= len(acked) + len(errors), (applied, len(acked), errors)
        writer.set_label(NAME, LABEL, 2)  # one more write after the move: every client must see it
        for prompts in clients:
            assert_converged(prompts, writer, timeout=5.0)
    finally:
        stop.set()
        thread.join(20)
        for prompts in clients:
            prompts.close()
        writer.close()
