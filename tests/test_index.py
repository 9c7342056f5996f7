"""The index ({ns}:ix:*): kept by every write script, rebuilt by migrate, read in chunks by the client.

Runs on fakeredis (fast) and on a real redis-server (``redis`` marker). A "0.1.0 registry" is made by
writing through the registry and then deleting every ``{ns}:ix:*`` key: what is left is exactly the
0.1.0 layout (the 0.1.0 scripts wrote the same keys minus the index).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from click.testing import CliRunner

from promptreg.client import ClientState, PromptClient
from promptreg.client.redis import index_read
from promptreg.client.redis.feed import UNMIGRATED
from promptreg.client.redis.index_read import read_client_state, read_indexed
from promptreg.client.redis.state import read_registry
from promptreg.client.subset import PromptSubset
from promptreg.registry import (
    InvalidInputError,
    JsonFilePromptRegistry,
    LabelConflictError,
    LabelNotFoundError,
    PromptNotFoundError,
    RedisPromptRegistry,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.cli.main import cli
from promptreg.registry.redis.keys import Keyspace
from tests.redis_server import RedisServer, wait_until


@pytest.fixture(params=["fakeredis", pytest.param("redis-server", marks=pytest.mark.redis)])
def conn(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    if request.param == "fakeredis":
        yield fakeredis.FakeRedis()
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.Redis.from_url(server.url)
        yield client
        client.close()


@pytest.fixture
def reg(conn: redis.Redis, namespace: str) -> RedisPromptRegistry:
    return RedisPromptRegistry(conn, namespace=namespace)


def _text(raw: object) -> str:
    assert isinstance(raw, bytes), raw
    return raw.decode()


def index_of(conn: redis.Redis, keys: Keyspace) -> dict[str, dict[str, str]]:
    """The index as stored: ``{"latest": {...}, label: {...}}`` and the label set, as text."""
    out = {"latest": _hash(conn, keys.index_latest)}
    for raw in conn.smembers(keys.index_labels):
        label = _text(raw)
        out[label] = _hash(conn, keys.index_label(label))
    return out


def truth_of(conn: redis.Redis, keys: Keyspace) -> dict[str, dict[str, str]]:
    """What the index must be, from a scan of every prompt's own keys."""
    out: dict[str, dict[str, str]] = {"latest": {}}
    for raw in conn.smembers(keys.prompts):
        name = _text(raw)
        latest = int(conn.hget(keys.prompt(name), "latest") or 0)
        if latest:
            out["latest"][name] = str(latest)
        for raw_label in conn.smembers(keys.labels(name)):
            label = _text(raw_label)
            out.setdefault(label, {})[name] = _text(conn.get(keys.label(name, label)))
    return out


def _hash(conn: redis.Redis, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in conn.hgetall(key).items()}  # type: ignore[union-attr]


def dump(conn: redis.Redis, keys: Keyspace) -> dict[bytes, Any]:
    """Every key of the namespace with its value (DUMP), to prove a refused write changed nothing."""
    return {key: conn.dump(key) for key in conn.scan_iter(match=f"{keys.prefix}:*")}


def to_0_1_0(conn: redis.Redis, keys: Keyspace) -> None:
    for key in list(conn.scan_iter(match=f"{keys.prefix}:ix:*")):
        conn.delete(key)


def random_registry(reg: RedisPromptRegistry, rng: random.Random, prompts: int) -> None:
    labels = ["production", "staging", "canary"]
    for i in range(prompts):
        name = f"{rng.choice(['a', 'b', 'team/x'])}{i}"
        reg.create_prompt(name)
        for _ in range(rng.randint(0, 3)):
            reg.add_version(name, f"text {{{{v}}}} {rng.random()}")
        versions = len(reg.get_prompt(name).versions)  # type: ignore[union-attr]
        for label in labels:
            if versions and rng.random() < 0.6:
                reg.set_label(name, label, rng.randint(1, versions))
                if rng.random() < 0.3:
                    reg.set_label(name, label, rng.randint(1, versions))
                if rng.random() < 0.2:
                    with contextlib.suppress(RollbackUnavailableError):  # re-pointed at the same version
                        reg.rollback(name, label)
                if rng.random() < 0.2:
                    reg.delete_label(name, label)


# -- the write scripts keep the index ----------------------------------------------------------


