"""``PromptClient`` under faults, on a real redis-server each test owns.

Every test ends with :func:`assert_converged`: the client is live at the registry's revision and
resolves every label as the registry does. Where lookups run during the fault, a :class:`Reader`
thread checks that none raised and none went backwards.
"""

from __future__ import annotations

import json
import logging
import os
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis

from promptreg.client import ClientState, ErrorKind, PromptClient
from promptreg.client.snapshot import load_snapshot
from promptreg.registry import RedisPromptRegistry, RegistryCorruptError, RegistryUnavailableError
from tests.helpers import LABEL, NAME, PUSH_BOUND, Reader, assert_converged, registry_rev, seed
from tests.redis_server import RedisServer, free_port, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def private_registry(private_redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace)
    yield reg
    reg.close()


def _subscriber_ids(conn: redis.Redis) -> set[int]:
    return {int(c["id"]) for c in conn.client_list(_type="pubsub")}


# -- connection faults ---------------------------------------------------------------------------------


def test_client_kill_pubsub_then_immediate_moves(
    private_redis_server: RedisServer, namespace: str, private_registry: RedisPromptRegistry
) -> None:
    seed(private_registry, versions=40)
    admin = private_redis_server.client()
    with PromptClient(private_redis_server.url, namespace=namespace) as prompts, Reader(prompts) as reader:
        before = _subscriber_ids(admin)
        assert before
        killed = admin.client_kill_filter(_type="pubsub")
        assert killed >= 1
        for version in range(2, 41):  # no pause: these land while the client has no subscription
            private_registry.set_label(NAME, LABEL, version)
        assert_converged(prompts, private_registry)
        assert _subscriber_ids(admin).isdisjoint(before)
        assert prompts.status().resyncs >= 2
    reader.assert_clean()
    assert prompts.get(NAME).version == 40
    admin.close()


