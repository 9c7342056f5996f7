"""``PromptClient`` against a real redis-server and a JSON file: push, lookups, errors, status."""

from __future__ import annotations

import ast
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from promptreg import client
from promptreg.client import ChangeEvent, ClientState, PromptClient
from promptreg.registry import (
    InvalidInputError,
    InvalidNameError,
    JsonFilePromptRegistry,
    LabelNotFoundError,
    MissingVariableError,
    PromptNotFoundError,
    RedisPromptRegistry,
    RegistryUnavailableError,
    VersionNotFoundError,
)
from tests.helpers import LABEL, NAME, PUSH_BOUND, assert_converged, registry_rev, seed
from tests.redis_server import RedisServer, free_port, wait_until

# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    yield reg
    reg.close()


@pytest.fixture
def prompts(redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry) -> Iterator[PromptClient]:
    seed(registry)
    with PromptClient(redis_server.url, namespace=namespace) as pc:
        yield pc


# -- the public face ---------------------------------------------------------------------------------


def test_all_is_exactly_the_public_api() -> None:
    assert client.__all__ == [
        "CachedVersion",
        "ChangeEvent",
        "ClientState",
        "ClientStatus",
        "ErrorKind",
        "PromptClient",
    ]
    for name in client.__all__:
        assert getattr(client, name).__doc__


def test_client_modules_never_print_and_stay_small() -> None:
    for path in sorted(Path(client.__file__).parent.rglob("*.py")):
        source = path.read_text("utf-8")
        assert len(source.splitlines()) < 400, path.name
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "print", f"print() in {path.name}:{node.lineno}"


# -- Redis: warm start, push, lookups ------------------------------------------------------------------


@pytest.mark.redis
def test_first_lookup_is_warm_and_resolves_default_label_and_latest(
    prompts: PromptClient, registry: RedisPromptRegistry
) -> None:
    status = prompts.status()
    assert status.state is ClientState.LIVE
    assert status.rev == registry_rev(registry)
    assert prompts.get(NAME).version == 1
    assert prompts.get(NAME, LABEL) is prompts.get(NAME)
    assert prompts.get(NAME, "latest") == registry.get_version(NAME)
    assert prompts.render(NAME, level="harsh", movie="Alien") == "v1: as a harsh critic, review Alien"
    assert prompts.render(NAME, label="latest", level="kind", movie="Up") == "v3: as a kind critic, review Up"


@pytest.mark.redis
def test_label_move_new_version_and_new_prompt_are_pushed(prompts: PromptClient, registry: RedisPromptRegistry) -> None:
    registry.set_label(NAME, LABEL, 3)
    assert wait_until(lambda: prompts.get(NAME).version == 3, PUSH_BOUND)
    registry.add_version(NAME, "v4 {{movie}}")
    assert wait_until(lambda: prompts.get(NAME, "latest").version == 4, PUSH_BOUND)
    registry.create_prompt("later")
    assert wait_until(lambda: prompts.status().rev == registry_rev(registry), PUSH_BOUND)
    with pytest.raises(LabelNotFoundError):
        prompts.get("later")
    registry.add_version("later", "hello {{name}}")
    registry.set_label("later", LABEL, 1)
    assert wait_until(lambda: prompts.status().rev == registry_rev(registry), PUSH_BOUND)
    assert prompts.render("later", name="Ann") == "hello Ann"
    registry.delete_label(NAME, LABEL)
    assert wait_until(lambda: prompts.status().rev == registry_rev(registry), PUSH_BOUND)
    with pytest.raises(LabelNotFoundError):
        prompts.get(NAME)
    assert_converged(prompts, registry)


@pytest.mark.redis
def test_rollback_reaches_the_client(prompts: PromptClient, registry: RedisPromptRegistry) -> None:
    registry.set_label(NAME, LABEL, 2)
    registry.rollback(NAME, LABEL)
    assert_converged(prompts, registry)
    assert prompts.get(NAME).version == 1


@pytest.mark.redis
def test_lookup_errors_are_typed(prompts: PromptClient) -> None:
    with pytest.raises(PromptNotFoundError):
        prompts.get("nope")
    with pytest.raises(LabelNotFoundError):
        prompts.get(NAME, "staging")
    with pytest.raises(VersionNotFoundError):
        prompts.get(NAME, version=99)
    with pytest.raises(PromptNotFoundError):
        prompts.get("nope", version=1)
    with pytest.raises(InvalidNameError):
        prompts.get("bad name")
    with pytest.raises(InvalidNameError):
        prompts.get(NAME, "bad label")
    with pytest.raises(InvalidInputError):
        prompts.get(NAME, LABEL, version=1)
    with pytest.raises(InvalidInputError):
        prompts.get(NAME, version=0)
    with pytest.raises(MissingVariableError):
        prompts.render(NAME, movie="Alien")


@pytest.mark.redis
def test_pinned_version_is_read_once_then_served_without_the_server(
    private_redis_server: RedisServer, namespace: str
) -> None:
    with RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace) as reg:
        seed(reg, versions=4, label_at=4)
    with PromptClient(private_redis_server.url, namespace=namespace) as prompts:
        pinned = prompts.get(NAME, version=2)
        assert pinned.prompt_text.startswith("v2:")
        private_redis_server.kill()
        assert prompts.get(NAME, version=2) is pinned  # cached for ever, no I/O
        assert prompts.get(NAME).version == 4  # labelled lookups serve the last state
        with pytest.raises(RegistryUnavailableError):
            prompts.get(NAME, version=3)  # never read: needs the registry


