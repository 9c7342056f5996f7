"""Content identity and history identity (DESIGN.md section 3, rule 2b).

A restore from an older backup followed by new writes brings version numbers back with other
texts: a client must serve the registry's new text, never the lost one while ``live`` (connected
through the restore, and cut off while it happened). With ``wait_replicas`` a write the replicas did
not confirm is never announced. Real redis-server only (the ``redis`` marker).
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Iterator

import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import RedisPromptRegistry, ReplicationTimeoutError
from tests.helpers import HISTORY_NAME as NAME
from tests.helpers import LABEL, Watch, serves
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def rdb_server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, AOF off (its data is what ``dump.rdb`` holds), with a user
    ``late`` for the client that is cut off during the restore."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer(appendonly=False, extra_args=("--user", "late", "on", ">pw", "~*", "&*", "+@all"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def test_restore_from_rdb_then_writes_reusing_numbers(rdb_server: RedisServer, namespace: str) -> None:
    server = rdb_server
    registry = RedisPromptRegistry(url=server.url, namespace=namespace)
    registry.create_prompt(NAME)
    registry.add_version(NAME, "one")
    registry.add_version(NAME, "two")
    registry.set_label(NAME, LABEL, 2)
    late_url = f"redis://late:pw@127.0.0.1:{server.port}/0"
    with (
        PromptClient(server.url, namespace=namespace, default_label=LABEL, poll_interval=0.5) as connected,
        PromptClient(late_url, namespace=namespace, default_label=LABEL, poll_interval=0.5) as cut_off,
    ):
        assert wait_until(lambda: serves(connected, "two") and serves(cut_off, "two"), 10)
        server.client().save()
        backup = server.dir / "backup.rdb"
        shutil.copy(server.dir / "dump.rdb", backup)
        registry.add_version(NAME, "lost")
        registry.set_label(NAME, LABEL, 3)
        assert wait_until(lambda: serves(connected, "lost") and serves(cut_off, "lost"), 5)
        for prompts in (connected, cut_off):
            assert prompts.get(NAME, version=3).prompt_text == "lost"  # cached, pinned
        registry.close()

        server.kill()
        shutil.copy(backup, server.dir / "dump.rdb")
        server.extra_args = ("--user", "late", "off", ">pw", "~*", "&*", "+@all")  # cut_off cannot come back yet
        assert wait_until(lambda: connected.status().state is not ClientState.LIVE, 5)
        assert wait_until(lambda: cut_off.status().state is not ClientState.LIVE, 5)
        watches = [Watch(connected, "lost"), Watch(cut_off, "lost")]
        server.start()
        assert wait_until(lambda: serves(connected, "two"), 10)  # the restored state (production -> 2)

        registry = RedisPromptRegistry(url=server.url, namespace=namespace)
        registry.add_version(NAME, "new")  # version 3 again, another text
        registry.set_label(NAME, LABEL, 3)
        written = time.monotonic()
        assert wait_until(lambda: serves(connected, "new"), 1.0), connected.get(NAME, LABEL).prompt_text
        assert time.monotonic() - written < 1.5
        assert connected.get(NAME, version=3).prompt_text == "new"

        server.client().acl_setuser("late", enabled=True, reset=False)
        assert wait_until(lambda: serves(cut_off, "new"), 5), cut_off.get(NAME, LABEL).prompt_text
        assert cut_off.get(NAME, version=3).prompt_text == "new"
        # Quiet afterwards: the safety polls must not bring the lost text back either.
        time.sleep(1.2)
        assert [watch.stop() for watch in watches] == [[], []]
        for prompts in (connected, cut_off):
            assert serves(prompts, "new")
            assert prompts.get(NAME, version=3).prompt_text == "new"
        registry.close()


@pytest.fixture
def replicated() -> Iterator[tuple[RedisServer, RedisServer]]:
    """A primary and one replica, each of this test alone."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    primary = RedisServer().start()
    replica = RedisServer(extra_args=("--replicaof", "127.0.0.1", str(primary.port)))
    try:
        replica.start()
        assert wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 10), (
            "the replica did not sync"
        )
        yield primary, replica
    finally:
        if replica.process is not None:
            replica.process.send_signal(signal.SIGCONT)
        replica.cleanup()
        primary.cleanup()


def test_wait_replicas_announces_only_confirmed_writes(
    replicated: tuple[RedisServer, RedisServer], namespace: str
) -> None:
    primary, replica = replicated
    registry = RedisPromptRegistry(url=primary.url, namespace=namespace, wait_replicas=1, wait_timeout=0.3)
    registry.create_prompt(NAME)
    registry.add_version(NAME, "one")
    registry.add_version(NAME, "unconfirmed")
    registry.set_label(NAME, LABEL, 1)
    # The safety poll would read the unconfirmed write from the primary: keep it out of the window.
    with PromptClient(primary.url, namespace=namespace, default_label=LABEL, poll_interval=30) as prompts:
        assert wait_until(lambda: serves(prompts, "one"), 5)
        before = prompts.status().rev
        assert replica.process is not None
        replica.process.send_signal(signal.SIGSTOP)  # WAIT gets no acknowledgement
        try:
            with pytest.raises(ReplicationTimeoutError):
                registry.set_label(NAME, LABEL, 2)
            watch = Watch(prompts, "unconfirmed")
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                assert prompts.get(NAME, LABEL).prompt_text == "one"
                assert prompts.status().rev == before
                time.sleep(0.01)
            assert watch.stop() == []
        finally:
            replica.process.send_signal(signal.SIGCONT)
        assert wait_until(lambda: replica.client().info("replication").get("master_link_status") == "up", 10)
        registry.add_version(NAME, "three")
        registry.set_label(NAME, LABEL, 3)  # confirmed: announced; the gap brings the earlier write too
        assert wait_until(lambda: serves(prompts, "three"), 1.0)
        assert prompts.status().rev == int(primary.client().get(f"{{{namespace}}}:rev") or 0)
    registry.close()
