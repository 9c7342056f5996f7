"""PromptClient on PostgreSQL (LISTEN/NOTIFY): live, pushed moves, faults, stale-if-error, no raising."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import PostgresPromptRegistry, RegistryUnavailableError
from tests.postgres_server import PostgresServer
from tests.redis_server import wait_until

pytestmark = pytest.mark.postgres


def seeded(url: str) -> PostgresPromptRegistry:
    reg = PostgresPromptRegistry(url)
    reg.create_prompt("p")
    for text in ("one", "two", "three"):
        reg.add_version("p", text)
    reg.set_label("p", "production", 1)
    return reg


@pytest.fixture
def url(postgres_server: PostgresServer, namespace: str) -> str:
    return postgres_server.url(namespace=namespace)


@pytest.fixture
def reg(url: str) -> Iterator[PostgresPromptRegistry]:
    registry = seeded(url)
    yield registry
    registry.close()


def test_goes_live_and_follows_label_moves_by_push(reg: PostgresPromptRegistry, url: str) -> None:
    with PromptClient(url, start_timeout=10) as client:
        assert client.status().state is ClientState.LIVE
        assert client.get("p").prompt_text == "one"
        assert client.get("p", "latest").version == 3
        events: list[Any] = []
        client.on_change(events.append)
        reg.set_label("p", "production", 2)
        assert wait_until(lambda: client.get("p").version == 2, 2.0)
        reg.add_version("p", "four")
        assert wait_until(lambda: client.get("p", "latest").prompt_text == "four", 2.0)
        reg.delete_label("p", "production")
        assert wait_until(lambda: "production" not in client._cache.pointers["p"], 2.0)
        assert [(e.label, e.version) for e in events] == [("production", 2), ("latest", 4), ("production", None)]
        assert client.status().resyncs == 1  # every change by push, none by resync


def test_two_hundred_moves_none_missed(reg: PostgresPromptRegistry, url: str) -> None:
    with PromptClient(url, start_timeout=10) as client:
        seen: list[int] = []
        client.on_change(lambda e: seen.append(e.rev) if e.label == "production" else None)
        for i in range(200):
            reg.set_label("p", "production", i % 3 + 1)
        last = reg.history("p")[-1].rev
        assert wait_until(lambda: client.status().rev == last, 5.0)
        assert client.status().resyncs == 1
        # A move to where the label already points is no change; every real one was seen, in order.
        assert seen == sorted(seen) and len(seen) >= 133


def _serve(url: str, queue: Any) -> None:
    with PromptClient(url, start_timeout=10) as client:
        queue.put(("ready", client.get("p").version))
        ok = wait_until(lambda: client.get("p").version == 3, 5.0)
        queue.put(("moved", ok))


def test_a_move_reaches_client_processes(reg: PostgresPromptRegistry, url: str) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_serve, args=(url, queue)) for _ in range(5)]
    try:
        for p in procs:
            p.start()
        assert [queue.get(timeout=30) for _ in procs] == [("ready", 1)] * 5
        reg.set_label("p", "production", 3)
        assert [queue.get(timeout=30) for _ in procs] == [("moved", True)] * 5
    finally:
        for p in procs:  # stopped by the test, also when an assertion failed
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)


def test_terminated_listener_reconnects_and_resyncs(reg: PostgresPromptRegistry, url: str) -> None:
    with PromptClient(url, start_timeout=10) as client, psycopg.connect(reg._conninfo, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%%' "
            "AND pid <> pg_backend_pid() AND application_name = 'promptreg'"
        ).fetchall()
        assert killed
        reg.set_label("p", "production", 2)  # made while the listener is gone: only a resync brings it
        assert wait_until(lambda: client.get("p").version == 2, 3.0)
        assert wait_until(lambda: client.status().state is ClientState.LIVE, 3.0)
        assert client.status().resyncs >= 2


def test_server_restart_serves_stale_then_converges(private_postgres_server: PostgresServer, tmp_path: Path) -> None:
    url = private_postgres_server.url()
    reg = seeded(url)
    errors: list[BaseException] = []
    with PromptClient(url, start_timeout=10, poll_interval=1.0, snapshot_path=tmp_path / "lkg") as client:
        private_postgres_server.stop()
        assert wait_until(lambda: client.status().state is ClientState.STALE, 3.0)
        for _ in range(100):  # lookups keep answering from the cache while the server is down
            try:
                assert client.get("p").prompt_text == "one"
            except BaseException as exc:  # pragma: no cover (the assertion below reports it)
                errors.append(exc)
        with pytest.raises(RegistryUnavailableError):
            client.get("p", version=2)  # a pinned version never cached needs the server
        private_postgres_server.start()
        reg.set_label("p", "production", 3)
        started = time.monotonic()
        assert wait_until(lambda: client.get("p").version == 3, 5.0)
        assert time.monotonic() - started < 2.0
        assert wait_until(lambda: client.status().state is ClientState.LIVE, 2.0)
    assert errors == []
    # The last-known-good file lets a service boot while PostgreSQL is down.
    private_postgres_server.stop()
    with PromptClient(url, start_timeout=1, snapshot_path=tmp_path / "lkg") as booted:
        assert booted.get("p").version == 3
        assert booted.status().state is ClientState.STALE
    private_postgres_server.start()
    reg.close()


def test_an_emptied_registry_never_replaces_the_cache(reg: PostgresPromptRegistry, url: str) -> None:
    with PromptClient(url, start_timeout=10, poll_interval=1.0) as client:
        reg.drop_namespace()  # as a wipe would: no revision, no prompt
        assert wait_until(lambda: client.status().state is ClientState.STALE, 5.0)
        assert client.get("p").prompt_text == "one"
        assert "empty" in (client.status().last_error or "")
        reg.create_prompt("q")  # the registry is trusted again once it holds a state
        assert wait_until(lambda: client.status().state is ClientState.LIVE, 5.0)


def test_unreachable_at_start_never_raises(tmp_path: Path) -> None:
    from promptreg.registry.cli.local_server import free_port

    with PromptClient(f"postgresql://postgres@127.0.0.1:{free_port()}/x", start_timeout=0.5) as client:
        assert client.status().state is not ClientState.LIVE
        with pytest.raises(RegistryUnavailableError):
            client.get("p")
        assert client.get("p", fallback="inline").prompt_text == "inline"


def test_safety_poll_catches_a_write_whose_notification_was_lost(reg: PostgresPromptRegistry, url: str) -> None:
    with PromptClient(url, start_timeout=10, poll_interval=0.5) as client:
        with psycopg.connect(reg._conninfo, autocommit=True) as conn, conn.transaction():
            # A write behind promptreg's back, notified nowhere: only the fingerprint shows it.
            conn.execute("UPDATE promptreg_labels SET version = 2 WHERE namespace = %s", (reg.namespace,))
            conn.execute("UPDATE promptreg_namespaces SET rev = rev + 1 WHERE namespace = %s", (reg.namespace,))
        assert wait_until(lambda: client.get("p").version == 2, 3.0)


def test_a_subset_client_reads_back_only_the_versions_it_serves(reg: PostgresPromptRegistry, url: str) -> None:
    reg.create_prompt("q")
    with PromptClient(url, start_timeout=10, prompts=["p"]) as client:
        reg.add_version("q", "not served here")  # read back: its revision, not its text
        reg.add_version("p", "four")  # read back, then its text fetched (a subset reads no other text)
        reg.set_label("p", "production", 4)
        last = reg.history("p")[-1].rev
        assert wait_until(lambda: client.status().rev == last, 2.0)
        assert client.get("p").prompt_text == "four"
        assert ("q", 1) not in client._cache.versions
        assert client.status().resyncs == 1
