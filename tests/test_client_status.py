"""``PromptClient.on_status``: every change of state reaches the listeners, in order, with no lock held."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from promptreg.client import ClientState, ClientStatus, ErrorKind, PromptClient
from promptreg.client.status import error_kind
from promptreg.registry import (
    ConfigurationError,
    JsonFilePromptRegistry,
    RedisPromptRegistry,
    RegistryAuthError,
    RegistryCorruptError,
    RegistryUnavailableError,
)
from tests.redis_server import RedisServer, wait_until


def test_file_client_reports_live_then_closed(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    registry = JsonFilePromptRegistry(path)
    registry.create_prompt("p")
    registry.add_version("p", "text")
    seen: list[ClientStatus] = []
    client = PromptClient(f"file://{path}", start_timeout=0)
    unregister = client.on_status(seen.append)
    assert client.wait_ready(5)
    client.close()
    states = [status.state for status in seen]
    # The client may have gone live before the listener was added; closing is always heard, once.
    assert states[-1] is ClientState.CLOSED and states.count(ClientState.CLOSED) == 1
    assert set(states) <= {ClientState.LIVE, ClientState.CLOSED}
    unregister()


def test_a_raising_listener_is_ignored_and_others_still_hear(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    JsonFilePromptRegistry(path).create_prompt("p")
    heard: list[ClientState] = []

    def broken(status: ClientStatus) -> None:
        raise RuntimeError("listener bug")

    client = PromptClient(f"file://{path}", start_timeout=5)
    client.on_status(broken)
    client.on_status(lambda status: heard.append(status.state))
    client.close()  # the raising listener runs first; close() must not raise and the other still hears
    assert heard == [ClientState.CLOSED]


def test_unregistered_listeners_hear_nothing(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    JsonFilePromptRegistry(path).create_prompt("p")
    heard: list[ClientState] = []
    client = PromptClient(f"file://{path}", start_timeout=5)
    unregister = client.on_status(lambda status: heard.append(status.state))
    unregister()
    unregister()  # twice is harmless
    client.close()
    assert heard == []


@pytest.mark.redis
def test_an_outage_is_reported_stale_then_live(private_redis_server: RedisServer, namespace: str) -> None:
    registry = RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace)
    registry.create_prompt("p")
    registry.add_version("p", "v1")
    registry.set_label("p", "production", 1)
    seen: list[ClientStatus] = []
    lock_free = threading.Event()

    def listener(status: ClientStatus) -> None:
        seen.append(status)
        lock_free.set()  # called with no lock held: reading the status from here must not deadlock
        assert client.status().state in (status.state, ClientState.CLOSED, ClientState.STALE, ClientState.LIVE)

    with PromptClient(private_redis_server.url, namespace=namespace, poll_interval=1.0) as client:
        assert client.wait_ready(10)
        client.on_status(listener)
        private_redis_server.kill()
        assert wait_until(lambda: any(s.state is ClientState.STALE for s in seen), timeout=10)
        stale = next(s for s in seen if s.state is ClientState.STALE)
        assert stale.last_error and stale.rev >= 3
        assert stale.last_error_kind is ErrorKind.NETWORK, stale
        assert client.get("p").prompt_text == "v1"  # still serving while stale
        private_redis_server.start()
        assert wait_until(lambda: seen[-1].state is ClientState.LIVE, timeout=10)
    assert seen[-1].state is ClientState.CLOSED
    assert lock_free.is_set()
    registry.close()


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (RegistryUnavailableError("redis is unreachable"), ErrorKind.NETWORK),
        (redis.exceptions.ConnectionError("Connection refused"), ErrorKind.NETWORK),
        (redis.exceptions.TimeoutError("Timeout reading"), ErrorKind.NETWORK),
        (redis.exceptions.BusyLoadingError("LOADING"), ErrorKind.NETWORK),
        (psycopg.OperationalError("server closed the connection"), ErrorKind.NETWORK),
        (ConnectionResetError(104, "reset"), ErrorKind.NETWORK),
        (RegistryAuthError("authentication failed"), ErrorKind.AUTH),
        (redis.exceptions.AuthenticationError("WRONGPASS"), ErrorKind.AUTH),
        (redis.exceptions.NoPermissionError("NOPERM"), ErrorKind.AUTH),
        (RegistryCorruptError("bad record"), ErrorKind.PROTOCOL),
        (ConfigurationError("psycopg is not installed"), ErrorKind.CONFIGURATION),
        (ValueError("a bug"), ErrorKind.INTERNAL),
        (KeyError("a bug"), ErrorKind.INTERNAL),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else str(value),
)
def test_every_caught_error_has_a_kind(error: BaseException, kind: ErrorKind) -> None:
    assert error_kind(error) is kind


@pytest.mark.redis
def test_a_refused_password_is_reported_as_auth(redis_server: RedisServer) -> None:
    url = f"redis://nobody-{uuid.uuid4().hex[:8]}:not-the-password@127.0.0.1:{redis_server.port}/0"
    client = PromptClient(url, start_timeout=0)
    try:
        assert wait_until(lambda: client.status().last_error is not None, timeout=10)
        status = client.status()
        assert status.state is ClientState.INITIALIZING
        assert status.last_error_kind is ErrorKind.AUTH, status
        assert "not-the-password" not in (status.last_error or "")
    finally:
        client.close()