def test_every_write_keeps_the_index_and_refusals_change_nothing(conn: redis.Redis, reg: RedisPromptRegistry) -> None:
    keys = reg.keys
    reg.create_prompt("p")
    assert conn.get(keys.index_format) == b"1"  # the first write of a new registry marks it indexed
    steps: list[Callable[[], object]] = [
        lambda: reg.add_version("p", "one"),
        lambda: reg.add_version("p", "two"),
        lambda: reg.set_label("p", "production", 1),
        lambda: reg.set_label("p", "staging", 2),
        lambda: reg.set_label("p", "production", 2, expected_version=1),
        lambda: reg.rollback("p", "production"),
        lambda: reg.delete_label("p", "staging"),
        lambda: reg.rollback("p", "staging"),  # a deleted label comes back
        lambda: reg.delete_label("p", "staging", expected_version=2),
        lambda: reg.create_prompt("q"),
    ]
    for step in steps:
        step()
        assert index_of(conn, keys) == truth_of(conn, keys)
    assert conn.smembers(keys.index_labels) == {b"production"}  # staging emptied: gone from the set
    refusals: list[tuple[Callable[[], object], type[Exception] | tuple[type[Exception], ...]]] = [
        (lambda: reg.set_label("p", "production", 2, expected_version=2), LabelConflictError),
        (lambda: reg.set_label("p", "canary", 1, expected_version=1), LabelConflictError),
        (lambda: reg.set_label("p", "production", 9), VersionNotFoundError),
        (lambda: reg.set_label("nope", "production", 1), PromptNotFoundError),
        (lambda: reg.delete_label("p", "production", expected_version=2), LabelConflictError),
        (lambda: reg.delete_label("p", "canary"), LabelNotFoundError),
        (lambda: reg.rollback("q", "production"), (LabelNotFoundError, RollbackUnavailableError)),
        (lambda: reg.add_version("nope", "x"), PromptNotFoundError),
    ]
    for refused, error in refusals:
        before = dump(conn, keys)
        with pytest.raises(error):
            refused()
        assert dump(conn, keys) == before


