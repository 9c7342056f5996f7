"""The full state read at scale: streamed version fetch, and resync events only for listeners.

On a real redis-server: :func:`~promptreg.client.redis.versions.fetch_versions` streams its chunks on one
connection and must return exactly what the plain pipelines return, leave the pool usable after an
error reply, and survive a dropped connection; a resync computes the difference between the old and
new state only when an ``on_change`` callback is registered, and a callback registered after the
client was built still gets the events of later resyncs.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
import redis

import promptreg.client.cache
import promptreg.client.redis.versions
from promptreg.client import ChangeEvent, PromptClient
from promptreg.client.cached_version import CachedVersion
from promptreg.client.feeds import collector_paused
from promptreg.client.redis.state import CHUNK
from promptreg.client.redis.versions import fetch_versions
from promptreg.registry import PromptVersion, RedisPromptRegistry, RegistryCorruptError
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.packed import pack_fields
from tests.helpers import LABEL, NAME, PUSH_BOUND, assert_converged, seed
from tests.redis_server import RedisServer, wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    try:
        yield reg
    finally:
        reg.drop_namespace()
        reg.close()


def _write_versions(conn: redis.Redis, keys: Keyspace, count: int) -> list[tuple[str, int]]:
    """``count`` version hashes written directly (as the registry lays them out), some with metadata;
    two in three also with their packed record (the others as an earlier release wrote them)."""
    pipe = conn.pipeline(transaction=False)
    pairs = []
    for i in range(count):
        name = f"p{i % 97}"
        number = i // 97 + 1
        at = f"2024-01-0{1 + i % 3}T00:00:00+00:00"
        fields: dict[str, object] = {"prompt_text": f"{{{{who}}}} {i} {{x}}", "created_at": at}
        if i % 5 == 0:
            fields |= {"author": "ann", "message": f"m{i}", "metadata": b"\x81\xa1k\x01"}  # msgpack {"k": 1}
        pipe.hset(keys.version(name, number), mapping=fields)  # type: ignore[arg-type]
        if i % 3:
            metadata = {"k": 1} if i % 5 == 0 else {}
            author, message = ("ann", f"m{i}") if i % 5 == 0 else (None, None)
            record = pack_fields(str(fields["prompt_text"]), at, author, message, metadata, None, {})
            pipe.set(keys.packed(name, number), record)
        pairs.append((name, number))
    pipe.execute()
    return pairs


def test_streamed_fetch_equals_the_pipelined_one_across_chunks(
    registry: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, keys = registry.redis, registry.keys
    pairs = _write_versions(conn, keys, 2 * CHUNK + 123)
    missing = [("p1", 999), ("nobody", 1)]
    streamed = fetch_versions(conn, keys, [*pairs, *missing, pairs[0]])  # a duplicate is read once
    assert set(streamed) == {*pairs, *missing}
    assert streamed[missing[0]] is None and streamed[missing[1]] is None
    monkeypatch.setattr(
        promptreg.client.redis.versions, "streams", lambda _client: False
    )  # the path a cluster client takes
    assert streamed == fetch_versions(conn, keys, [*pairs, *missing])
    first = streamed[pairs[0]]
    assert isinstance(first, CachedVersion)
    assert (first.author, first.message, first.metadata) == ("ann", "m0", {"k": 1})
    assert first.variables == {"who"}
    assert first.render(who="A") == "A 0 {x}"
    assert first.created_at.utcoffset() is not None
    # Versions written at the same instant share one datetime (immutable): parsed once.
    assert streamed[pairs[0]].created_at is streamed[pairs[3]].created_at  # type: ignore[union-attr]
    assert first.to_model() == first and isinstance(first.to_model(), PromptVersion)


def test_an_error_reply_mid_stream_raises_and_the_pool_stays_usable(registry: RedisPromptRegistry) -> None:
    conn, keys = registry.redis, registry.keys
    pairs = _write_versions(conn, keys, CHUNK + 10)
    conn.set(keys.version("wrong", 1), "not a hash")  # HMGET on a string: WRONGTYPE
    with pytest.raises(redis.ResponseError):
        fetch_versions(conn, keys, [*pairs[:CHUNK], ("wrong", 1), *pairs[CHUNK:]])
    # The connection that saw the error was dropped, not handed out with replies still unread.
    assert conn.ping()
    assert len(fetch_versions(conn, keys, pairs)) == len(pairs)
    assert conn.get(keys.version("wrong", 1)) == b"not a hash"


def test_a_hash_that_is_not_a_version_is_reported_as_corrupt(registry: RedisPromptRegistry) -> None:
    conn, keys = registry.redis, registry.keys
    conn.hset(keys.version("bad", 1), mapping={"prompt_text": "x", "created_at": "yesterday"})
    with pytest.raises(RegistryCorruptError, match="version 1 of prompt 'bad'"):
        fetch_versions(conn, keys, [("bad", 1)])
    assert conn.ping()


def test_a_connection_dropped_mid_stream_raises_and_the_next_fetch_works(
    private_redis_server: RedisServer, namespace: str
) -> None:
    conn = redis.Redis.from_url(private_redis_server.url)
    keys = Keyspace(namespace)
    pairs = _write_versions(conn, keys, 3 * CHUNK)
    admin = redis.Redis.from_url(private_redis_server.url)
    calls = 0
    real_build = promptreg.client.redis.versions._Fields  # type: ignore[attr-defined]

    def kill_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == CHUNK // 2:  # mid-stream: the other chunks are in flight
            admin.client_kill_filter(_type="normal", skipme=True)
        return real_build(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(promptreg.client.redis.versions, "_Fields", kill_once)
        with pytest.raises(redis.ConnectionError):
            fetch_versions(conn, keys, pairs)
    assert len(fetch_versions(conn, keys, pairs)) == len(pairs)
    conn.close()
    admin.close()


# -- resync events -------------------------------------------------------------------------------------------


def _unnotified_move(registry: RedisPromptRegistry, number: int) -> None:
    """A label write whose message was lost: the state changes, nothing is published."""
    keys = registry.keys
    pipe = registry.redis.pipeline(transaction=True)
    pipe.set(keys.label(NAME, LABEL), number).hset(keys.index_label(LABEL), NAME, number).incr(keys.rev).execute()


def test_no_difference_is_computed_without_a_callback_and_one_registered_later_gets_resync_events(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    diffs: list[int] = []
    real_diff = promptreg.client.cache.diff_pointers

    def counted(*args: object) -> list[ChangeEvent]:
        diffs.append(1)
        return real_diff(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(promptreg.client.feeds, "diff_pointers", counted)
    seed(registry)
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=0.3) as prompts:
        assert prompts.wait_ready(PUSH_BOUND)
        _unnotified_move(registry, 2)  # the safety poll resyncs: nobody listens, no difference computed
        assert wait_until(lambda: prompts.get(NAME).version == 2, PUSH_BOUND)
        assert diffs == []
        events: list[ChangeEvent] = []
        prompts.on_change(events.append)  # registered after the client was built
        _unnotified_move(registry, 3)
        rev = int(registry.redis.get(registry.keys.rev) or 0)
        assert wait_until(lambda: ChangeEvent(NAME, LABEL, 3, 2, rev) in events, PUSH_BOUND), events
        assert diffs
        registry.set_label(NAME, LABEL, 1)  # pushed moves still reach it as before
        assert wait_until(lambda: any(e.version == 1 and e.previous_version == 3 for e in events), PUSH_BOUND)
        assert_converged(prompts, registry)


# -- the collector pause -------------------------------------------------------------------------------------


def test_the_collector_is_paused_only_during_the_build_and_an_application_choice_is_kept() -> None:
    assert gc.isenabled()
    try:
        with pytest.raises(RuntimeError), collector_paused():
            assert not gc.isenabled()
            raise RuntimeError("a read failed")
        assert gc.isenabled()  # back on, even after an error
        gc.disable()  # the application's choice: left alone
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()