@pytest.mark.redis
def test_on_change_events_failing_callback_and_unregister(
    prompts: PromptClient, registry: RedisPromptRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[ChangeEvent] = []
    after_failure: list[ChangeEvent] = []

    def explode(event: ChangeEvent) -> None:
        raise RuntimeError("callback bug")

    unregister = prompts.on_change(events.append)
    prompts.on_change(explode)
    prompts.on_change(after_failure.append)
    with caplog.at_level(logging.ERROR, logger="promptreg.client"):
        move = registry.set_label(NAME, LABEL, 2)
        assert wait_until(lambda: len(after_failure) == 1, PUSH_BOUND)
    assert events == [ChangeEvent(NAME, LABEL, 2, 1, move.rev)]
    assert "callback bug" in caplog.text
    unregister()
    registry.set_label(NAME, LABEL, 3)
    assert wait_until(lambda: len(after_failure) == 2, PUSH_BOUND)
    assert len(events) == 1
    assert prompts.status().state is ClientState.LIVE


@pytest.mark.redis
def test_status_wait_ready_close_and_listener_thread(prompts: PromptClient) -> None:
    assert prompts.wait_ready(0.0)
    listeners = [t for t in threading.enumerate() if t.name.startswith("promptreg-redis-")]
    assert listeners and all(t.daemon for t in listeners)
    version = prompts.get(NAME)
    prompts.close()
    prompts.close()
    assert prompts.status().state is ClientState.CLOSED
    assert not prompts.wait_ready(0.5)
    assert prompts.get(NAME) is version  # lookups still answer after close
    assert wait_until(lambda: not any(t.is_alive() for t in listeners), 5.0)


@pytest.mark.redis
def test_default_label_from_the_environment(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(registry)
    registry.set_label(NAME, "staging", 2)
    monkeypatch.setenv("PROMPTREG_LABEL", "staging")
    with PromptClient(redis_server.url, namespace=namespace) as prompts:
        assert prompts.default_label == "staging"
        assert prompts.get(NAME).version == 2
    with PromptClient(redis_server.url, namespace=namespace, default_label="production") as prompts:
        assert prompts.get(NAME).version == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(InvalidInputError):
        PromptClient("http://example.invalid/registry")
    with pytest.raises(InvalidNameError):
        PromptClient("redis://127.0.0.1:1/0", default_label="bad label")
    with pytest.raises(InvalidNameError):
        PromptClient("redis://127.0.0.1:1/0", namespace="bad{ns}")
    with pytest.raises(InvalidInputError):
        PromptClient("redis://127.0.0.1:1/0", poll_interval=0)


def test_unreachable_registry_without_snapshot_starts_initializing() -> None:
    with PromptClient(f"redis://127.0.0.1:{free_port()}/0", start_timeout=0.5) as prompts:
        status = prompts.status()
        assert status.state is ClientState.INITIALIZING
        assert status.last_error is not None
        with pytest.raises(RegistryUnavailableError):
            prompts.get(NAME)


@pytest.mark.redis
def test_client_started_during_an_outage_goes_live_when_redis_comes_back(
    private_redis_server: RedisServer, namespace: str
) -> None:
    private_redis_server.kill()
    with PromptClient(private_redis_server.url, namespace=namespace, start_timeout=0.2) as prompts:
        assert prompts.status().state is ClientState.INITIALIZING
        private_redis_server.start()
        with RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace) as reg:
            seed(reg)
            assert prompts.wait_ready(15.0)
            assert_converged(prompts, reg)


@pytest.mark.redis
def test_unix_socket_url(namespace: str) -> None:
    server = RedisServer()
    socket_path = server.dir / "redis.sock"
    server.extra_args = ("--unixsocket", str(socket_path), "--unixsocketperm", "700")
    try:
        server.start()
        with RedisPromptRegistry.from_url(f"unix://{socket_path}", namespace=namespace) as reg:
            seed(reg)
            with PromptClient(f"unix://{socket_path}", namespace=namespace) as prompts:
                assert prompts.get(NAME).version == 1
                reg.set_label(NAME, LABEL, 2)
                assert_converged(prompts, reg)
    finally:
        server.cleanup()


# -- the JSON file backend -----------------------------------------------------------------------------


def test_file_backend_is_watched(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    seed(reg)
    with PromptClient(f"file://{path}") as prompts:
        assert prompts.status().state is ClientState.LIVE
        assert prompts.get(NAME).version == 1
        events: list[ChangeEvent] = []
        prompts.on_change(events.append)
        move = reg.set_label(NAME, LABEL, 3)
        assert wait_until(lambda: prompts.get(NAME).version == 3, PUSH_BOUND)
        assert ChangeEvent(NAME, LABEL, 3, 1, move.rev) in events
        reg.create_prompt("later")
        reg.add_version("later", "hi")
        assert_converged(prompts, reg)
        assert prompts.get(NAME, version=2).prompt_text.startswith("v2:")
        with pytest.raises(VersionNotFoundError):
            prompts.get(NAME, version=9)


def test_file_backend_survives_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    seed(reg)
    good = path.read_bytes()
    with PromptClient(f"file://{path}") as prompts:
        path.write_text("{ not json")
        assert wait_until(lambda: prompts.status().state is ClientState.STALE, PUSH_BOUND)
        assert "corrupt" in (prompts.status().last_error or "") or "JSON" in (prompts.status().last_error or "")
        assert prompts.get(NAME).version == 1  # stale-if-error
        path.write_bytes(good)
        reg.set_label(NAME, LABEL, 2)
        assert_converged(prompts, reg)


def test_file_backend_missing_file_is_an_empty_registry(tmp_path: Path) -> None:
    path = tmp_path / "later.json"
    with PromptClient(f"file://{path}") as prompts:
        assert prompts.wait_ready(PUSH_BOUND)
        with pytest.raises(PromptNotFoundError):
            prompts.get(NAME)
        reg = JsonFilePromptRegistry(path)
        seed(reg)
        assert_converged(prompts, reg)