@pytest.mark.parametrize("seed", range(4))
def test_the_index_read_equals_the_full_read_on_random_registries(
    conn: redis.Redis, reg: RedisPromptRegistry, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    random_registry(reg, rng, 40)
    keys = reg.keys
    assert index_of(conn, keys) == truth_of(conn, keys)
    old = read_registry(conn, keys)
    monkeypatch.setattr(index_read, "CHUNK", 7)  # many scan steps and HMGET chunks per key
    new = read_indexed(conn, keys)
    assert new is not None
    assert (new.rev, new.pointers, new.head) == (old.rev, old.pointers, old.head)
    subset = PromptSubset(["team/*", "a1", "a2", "b3", "missing"])
    part = read_indexed(conn, keys, subset=subset)
    assert part is not None
    assert part.pointers == {name: labels for name, labels in old.pointers.items() if name in subset}
    monkeypatch.setattr(index_read, "streams", lambda _client: False)  # pipelines, as a cluster client reads
    piped = read_indexed(conn, keys)
    assert piped is not None and piped.pointers == old.pointers


def _writes_during_the_read(
    reg: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch, writes: Callable[[], None], times: int = 1
) -> list[int]:
    """Make ``writes`` land after the index chunks are read, on the first ``times`` reads; returns the
    number of reads made."""
    real = index_read._read_pointers
    reads: list[int] = []

    def read_then_write(*args: Any) -> dict[str, dict[str, int]]:
        pointers = real(*args)
        reads.append(1)
        if len(reads) <= times:
            writes()
        return pointers

    monkeypatch.setattr(index_read, "_read_pointers", read_then_write)
    return reads


def test_writes_during_the_read_are_replayed_from_the_log_to_one_consistent_state(
    conn: redis.Redis, reg: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mixed read must never be served: a label seen at version 5, then 4 while the backlog applies.
    random_registry(reg, random.Random(5), 12)
    reg.create_prompt("moving")
    for n in range(1, 6):
        reg.add_version("moving", f"v{n}")
    reg.set_label("moving", "production", 1)

    def writes() -> None:
        for n in (2, 3, 4, 5):
            reg.set_label("moving", "production", n)
        reg.add_version("moving", "v6")
        reg.delete_label("moving", "production")
        reg.create_prompt("born-during-the-read")
        reg.add_version("born-during-the-read", "hello")
        reg.set_label("born-during-the-read", "staging", 1)

    reads = _writes_during_the_read(reg, monkeypatch, writes)
    state = read_indexed(conn, reg.keys)
    assert state is not None and len(reads) == 1  # replayed, not read again
    truth = read_registry(conn, reg.keys)
    assert (state.rev, state.pointers, state.head) == (truth.rev, truth.pointers, truth.head)
    assert state.pointers["moving"] == {"latest": 6}
    assert state.pointers["born-during-the-read"] == {"latest": 1, "staging": 1}
    subset = PromptSubset(["moving"])
    part = read_indexed(conn, reg.keys, subset=subset)  # no writes this time: a plain read
    assert part is not None and part.pointers == {"moving": {"latest": 6}}


def test_a_subset_read_replays_only_its_own_prompts(
    conn: redis.Redis, reg: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("mine", "other"):
        reg.create_prompt(name)
        reg.add_version(name, "v1")
        reg.add_version(name, "v2")

    def writes() -> None:
        reg.set_label("mine", "production", 2)
        reg.set_label("other", "production", 2)
        reg.create_prompt("other-new")

    _writes_during_the_read(reg, monkeypatch, writes)
    state = read_indexed(conn, reg.keys, subset=PromptSubset(["mine"]))
    assert state is not None and state.rev == int(conn.get(reg.keys.rev) or 0)
    assert state.pointers == {"mine": {"latest": 2, "production": 2}}


def test_a_trimmed_log_makes_the_read_start_again_instead_of_replaying(
    conn: redis.Redis, reg: RedisPromptRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "v1")
    reg.add_version("p", "v2")

    def writes_then_trim() -> None:
        reg.set_label("p", "production", 2)
        conn.xtrim(reg.keys.log, maxlen=0)  # the entries the replay needs are gone

    reads = _writes_during_the_read(reg, monkeypatch, writes_then_trim)
    state = read_indexed(conn, reg.keys)
    assert state is not None and len(reads) == 2  # read again, and the second read was quiet
    assert state.pointers == {"p": {"latest": 2, "production": 2}}
    assert state.rev == int(conn.get(reg.keys.rev) or 0)


def test_catch_up_refuses_a_log_without_one_entry_per_write(conn: redis.Redis, reg: RedisPromptRegistry) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "v1")
    rev = int(conn.get(reg.keys.rev) or 0)
    pointers = {"p": {"latest": 1}}
    assert index_read.catch_up(conn, reg.keys, rev, pointers) is None  # nothing to replay
    reg.set_label("p", "production", 1)
    conn.incr(reg.keys.rev)  # a revision without its audit entry
    assert index_read.catch_up(conn, reg.keys, rev, pointers) is None
    assert pointers == {"p": {"latest": 1}}  # untouched when refused


# -- migrate -------------------------------------------------------------------------------------


def test_migrate_builds_the_index_of_a_0_1_0_registry_and_is_idempotent(
    conn: redis.Redis, reg: RedisPromptRegistry
) -> None:
    random_registry(reg, random.Random(7), 30)
    keys = reg.keys
    expected = truth_of(conn, keys)
    to_0_1_0(conn, keys)
    assert read_indexed(conn, keys) is None
    state, indexed = read_client_state(conn, keys, {}, None, None)
    assert not indexed and state.pointers == read_registry(conn, keys).pointers
    first = reg.migrate()
    assert first.changed and first.prompts == 30
    assert index_of(conn, keys) == expected
    before = dump(conn, keys)
    again = reg.migrate()
    assert not again.changed and "nothing to do" in again.message
    assert dump(conn, keys) == before
    assert reg.migrate(rebuild=True).changed
    assert index_of(conn, keys) == expected
    indexed_state = read_indexed(conn, keys)
    assert indexed_state is not None and indexed_state.pointers == read_registry(conn, keys).pointers


def test_migrate_repairs_entries_a_0_1_0_writer_left_stale(conn: redis.Redis, reg: RedisPromptRegistry) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "one")
    reg.set_label("p", "production", 1)
    conn.delete(reg.keys.label("p", "production"))  # what a 0.1.0 delete_label leaves behind
    conn.srem(reg.keys.labels("p"), "production")
    conn.hset(reg.keys.index_latest, "ghost", 3)  # an entry for a prompt that is not there at all
    reg.migrate(rebuild=True)
    assert index_of(conn, reg.keys)["latest"] == {"p": "1", "ghost": "3"}  # only listed prompts are rebuilt
    assert "production" not in index_of(conn, reg.keys)


def test_migrate_on_an_empty_registry_and_on_a_file_is_a_no_op(
    conn: redis.Redis, namespace: str, tmp_path: Path
) -> None:
    empty = RedisPromptRegistry(conn, namespace=namespace)
    result = empty.migrate()
    assert not result.changed and "empty" in result.message
    assert list(conn.scan_iter(match=f"{empty.keys.prefix}:*")) == []
    file_result = JsonFilePromptRegistry(tmp_path / "r.json").migrate()
    assert not file_result.changed and "nothing to migrate" in file_result.message


def test_subset_rejects_a_bare_string_and_bad_patterns() -> None:
    with pytest.raises(InvalidInputError):
        PromptSubset("abc")
    with pytest.raises(InvalidInputError):
        PromptSubset(["bad name"])
    with pytest.raises(InvalidInputError):
        PromptSubset(["a:b*"])
    subset = PromptSubset(["team/*", "x"])
    assert "team/a" in subset and "x" in subset and "team" not in subset and "y" not in subset


# -- the client on a real server ------------------------------------------------------------------


@pytest.fixture
def server_reg(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    registry = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    yield registry
    registry.close()


@pytest.mark.redis
def test_a_client_on_an_unmigrated_registry_says_so_and_works_then_migrate(
    redis_server: RedisServer, server_reg: RedisPromptRegistry, namespace: str
) -> None:
    server_reg.create_prompt("p")
    server_reg.add_version("p", "hello {{who}}")
    server_reg.set_label("p", "production", 1)
    to_0_1_0(server_reg.redis, server_reg.keys)
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=0.3) as client:
        assert client.wait_ready(5)
        status = client.status()
        assert status.state is ClientState.LIVE
        assert status.last_error == UNMIGRATED and "promptreg migrate" in UNMIGRATED
        assert client.render("p", who="you") == "hello you"
        result = CliRunner().invoke(cli, ["--url", redis_server.url, "--namespace", namespace, "migrate"])
        assert result.exit_code == 0, result.output
        assert "indexed 1 prompts" in result.output
        server_reg.add_version("p", "v2 {{who}}")
        server_reg.set_label("p", "production", 2)
        assert wait_until(lambda: client.get("p").version == 2, 5)
    again = CliRunner().invoke(cli, ["--url", redis_server.url, "--namespace", namespace, "migrate", "--json"])
    assert again.exit_code == 0 and '"changed": false' in again.output
    with PromptClient(redis_server.url, namespace=namespace) as fresh:  # now from the index
        assert fresh.wait_ready(5)
        assert fresh.get("p").version == 2 and fresh.status().last_error is None


@pytest.mark.redis
def test_a_subset_client_caches_only_its_prompts_and_ignores_other_messages(
    redis_server: RedisServer, server_reg: RedisPromptRegistry, namespace: str
) -> None:
    for name in ("a", "team/x", "team/y", "other", "teamz"):
        server_reg.create_prompt(name)
        server_reg.add_version(name, f"{name} text")
        server_reg.set_label(name, "production", 1)
    with PromptClient(redis_server.url, namespace=namespace, prompts=["a", "team/*", "never"]) as client:
        assert client.wait_ready(5)
        cache = client._cache
        assert set(cache.pointers) == {"a", "team/x", "team/y"}
        assert {name for name, _ in cache.versions} == {"a", "team/x", "team/y"}
        with pytest.raises(PromptNotFoundError, match="not served by this client"):
            client.get("other")
        with pytest.raises(PromptNotFoundError, match="not served by this client"):
            client.get("other", version=1)
        with pytest.raises(PromptNotFoundError, match="not found"):
            client.get("never")  # served, but not in the registry: the ordinary error
        server_reg.add_version("other", "other v2")
        server_reg.set_label("other", "production", 2)
        server_reg.create_prompt("team/new")
        server_reg.add_version("team/new", "new")
        server_reg.set_label("team/new", "production", 1)
        server_reg.add_version("a", "a v2")
        server_reg.set_label("a", "production", 2)
        assert wait_until(lambda: client.get("a").version == 2, 5)
        assert client.get("team/new").prompt_text == "new"
        assert client.status().rev == int(server_reg.redis.get(server_reg.keys.rev))
        assert "other" not in cache.pointers and not any(n == "other" for n, _ in cache.versions)
        assert client.status().resyncs == 1  # messages about others advanced rev without a gap