def test_kill_9_and_restart_on_the_same_port_with_moves_after(
    private_redis_server: RedisServer,
    namespace: str,
    private_registry: RedisPromptRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(private_registry, versions=30)
    with (
        caplog.at_level(logging.DEBUG, logger="promptreg.client"),
        PromptClient(private_redis_server.url, namespace=namespace) as prompts,
        Reader(prompts) as reader,
    ):
        private_registry.set_label(NAME, LABEL, 5)
        assert wait_until(lambda: prompts.get(NAME).version == 5, PUSH_BOUND)
        private_redis_server.kill()
        assert wait_until(lambda: prompts.status().state is ClientState.STALE, 15.0)
        assert prompts.get(NAME).version == 5  # stale-if-error
        private_redis_server.start()  # same port, same dir: AOF brings the data back
        for version in range(6, 31):
            private_registry.set_label(NAME, LABEL, version)
        assert_converged(prompts, private_registry, timeout=20.0)
        assert prompts.status().last_error is not None
    reader.assert_clean()
    assert prompts.get(NAME).version == 30
    retries = [r for r in caplog.records if "retrying with backoff" in r.getMessage()]
    assert [r.levelno for r in retries if r.levelno >= logging.WARNING] == [logging.WARNING]  # one per outage
    assert any("reconnected" in r.getMessage() for r in caplog.records)


def test_subscriber_over_the_output_buffer_limit_is_dropped_and_resyncs(
    private_redis_server: RedisServer, namespace: str, private_registry: RedisPromptRegistry
) -> None:
    seed(private_registry, versions=20)
    admin = private_redis_server.client()
    admin.config_set("client-output-buffer-limit", "pubsub 4096 1024 1")
    with PromptClient(private_redis_server.url, namespace=namespace) as prompts, Reader(prompts) as reader:
        resyncs = prompts.status().resyncs
        # Flood: every PUBLISH of the pipeline runs before the server writes to the subscriber.
        pipe = admin.pipeline(transaction=False)
        for _ in range(200):
            pipe.publish(private_registry.keys.channel, b"\xc1" * 2048)
        pipe.execute()
        for version in range(2, 21):
            private_registry.set_label(NAME, LABEL, version)
        log = (private_redis_server.dir / "redis.log").read_text()
        assert "output buffer limits" in log
        assert_converged(prompts, private_registry)
        assert prompts.status().resyncs > resyncs
    reader.assert_clean()
    admin.close()


def test_garbage_on_the_channel_is_ignored_and_counted(
    private_redis_server: RedisServer,
    namespace: str,
    private_registry: RedisPromptRegistry,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seed(private_registry, versions=5)
    admin = private_redis_server.client()
    garbage = [b"garbage", msgpack.packb([1, 2]), msgpack.packb({"rev": "x", "op": "set_label"}), b""]
    with PromptClient(private_redis_server.url, namespace=namespace) as prompts, Reader(prompts) as reader:
        for payload in garbage:
            admin.publish(private_registry.keys.channel, payload)
        for version in range(2, 6):
            private_registry.set_label(NAME, LABEL, version)
        assert_converged(prompts, private_registry)
        assert prompts.status().malformed_messages == len(garbage)
        assert prompts.status().last_error_kind is ErrorKind.PROTOCOL
        assert prompts.status().resyncs == 1  # garbage never forced a reload
    reader.assert_clean()
    warnings = [r for r in caplog.records if "malformed" in r.getMessage() and r.levelno == logging.WARNING]
    assert len(warnings) == 1  # the count is in the status; the log is not flooded
    admin.close()


def test_safety_poll_catches_a_write_that_published_nothing(
    private_redis_server: RedisServer, namespace: str, private_registry: RedisPromptRegistry
) -> None:
    seed(private_registry)
    keys = private_registry.keys
    with PromptClient(private_redis_server.url, namespace=namespace, poll_interval=0.3) as prompts:
        # A label write whose message was lost: the state (label key and index) changes, nothing is published.
        pipe = private_registry.redis.pipeline(transaction=True)
        pipe.set(keys.label(NAME, LABEL), 3).hset(keys.index_label(LABEL), NAME, 3).incr(keys.rev).execute()
        assert wait_until(lambda: prompts.get(NAME).version == 3, PUSH_BOUND)
        assert_converged(prompts, private_registry)


class FreezableProxy:
    """A TCP proxy to Redis whose subscriber connections can go silent without closing: the
    half-open socket a dead network path leaves behind. Connections made later work normally."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.subscribers: set[int] = set()
        self.frozen: set[int] = set()
        self.stopped = threading.Event()
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def freeze_subscribers(self) -> None:
        self.frozen |= self.subscribers

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self.stopped.is_set():
            try:
                downstream, _ = self.listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            thread = threading.Thread(target=self._pump, args=(downstream, upstream), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _pump(self, downstream: socket.socket, upstream: socket.socket) -> None:
        me = id(downstream)
        with downstream, upstream:
            while not self.stopped.is_set():
                readable, _, _ = select.select([downstream, upstream], [], [], 0.1)
                if me in self.frozen:
                    continue  # deliver nothing either way; the socket stays open and silent
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is downstream and b"SUBSCRIBE" in data.upper():
                        self.subscribers.add(me)
                    (upstream if sock is downstream else downstream).sendall(data)

    def close(self) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join(5)
        self.listener.close()


def test_a_silent_subscriber_connection_is_detected_by_ping_and_replaced(
    redis_server: RedisServer, namespace: str
) -> None:
    proxy = FreezableProxy(redis_server.port)
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        with RedisPromptRegistry.from_url(redis_server.url, namespace=namespace) as reg:
            seed(reg)
            with PromptClient(url, namespace=namespace, poll_interval=0.3) as prompts:
                proxy.freeze_subscribers()  # the subscriber connection goes silent, stays open
                reg.set_label(NAME, LABEL, 2)  # its message is lost in the frozen connection
                assert wait_until(lambda: "PONG" in (prompts.status().last_error or ""), 15.0)
                reg.set_label(NAME, LABEL, 3)
                assert_converged(prompts, reg)
    finally:
        proxy.close()


# -- concurrency -------------------------------------------------------------------------------------------


def test_threads_hammering_get_while_hundreds_of_moves_apply(redis_server: RedisServer, namespace: str) -> None:
    moves = 300
    with RedisPromptRegistry.from_url(redis_server.url, namespace=namespace) as reg:
        seed(reg, versions=moves)
        with PromptClient(redis_server.url, namespace=namespace) as prompts:
            readers = [Reader(prompts), Reader(prompts), Reader(prompts, label="latest"), Reader(prompts)]
            for reader in readers:
                reader.__enter__()
            try:
                for version in range(2, moves + 1):
                    reg.set_label(NAME, LABEL, version)
                assert_converged(prompts, reg)
            finally:
                for reader in readers:
                    reader.__exit__()
            for reader in readers:
                reader.assert_clean()
            assert prompts.get(NAME).version == moves
            assert prompts.status().resyncs == 1  # every move applied in order, none missed


# -- fork --------------------------------------------------------------------------------------------------


def test_a_forked_child_sees_moves_made_after_the_fork(redis_server: RedisServer, namespace: str) -> None:
    with RedisPromptRegistry.from_url(redis_server.url, namespace=namespace) as reg:
        seed(reg, versions=3)
        with PromptClient(redis_server.url, namespace=namespace) as prompts:
            assert prompts.get(NAME).version == 1
            ready_r, ready_w = os.pipe()
            go_r, go_w = os.pipe()
            result_r, result_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report through the pipe, never return into pytest
                code = 1
                try:
                    os.write(ready_w, b"1" if prompts.wait_ready(10.0) else b"0")
                    select.select([go_r], [], [], 10.0)
                    seen = wait_until(lambda: prompts.get(NAME).version == 3, 10.0)
                    report = {"seen": seen, "version": prompts.get(NAME).version, "status": str(prompts.status())}
                    os.write(result_w, json.dumps(report).encode())
                    code = 0
                finally:
                    os._exit(code)
            try:
                assert select.select([ready_r], [], [], 20.0)[0], "child never got ready"
                assert os.read(ready_r, 1) == b"1"
                reg.set_label(NAME, LABEL, 3)
                os.write(go_w, b"go")
                assert select.select([result_r], [], [], 20.0)[0], "child never reported"
                report = json.loads(os.read(result_r, 65536))
                assert report["seen"] and report["version"] == 3, report
            finally:
                _, status = os.waitpid(pid, 0)
                for fd in (ready_r, ready_w, go_r, go_w, result_r, result_w):
                    os.close(fd)
            assert os.waitstatus_to_exitcode(status) == 0
            # The parent kept its own subscription through the child's start and exit.
            reg.set_label(NAME, LABEL, 2)
            assert_converged(prompts, reg)
            assert prompts.status().resyncs == 1


# -- last-known-good file ------------------------------------------------------------------------------------


def test_cold_start_from_the_last_known_good_file_with_the_server_down(
    private_redis_server: RedisServer, namespace: str, private_registry: RedisPromptRegistry, tmp_path: Path
) -> None:
    snapshot = tmp_path / "prompts.msgpack"
    seed(private_registry, versions=3)
    with PromptClient(private_redis_server.url, namespace=namespace, snapshot_path=snapshot) as first:
        private_registry.set_label(NAME, LABEL, 2)
        assert wait_until(lambda: first.get(NAME).version == 2, PUSH_BOUND)
        written_rev = registry_rev(private_registry)
        assert wait_until(lambda: (s := load_snapshot(snapshot, namespace)) is not None and s.rev == written_rev, 10.0)
    private_redis_server.kill()
    with PromptClient(private_redis_server.url, namespace=namespace, snapshot_path=snapshot) as cold:
        status = cold.status()
        assert status.state is ClientState.STALE
        assert status.rev == written_rev
        assert cold.get(NAME).version == 2
        assert cold.render(NAME, level="fair", movie="Heat") == "v2: as a fair critic, review Heat"
        assert cold.get(NAME, "latest").version == 3
        private_redis_server.start()
        private_registry.set_label(NAME, LABEL, 3)
        assert_converged(cold, private_registry, timeout=20.0)


def _readable_snapshot(path: Path, namespace: str) -> bool:
    try:
        return load_snapshot(path, namespace) is not None
    except RegistryCorruptError:
        return False


@pytest.mark.parametrize("content", [b"\x00garbage\xff", b""], ids=["garbage", "empty"])
def test_a_corrupt_snapshot_is_ignored_with_a_warning_and_replaced_when_live(
    private_redis_server: RedisServer,
    namespace: str,
    private_registry: RedisPromptRegistry,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
) -> None:
    snapshot = tmp_path / "prompts.msgpack"
    snapshot.write_bytes(content)
    seed(private_registry)
    private_redis_server.kill()
    url = private_redis_server.url
    with (
        caplog.at_level(logging.WARNING, logger="promptreg.client"),
        PromptClient(url, namespace=namespace, snapshot_path=snapshot, start_timeout=0.5) as pc,
    ):
        assert pc.status().state is ClientState.INITIALIZING
        with pytest.raises(RegistryUnavailableError):
            pc.get(NAME)
        assert "ignoring the last-known-good file" in caplog.text
        assert snapshot.read_bytes() == content  # left as found while nothing better is known
        private_redis_server.start()
        assert_converged(pc, private_registry, timeout=20.0)
        assert wait_until(lambda: _readable_snapshot(snapshot, namespace), 10.0)


def test_snapshot_of_another_namespace_is_not_served(redis_server: RedisServer, namespace: str, tmp_path: Path) -> None:
    snapshot = tmp_path / "prompts.msgpack"
    with RedisPromptRegistry.from_url(redis_server.url, namespace=namespace) as reg:
        seed(reg)
        with PromptClient(redis_server.url, namespace=namespace, snapshot_path=snapshot) as pc:
            assert wait_until(lambda: snapshot.exists(), 10.0)
            assert pc.get(NAME).version == 1
    with PromptClient(
        f"redis://127.0.0.1:{free_port()}/0", namespace="other", snapshot_path=snapshot, start_timeout=0.5
    ) as other:
        assert other.status().state is ClientState.INITIALIZING
        with pytest.raises(RegistryUnavailableError):
            other.get(NAME)
