"""Packed version records on a real redis-server: written with every version, identical to the hash,
migrated for registries written before them, read by clients of either layout.

An earlier release's registry is made by removing the records (what that release never wrote);
its clients read only the hashes, which this release still writes in full.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest

from promptreg import CachedVersion, PromptClient, RedisPromptRegistry, RegistryCorruptError
from promptreg.client.redis.versions import fetch_versions
from promptreg.registry.redis.packed import PACKED_FORMAT, pack_fields
from promptreg.registry.redis.records import version_from_hash
from tests.redis_server import RedisServer

pytestmark = pytest.mark.redis

PAIRS = [("plain", 1), ("plain", 2), ("braces", 1), ("chat", 1), ("chat", 2)]


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    try:
        yield reg
    finally:
        reg.drop_namespace()
        reg.close()


def _write(reg: RedisPromptRegistry) -> None:
    reg.create_prompt("plain")
    reg.add_version("plain", "Review {{movie}}.")
    reg.add_version("plain", "Review {{movie}} as {{level}}.", author="ann", message="tone",
                    metadata={"ticket": "T-1", "n": [1, 2]})  # fmt: skip
    reg.create_prompt("braces")
    reg.add_version("braces", 'Reply as JSON {"a": 1} about {{ topic }}')
    reg.create_prompt("chat")
    messages = [{"role": "system", "content": "Be {{tone}}."}, {"placeholder": "history"}]
    reg.add_version("chat", messages=messages, config={"model": "m", "temperature": 0.2})
    reg.add_version("chat", messages=[{"role": "user", "content": "{{q}}"}])
    for name, label, number in [("plain", "production", 1), ("plain", "staging", 2), ("braces", "production", 1),
                                ("chat", "production", 1), ("chat", "staging", 2)]:  # fmt: skip
        reg.set_label(name, label, number)


def _records(reg: RedisPromptRegistry) -> dict[tuple[str, int], bytes]:
    return {pair: reg.redis.get(reg.keys.packed(*pair)) for pair in PAIRS}


def _from_hash(reg: RedisPromptRegistry, name: str, number: int) -> bytes:
    """The record packed from the version's hash alone (what ``promptreg migrate`` writes)."""
    fields = reg.redis.hgetall(reg.keys.version(name, number))
    v = version_from_hash(name, number, fields)
    return pack_fields(v.prompt_text, fields[b"created_at"].decode(), v.author, v.message, v.metadata, v.messages,
                       v.config)  # fmt: skip


def test_every_version_written_has_a_record_identical_to_its_hash(registry: RedisPromptRegistry) -> None:
    _write(registry)
    records = _records(registry)
    for (name, number), record in records.items():
        assert record is not None and msgpack.unpackb(record)[0] == PACKED_FORMAT
        assert record == _from_hash(registry, name, number)  # byte for byte
    read = fetch_versions(registry.redis, registry.keys, PAIRS)
    for name, number in PAIRS:
        cached = read[name, number]
        assert isinstance(cached, CachedVersion)
        assert cached == registry.get_version(name, version=number)


def test_a_registry_without_records_is_read_from_hashes_then_migrate_packs_it(
    registry: RedisPromptRegistry, redis_server: RedisServer, namespace: str
) -> None:
    _write(registry)
    written = _records(registry)
    registry.redis.unlink(*(registry.keys.packed(*pair) for pair in PAIRS))  # as an earlier release left it
    expected = {pair: registry.get_version(pair[0], version=pair[1]) for pair in PAIRS}
    assert fetch_versions(registry.redis, registry.keys, PAIRS) == expected
    with PromptClient(redis_server.url, namespace=namespace, fleet_report=False) as client:
        assert client.wait_ready(10)
        assert client.get("plain", "staging") == expected["plain", 2]
        assert client.render_chat("chat", tone="kind", history=[]) == [{"role": "system", "content": "Be kind."}]
    result = registry.migrate()
    assert "packed 5 version(s)" in result.message and result.changed
    assert _records(registry) == written  # what the write script wrote, byte for byte
    assert "packed" not in registry.migrate().message  # idempotent
    half = PAIRS[::2]  # a registry half migrated (an upgrade interrupted) reads the same
    registry.redis.unlink(*(registry.keys.packed(*pair) for pair in half))
    assert fetch_versions(registry.redis, registry.keys, PAIRS) == expected


def test_a_record_of_another_format_is_ignored_and_a_garbage_one_refused(registry: RedisPromptRegistry) -> None:
    _write(registry)
    key = registry.keys.packed("plain", 2)
    registry.redis.set(key, msgpack.packb([PACKED_FORMAT + 1, "another release's layout"]))
    found = fetch_versions(registry.redis, registry.keys, [("plain", 2)])["plain", 2]
    assert found == registry.get_version("plain", version=2)  # read from the hash, the truth
    registry.redis.set(key, b"\xc1 not msgpack")
    with pytest.raises(RegistryCorruptError, match="version 2 of prompt 'plain'"):
        fetch_versions(registry.redis, registry.keys, [("plain", 2)])
    registry.redis.set(key, msgpack.packb([PACKED_FORMAT, "text", "2026-01-01T00:00:00+00:00", None, None, ["x"],
                                           None, None]))  # fmt: skip
    with pytest.raises(RegistryCorruptError, match="version 2 of prompt 'plain'"):
        fetch_versions(registry.redis, registry.keys, [("plain", 2)])
    assert registry.redis.get(key) is not None  # a reader changes nothing
    assert registry.get_version("plain", version=2).prompt_text == "Review {{movie}} as {{level}}."
