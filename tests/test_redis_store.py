"""The Redis shape of the registry: key types, one message per write, atomic refusals, errors.

Runs on a real redis-server and, where the behaviour is the script's, on fakeredis with Lua too (the
scripts run as Redis Functions on both: FCALL).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import msgpack
import pytest
import redis
from redis.crc import key_slot

from promptreg.registry import (
    IncompatibleVersionError,
    InvalidInputError,
    LabelConflictError,
    LabelNotFoundError,
    PromptNotFoundError,
    RegistryCorruptError,
    RegistryUnavailableError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.wire import decode
from tests.redis_server import free_port, wait_until


@pytest.fixture(params=["real", "fake"])
def conn(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "real":
        server = request.getfixturevalue("redis_server")
        client = server.client()
    else:
        client = fakeredis.FakeRedis()
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def reg(conn: redis.Redis, namespace: str) -> RedisPromptRegistry:
    return RedisPromptRegistry(conn, namespace=namespace)


def _movie_critic(reg: RedisPromptRegistry) -> None:
    reg.create_prompt("movie-critic", description="reviews", author="alice")
    reg.add_version("movie-critic", "As a movie critic, do you like {{movie}}?", author="alice")
    reg.add_version("movie-critic", "As a {{criticlevel}} movie critic, do you like {{movie}}?", author="bob")
    reg.add_version("movie-critic", "You are a {{criticlevel}} movie critic. Review {{movie}}.", author="alice")
    reg.set_label("movie-critic", "staging", 2)
    reg.set_label("movie-critic", "production", 3)


def _dump(conn: redis.Redis, namespace: str) -> dict[bytes, Any]:
    """Every key of the namespace with its type and full value."""
    out: dict[bytes, Any] = {}
    for key in conn.scan_iter(match="{" + namespace + "}*"):
        kind = conn.type(key)
        value: Any
        if kind == b"string":
            value = conn.get(key)
        elif kind == b"hash":
            value = conn.hgetall(key)
        elif kind == b"set":
            value = conn.smembers(key)
        elif kind == b"stream":
            value = conn.xrange(key)
        else:
            value = kind
        out[key] = (kind, value)
    return out


def test_versions_are_hashes_and_labels_are_strings(reg: RedisPromptRegistry, conn: redis.Redis) -> None:
    _movie_critic(reg)
    k = reg.keys
    for n in (1, 2, 3):
        assert conn.type(k.version("movie-critic", n)) == b"hash"
    fields = conn.hgetall(k.version("movie-critic", 2))
    assert fields[b"author"] == b"bob"
    assert b"{{criticlevel}}" in fields[b"prompt_text"]
    assert msgpack.unpackb(fields[b"metadata"]) == {}
    assert len(fields[b"sha256"]) == 64
    assert conn.type(k.label("movie-critic", "production")) == b"string"
    assert conn.get(k.label("movie-critic", "production")) == b"3"
    assert conn.get(k.label("movie-critic", "staging")) == b"2"
    assert conn.smembers(k.labels("movie-critic")) == {b"production", b"staging"}
    assert conn.smembers(k.prompts) == {b"movie-critic"}
    assert conn.type(k.history("movie-critic")) == b"stream"
    assert conn.xlen(k.log) == 6
    assert int(conn.get(k.rev) or 0) == 6


def test_every_key_shares_one_hash_slot(reg: RedisPromptRegistry, conn: redis.Redis, namespace: str) -> None:
    _movie_critic(reg)
    reg.set_label("movie-critic", "production", 2)
    reg.rollback("movie-critic", "production")
    reg.delete_label("movie-critic", "staging")
    slots = {key_slot(key) for key in _dump(conn, namespace)}
    assert len(slots) == 1
    assert key_slot(reg.keys.channel.encode()) in slots


def test_each_write_publishes_exactly_one_message_with_its_revision(
    reg: RedisPromptRegistry, conn: redis.Redis
) -> None:
    pubsub = conn.pubsub()
    pubsub.subscribe(reg.keys.channel)
    assert wait_until(lambda: pubsub.get_message(timeout=0.1) is not None, timeout=5)
    _movie_critic(reg)
    reg.set_label("movie-critic", "production", 2, expected_version=3, author="carol", reason="bad output")
    reg.rollback("movie-critic", "production", author="carol")
    reg.delete_label("movie-critic", "staging")
    messages = []
    deadline_hits = 0
    while deadline_hits < 3:
        message = pubsub.get_message(timeout=0.2)
        if message is None:
            deadline_hits += 1
        elif message["type"] == "message":
            messages.append(decode(message["data"]))
    pubsub.close()
    assert [m.rev for m in messages] == list(range(1, 10))
    assert [m.op for m in messages] == ["create_prompt"] + ["add_version"] * 3 + ["set_label"] * 3 + [
        "rollback",
        "delete_label",
    ]
    assert [m.version for m in messages[1:4]] == [1, 2, 3]
    move = messages[6]
    assert (move.label, move.version, move.previous_version, move.author) == ("production", 2, 3, "carol")
    assert (messages[7].version, messages[7].previous_version) == (3, 2)
    assert (messages[8].label, messages[8].version, messages[8].previous_version) == ("staging", None, 2)


def test_a_label_move_is_one_round_trip_and_a_compatibility_check_at_most_two(
    reg: RedisPromptRegistry, conn: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The move is published after the first command: no read of the label before the script.
    _movie_critic(reg)
    sent: list[str] = []
    real: Callable[..., Any] = conn.execute_command

    def counting(*args: Any, **options: Any) -> Any:
        sent.append(str(args[0]))
        return real(*args, **options)

    monkeypatch.setattr(conn, "execute_command", counting)
    reg.set_label("movie-critic", "production", 1)
    assert sent == ["FCALL"]
    reg.set_compatibility("movie-critic", "backward")
    sent.clear()
    with pytest.raises(IncompatibleVersionError):  # v2 needs {{criticlevel}}: checked against v1, the label's version
        reg.set_label("movie-critic", "production", 2)
    assert sent == ["FCALL", "FCALL"]  # RETRY with the label's version, then the check
    assert reg.get_version("movie-critic", label="production").version == 1


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda r: r.create_prompt("movie-critic"), "PromptExistsError"),
        (lambda r: r.add_version("nope", "text"), "PromptNotFoundError"),
        (lambda r: r.set_label("movie-critic", "production", 9), "VersionNotFoundError"),
        (lambda r: r.set_label("movie-critic", "production", 2, expected_version=2), "LabelConflictError"),
        (lambda r: r.set_label("movie-critic", "canary", 2, expected_version=1), "LabelConflictError"),
        (lambda r: r.set_label("movie-critic", "staging", 1, expected_version=0), "LabelConflictError"),
        (lambda r: r.delete_label("movie-critic", "canary"), "LabelNotFoundError"),
        (lambda r: r.delete_label("movie-critic", "production", expected_version=1), "LabelConflictError"),
        (lambda r: r.rollback("movie-critic", "production"), "RollbackUnavailableError"),
        (lambda r: r.rollback("nope", "production"), "PromptNotFoundError"),
        (lambda r: r.set_label("movie-critic", "latest", 1), "InvalidNameError"),
        (lambda r: r.add_version("movie-critic", "x" * 101), "PromptTooLargeError"),
        (lambda r: r.create_prompt("bad:name"), "InvalidNameError"),
        (lambda r: r.create_prompt("{promptreg}x"), "InvalidNameError"),
    ],
)
def test_refused_write_changes_nothing_and_publishes_nothing(
    conn: redis.Redis, namespace: str, call: Callable[[RedisPromptRegistry], object], error: str
) -> None:
    reg = RedisPromptRegistry(conn, namespace=namespace, max_text_bytes=100)
    _movie_critic(reg)
    before = _dump(conn, namespace)
    pubsub = conn.pubsub()
    pubsub.subscribe(reg.keys.channel)
    assert wait_until(lambda: pubsub.get_message(timeout=0.1) is not None, timeout=5)
    with pytest.raises(Exception) as info:
        call(reg)
    assert type(info.value).__name__ == error
    assert pubsub.get_message(timeout=0.3) is None
    pubsub.close()
    assert _dump(conn, namespace) == before


def test_functions_flushed_are_loaded_again_by_a_user_that_may(reg: RedisPromptRegistry, conn: redis.Redis) -> None:
    reg.create_prompt("p")
    conn.function_flush()  # a restart without persistence, or an operator's FUNCTION FLUSH
    assert reg.add_version("p", "after flush").version == 1  # "Function not found": loaded, run once more
    assert [v.prompt_text for v in reg.get_prompt("p").versions] == ["after flush"]  # type: ignore[union-attr]


def test_namespaces_are_isolated(conn: redis.Redis, namespace: str) -> None:
    a = RedisPromptRegistry(conn, namespace=namespace + "a")
    b = RedisPromptRegistry(conn, namespace=namespace + "b")
    a.create_prompt("p")
    a.add_version("p", "text a")
    assert b.list_prompts() == []
    assert b.get_prompt("p") is None
    b.create_prompt("p")
    assert b.add_version("p", "text b").version == 1


def test_damaged_index_never_overwrites_a_version(reg: RedisPromptRegistry, conn: redis.Redis) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "original")
    conn.hset(reg.keys.prompt("p"), "latest", 0)  # simulate a damaged index
    with pytest.raises(RegistryCorruptError):
        reg.add_version("p", "would overwrite")
    assert conn.hget(reg.keys.version("p", 1), "prompt_text") == b"original"


def test_unreadable_version_hash_is_a_typed_error(reg: RedisPromptRegistry, conn: redis.Redis) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "fine")
    conn.hdel(reg.keys.version("p", 1), "created_at")
    with pytest.raises(RegistryCorruptError, match="version 1"):
        reg.get_version("p", version=1)


def test_reads_resolve_labels_and_latest_without_loading_the_prompt(reg: RedisPromptRegistry) -> None:
    _movie_critic(reg)
    assert reg.get_version("movie-critic", label="staging").version == 2
    assert reg.get_version("movie-critic").version == 3
    assert reg.get_version("movie-critic", label="latest").author == "alice"
    with pytest.raises(VersionNotFoundError):
        reg.get_version("movie-critic", version=4)
    with pytest.raises(PromptNotFoundError):
        reg.get_version("ghost", label="production")
    reg.create_prompt("empty")
    with pytest.raises(KeyError):
        reg.get_version("empty")


def test_decode_responses_client_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="decode_responses"):
        RedisPromptRegistry(fakeredis.FakeRedis(decode_responses=True))


def test_dead_redis_is_registry_unavailable() -> None:
    reg = RedisPromptRegistry.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    with pytest.raises(RegistryUnavailableError):
        reg.list_prompts()
    with pytest.raises(RegistryUnavailableError):
        reg.create_prompt("p")
    with pytest.raises(ConnectionError):  # also the builtin
        reg.get_prompt("p")
    reg.close()


def test_server_killed_mid_session_is_unavailable_then_recovers(private_redis_server: Any) -> None:
    reg = RedisPromptRegistry.from_url(private_redis_server.url, namespace="n", socket_timeout=2)
    reg.create_prompt("p")
    reg.add_version("p", "v1")
    private_redis_server.kill()
    with pytest.raises(RegistryUnavailableError):
        reg.set_label("p", "production", 1)
    private_redis_server.start()
    assert reg.get_version("p").prompt_text == "v1"  # AOF kept the acknowledged write
    with pytest.raises(LabelNotFoundError):  # the refused set_label left no label behind
        reg.rollback("p", "production")
    reg.set_label("p", "production", 1)
    with pytest.raises(RollbackUnavailableError):
        reg.rollback("p", "production")
    with pytest.raises(LabelConflictError):
        reg.set_label("p", "production", 1, expected_version=0)
    reg.close()


def test_registry_made_from_a_url_never_retries_a_write_on_its_own() -> None:
    # A write script retried after a lost reply could apply twice; the caller must decide.
    reg = RedisPromptRegistry.from_url(f"redis://127.0.0.1:{free_port()}/0")
    retry = reg.redis.get_connection_kwargs()["retry"]
    assert retry.get_retries() == 0
    reg.close()
