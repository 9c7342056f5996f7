"""The acknowledgement path on a real redis-server: who writes a report, what it costs the listener.

- A report packed from the record's template is byte for byte what ``encode_member`` makes.
- The listener writes the acknowledgement of a change itself, and the one at the end of a burst's
  window too (no other thread is woken for either); a burst is acknowledged in a few reports.
- The listener never waits on the presence connection: against a server that stopped answering
  each write returns at once, and after :data:`MAX_UNREAD` missing replies it leaves the reports to
  the thread; once the server answers again every reply is read and nothing is out of step.
- An error reply (an ACL user that may not ``SET``) is logged once, the client stays live, and the
  reports say they resumed once the user may write again.
- A forked child's copy of its parent's reporter writes nothing on the parent's connection.
- The listener reads its subscription directly (not through ``get_message``), a message longer
  than one read included.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from promptreg.client import PromptClient
from promptreg.client.feeds import call_idle_by
from promptreg.client.redis.presence_link import PresenceLink, ReportPacker
from promptreg.client.redis.presence_reporter import ACK_COALESCE, MAX_UNREAD, PresenceReporter
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.fleet import FleetMember, encode_member
from promptreg.registry.redis.keys import Keyspace
from tests.redis_server import RedisServer, wait_until

NAME, LABEL = "movie-critic", "production"


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    reg.create_prompt(NAME)
    for n in (1, 2):
        reg.add_version(NAME, f"v{n}: review {{{{movie}}}}")
    reg.set_label(NAME, LABEL, 1)
    yield reg
    reg.close()


def _reporter(prompts: PromptClient) -> PresenceReporter:
    reporter = prompts._presence.reporter
    assert reporter is not None
    return reporter


def _record(registry: RedisPromptRegistry, client_id: str) -> FleetMember | None:
    return {m.client_id: m for m in registry.fleet()}.get(client_id)


def test_a_report_packed_from_the_template_is_the_record_encode_member_makes() -> None:
    start = datetime.fromtimestamp(1_700_000_000.25, UTC)
    template = FleetMember(
        client_id="host-1:42:0badcafe", client_name="web %s 100%", host="host%d", pid=42, label="production",
        library_version="1.2.3", state="initializing", rev=0, started_at=start, last_seen=start, report_interval=5.0,
    )  # fmt: skip
    packer = ReportPacker(Keyspace("shop"), template)
    revs = [0, 7, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1]  # each msgpack width
    for i, rev in enumerate(revs):
        state, now = ("live", "stale", "initializing")[i % 3], (1_700_000_001.5, 1.0, 0.1)[i % 3]
        expected = template.model_copy(
            update={"state": state, "rev": rev, "last_seen": datetime.fromtimestamp(now, UTC)}
        )
        assert packer.record(state, rev, now) == encode_member(expected)
    with pytest.raises(ValueError):
        packer.record("live", -1, 1.0)
    # The commands are what redis-py packs for the same arguments.
    record = packer.record("live", 7, 1_700_000_001.5)
    key, fleet = "{shop}:fleet:host-1:42:0badcafe", "{shop}:fleet"
    commands = [("SET", key, record, "PX", 15000), ("ZADD", fleet, 1700000001500, template.client_id)]
    conn: Any = redis.Connection  # untyped in redis-py
    packed = b"".join(conn().pack_commands(commands))
    assert packer.report("live", 7, 1_700_000_001.5) == packed
    repair = b"".join(conn().pack_commands([("DEL", fleet)]))
    assert packer.report("live", 7, 1_700_000_001.5, True) == repair + packed


def test_call_idle_by_outside_a_listener_hook_asks_nobody() -> None:
    assert call_idle_by(time.monotonic()) is False


@pytest.mark.redis
def test_the_listener_acknowledges_changes_itself_and_a_burst_at_the_end_of_its_window(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    writers: list[str] = []
    send = PresenceLink.send

    def recording_send(link: PresenceLink, data: bytes, replies: int) -> None:
        if b"ZADD" in data:
            writers.append(threading.current_thread().name)
        send(link, data, replies)

    monkeypatch.setattr(PresenceLink, "send", recording_send)
    with PromptClient(redis_server.url, namespace=namespace, report_interval=60) as prompts:
        reporter = _reporter(prompts)
        assert prompts.wait_ready(5) and writers == [f"promptreg-presence-{namespace}"]  # the first report
        listener = f"promptreg-redis-{namespace}"
        # A change after a quiet time: acknowledged at once, by the listener.
        assert wait_until(lambda: time.monotonic() - reporter._sent_at > ACK_COALESCE, 5)
        move = registry.set_label(NAME, LABEL, 2)
        result = registry.wait_for_fleet(timeout=5)
        assert result.complete and result.reached == [prompts.client_id] and result.rev == move.rev
        assert writers[1:] == [listener]
        # A burst: a few reports, the last at the window's end with the last change, all by the listener.
        for i in range(20):
            registry.set_label(NAME, LABEL, 1 + i % 2)
        last = registry.set_label(NAME, LABEL, 2)
        result = registry.wait_for_fleet(timeout=5)
        assert result.complete and result.rev == last.rev
        member = _record(registry, prompts.client_id)
        assert member is not None and member.rev == last.rev
        burst = writers[2:]
        assert 1 <= len(burst) < 15 and set(burst) == {listener}, writers
        assert not reporter._pending  # nothing was left to the thread


@pytest.mark.redis
def test_the_listener_never_waits_on_a_server_that_stopped_answering(namespace: str) -> None:
    server = RedisServer().start()  # stopped (SIGSTOP) below: not the shared one
    try:
        with RedisPromptRegistry.from_url(server.url, namespace=namespace) as reg:
            reg.create_prompt(NAME)
            reg.add_version(NAME, "v1")
            reg.set_label(NAME, LABEL, 1)
            rev = int(reg.redis.get(reg.keys.rev) or 0)
        with PromptClient(server.url, namespace=namespace, report_interval=60) as prompts:
            reporter = _reporter(prompts)
            assert prompts.wait_ready(5)
            link = reporter._link
            assert link is not None
            with reporter._lock:  # the link is used under the reporter's lock (the listener reads it too)
                assert link.collect(5) == [] and link.unread == 0
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGSTOP)
            try:
                written = []
                for step in range(1, MAX_UNREAD):
                    started = time.perf_counter()
                    written.append(reporter._write(("live", rev + step)))
                    assert time.perf_counter() - started < 0.05
                # Each report waits for 2 replies: past MAX_UNREAD missing, the reports are the thread's.
                assert written == [True] * (MAX_UNREAD // 2 + 1) + [False] * (MAX_UNREAD // 2 - 2), written
            finally:
                os.kill(server.process.pid, signal.SIGCONT)
            with reporter._lock:
                assert link.collect(5) == [] and link.unread == 0  # every reply, none out of step
            with RedisPromptRegistry.from_url(server.url, namespace=namespace) as reg:
                member = _record(reg, prompts.client_id)
                assert member is not None and member.rev == rev + MAX_UNREAD // 2 + 1
    finally:
        server.cleanup()


@pytest.mark.redis
def test_an_error_reply_is_logged_once_and_the_reports_resume(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    root = redis_server.client()
    user, password = f"{namespace}-noset", uuid.uuid4().hex
    root.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], channels=["*"],
                     commands=["+@all", "-set"])  # fmt: skip
    url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
    caplog.set_level(logging.DEBUG, logger="promptreg.client")
    try:
        with PromptClient(url, namespace=namespace, report_interval=0.1) as prompts:
            assert prompts.status().state.value == "live"
            registry.set_label(NAME, LABEL, 2)
            assert wait_until(lambda: prompts.get(NAME).version == 2, 5)
            assert wait_until(lambda: len(_failures(caplog, logging.DEBUG)) >= 3, 5)  # periodic retries
            warnings = _failures(caplog, logging.WARNING)
            assert len(warnings) == 1 and "NOPERM" in warnings[0] and "promptreg acl" in warnings[0]
            assert _record(registry, prompts.client_id) is None  # no record: the SET was refused
            root.acl_setuser(user, commands=["+set"])
            assert wait_until(lambda: "promptreg: presence reports resumed" in caplog.messages, 5)
            assert wait_until(lambda: _record(registry, prompts.client_id) is not None, 5)
            assert prompts.status().state.value == "live"
    finally:
        root.acl_deluser(user)
        root.close()


def _failures(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and "presence report failed" in r.getMessage()]


@pytest.mark.redis
def test_a_forked_childs_copy_of_the_reporter_writes_nothing(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    with PromptClient(redis_server.url, namespace=namespace, report_interval=60) as prompts:
        reporter = _reporter(prompts)
        assert prompts.wait_ready(5)
        ours, theirs = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: the parent's reporter, copied, must not write on the parent's socket
            try:
                os.write(theirs, b"1" if reporter._write(("live", 10**6)) else b"0")
            finally:
                os._exit(0)
        os.close(theirs)
        try:
            assert os.read(ours, 1) == b"0"
        finally:
            os.close(ours)
            os.waitpid(pid, 0)
        assert not reporter._forking  # the parent writes again, once it serves (a fork paused its reports)
        prompts.get(NAME)
        assert wait_until(lambda: _record(registry, prompts.client_id) is not None, 5)
        move = registry.set_label(NAME, LABEL, 2)
        result = registry.wait_for_fleet(timeout=5)
        assert result.complete and result.reached == [prompts.client_id] and result.rev == move.rev
        link = reporter._link
        with reporter._lock:
            assert link is not None and link.collect(5) == [] and link.unread == 0


@pytest.mark.redis
def test_the_listener_reads_its_subscription_directly_a_long_message_included(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    with PromptClient(redis_server.url, namespace=namespace, fleet_report=False) as prompts:
        assert prompts.wait_ready(5)
        feed: Any = prompts._feed
        assert feed._reads is not None  # not redis-py's get_message
        registry.redis.publish(registry.keys.channel, b"\x81" + b"x" * 200_000)  # 3 reads of 64 KiB and more
        assert wait_until(lambda: prompts.status().malformed_messages == 1, 5)
        move = registry.set_label(NAME, LABEL, 2)
        assert wait_until(lambda: prompts.status().rev == move.rev, 5)
        assert prompts.get(NAME).version == 2 and prompts.status().state.value == "live"


def test_a_link_refuses_a_client_without_a_socket() -> None:
    class NoSocket:
        def connect(self) -> None:
            pass

        def disconnect(self) -> None:
            pass

    class Pool:
        def make_connection(self) -> NoSocket:
            return NoSocket()

    client: Any = redis.Redis.__new__(redis.Redis)
    client.connection_pool = Pool()
    with pytest.raises(redis.ConnectionError):
        PresenceLink(client)
