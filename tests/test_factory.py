"""``PromptRegistryFactory``: URLs to backends, the environment, and passwords kept out of messages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from promptreg.registry import (
    InvalidInputError,
    JsonFilePromptRegistry,
    PromptRegistryFactory,
    RedisPromptRegistry,
    RegistryUnavailableError,
)
from promptreg.registry.factory import DEFAULT_URL, redact_url
from tests.redis_server import RedisServer, free_port

SECRET = "hunter2-s3cret"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTREG_URL", raising=False)
    monkeypatch.delenv("PROMPTREG_NAMESPACE", raising=False)
    return tmp_path


# -- file URLs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("file://./x.json", "x.json"),
        ("file://sub/x.json", "sub/x.json"),
        ("file:x.json", "x.json"),
        ("./sub/x.json", "sub/x.json"),
        ("x.json", "x.json"),
        ("file://./my%20dir/x.json", "my dir/x.json"),
    ],
)
def test_relative_file_urls_are_relative_to_the_cwd(in_tmp: Path, url: str, relative: str) -> None:
    (in_tmp / relative).parent.mkdir(parents=True, exist_ok=True)  # an explicit path's folder must exist
    reg = PromptRegistryFactory.from_url(url)
    assert isinstance(reg, JsonFilePromptRegistry)
    assert reg.path == in_tmp / relative


def test_absolute_file_urls(in_tmp: Path) -> None:
    target = in_tmp / "abs" / "registry.json"
    target.parent.mkdir()
    for url in (f"file://{target}", str(target), f"FILE://{target}"):
        reg = PromptRegistryFactory.from_url(url)
        assert isinstance(reg, JsonFilePromptRegistry) and reg.path == target


def test_file_options_reach_the_backend(in_tmp: Path) -> None:
    reg = PromptRegistryFactory.from_url("file://./x.json", lock_timeout=1.5, max_text_bytes=10)
    assert isinstance(reg, JsonFilePromptRegistry)
    assert (reg.lock_timeout, reg.max_text_bytes) == (1.5, 10)


@pytest.mark.parametrize("url", ["", "   ", "file://", "file:"])
def test_empty_urls_are_refused(in_tmp: Path, url: str) -> None:
    with pytest.raises(InvalidInputError):
        PromptRegistryFactory.from_url(url)


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        (f"http://user:{SECRET}@example.invalid/x", "http"),
        (f"mysql://:{SECRET}@db/x", "mysql"),
        ("s3://bucket/registry.json", "s3"),
    ],
)
def test_unknown_schemes_are_named_without_the_password(url: str, scheme: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PromptRegistryFactory.from_url(url)
    assert repr(scheme) in str(caught.value)
    assert SECRET not in str(caught.value)


# -- Redis URLs ---------------------------------------------------------------------------------------


@pytest.mark.redis
def test_redis_url_with_namespace_reaches_the_server(redis_server: RedisServer, namespace: str) -> None:
    with PromptRegistryFactory.from_url(redis_server.url, namespace=namespace) as reg:
        assert isinstance(reg, RedisPromptRegistry) and reg.keys.namespace == namespace
        reg.create_prompt("movie-critic")
        reg.add_version("movie-critic", "Do you like {{movie}}?")
        assert redis_server.client().exists(reg.keys.version("movie-critic", 1)) == 1


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, Path]]:
    socket_path = tmp_path / "redis.sock"
    server = RedisServer(extra_args=("--unixsocket", str(socket_path), "--unixsocketperm", "700"))
    try:
        yield server.start(), socket_path
    finally:
        server.cleanup()


@pytest.mark.redis
def test_unix_socket_url(request: pytest.FixtureRequest, namespace: str) -> None:
    request.getfixturevalue("redis_server")  # skips (or fails under PROMPTREG_REQUIRE_REDIS) without redis
    _server, socket_path = request.getfixturevalue("unix_redis")
    with PromptRegistryFactory.from_url(f"unix://{socket_path}", namespace=namespace) as reg:
        assert isinstance(reg, RedisPromptRegistry)
        reg.create_prompt("via-socket")
        assert reg.list_prompts() == ["via-socket"]


def test_rediss_url_gives_a_tls_redis_registry() -> None:
    reg = PromptRegistryFactory.from_url("rediss://127.0.0.1:6390/0", namespace="tls")
    assert isinstance(reg, RedisPromptRegistry)
    assert reg.redis.connection_pool.connection_class.__name__ == "SSLConnection"
    reg.close()


def test_a_password_never_shows_in_a_connection_error() -> None:
    port = free_port()  # nothing listens there
    reg = PromptRegistryFactory.from_url(f"redis://user:{SECRET}@127.0.0.1:{port}/0", socket_connect_timeout=1)
    with pytest.raises(RegistryUnavailableError) as caught:
        reg.list_prompts()
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    reg.close()


# -- the environment ----------------------------------------------------------------------------------


def test_default_is_a_json_file_under_the_cwd(in_tmp: Path) -> None:
    assert DEFAULT_URL == "file://./.promptreg/registry.json"
    reg = PromptRegistryFactory.create_from_config()
    assert isinstance(reg, JsonFilePromptRegistry)
    assert reg.path == in_tmp / ".promptreg" / "registry.json"
    # The seed article's first lines work as written.
    reg.create_prompt("movie-critic")
    reg.add_version("movie-critic", "As a movie critic, do you like {{movie}}?", author="alice")
    assert (in_tmp / ".promptreg" / "registry.json").exists()
    again = PromptRegistryFactory.create_from_config()
    assert again.get_version("movie-critic").render(movie="Alien") == "As a movie critic, do you like Alien?"


def test_promptreg_url_picks_the_backend(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (in_tmp / "elsewhere").mkdir()
    monkeypatch.setenv("PROMPTREG_URL", "file://./elsewhere/reg.json")
    monkeypatch.setenv("PROMPTREG_NAMESPACE", "ignored-for-files")
    reg = PromptRegistryFactory.create_from_config()
    assert isinstance(reg, JsonFilePromptRegistry) and reg.path == in_tmp / "elsewhere" / "reg.json"


def test_namespace_from_the_environment_applies_to_redis() -> None:
    env = {"PROMPTREG_URL": "redis://127.0.0.1:6390/0", "PROMPTREG_NAMESPACE": "team-a"}
    reg = PromptRegistryFactory.create_from_config(env)
    assert isinstance(reg, RedisPromptRegistry) and reg.keys.namespace == "team-a"
    explicit = PromptRegistryFactory.create_from_config(env, namespace="team-b")
    assert isinstance(explicit, RedisPromptRegistry) and explicit.keys.namespace == "team-b"
    plain = PromptRegistryFactory.create_from_config({"PROMPTREG_URL": "redis://127.0.0.1:6390/0"})
    assert isinstance(plain, RedisPromptRegistry) and plain.keys.namespace == "promptreg"
    for r in (reg, explicit, plain):
        r.close()


def test_an_empty_promptreg_url_means_the_default(in_tmp: Path) -> None:
    reg = PromptRegistryFactory.create_from_config({"PROMPTREG_URL": ""})
    assert isinstance(reg, JsonFilePromptRegistry) and reg.path == in_tmp / ".promptreg" / "registry.json"


# -- redact_url ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        (f"redis://user:{SECRET}@host:6379/0", "redis://user:***@host:6379/0"),
        (f"redis://:{SECRET}@host", "redis://:***@host"),
        (f"redis://{SECRET}@host", "redis://***@host"),
        (f"rediss://u:pa/ss@{SECRET}@host/0", "rediss://u:***@host/0"),
        (f"redis://host/0?password={SECRET}&db=1", "redis://host/0?password=***&db=1"),
        (f"unix://:{SECRET}@/tmp/redis.sock?db=2", "unix://:***@/tmp/redis.sock?db=2"),
        (
            f"redis+sentinel://u:{SECRET}@h1:26379,h2:26379/svc/0?sentinel_password={SECRET}&read_from=replica",
            "redis+sentinel://u:***@h1:26379,h2:26379/svc/0?sentinel_password=***&read_from=replica",
        ),
        (f"rediss+sentinel://:{SECRET}@h1:26379/svc", "rediss+sentinel://:***@h1:26379/svc"),
        (f"redis+cluster://u:{SECRET}@h1:7000,h2:7001/", "redis+cluster://u:***@h1:7000,h2:7001/"),
        (f"rediss+cluster://{SECRET}@h1:7000/?wait_replicas=1", "rediss+cluster://***@h1:7000/?wait_replicas=1"),
        ("file://./.promptreg/registry.json", "file://./.promptreg/registry.json"),
        ("not a url at all", "not a url at all"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert SECRET not in redact_url(url)


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("redis://user:s3cret@host:6379/0", ["s3cret"]),
        ("redis://s3cret@host:6379/0", ["s3cret"]),  # Redis reads lone user info as the password
        ("redis://u:p%40ss@host/0", ["p%40ss", "p@ss"]),  # raw and decoded
        ("postgresql://postgres@127.0.0.1:5432/postgres", []),  # a user name, not a secret
        ("postgresql://app:s3cret@db/prompts", ["s3cret"]),
        ("redis://host:6379/0", []),
        ("not a url", []),
    ],
)
def test_url_secrets_are_what_messages_must_not_show(url: str, secrets: list[str]) -> None:
    from promptreg.registry.urls import url_secrets

    assert url_secrets(url) == secrets
