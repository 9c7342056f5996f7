"""What the Redis backend stores for chat versions and compatibility checks.

A version hash (``{ns}:p:<name>:v:<n>``, immutable) gains, beside ``prompt_text`` and friends:

================  ==========================================================================
field             what
================  ==========================================================================
``inputs``        the version's variable and placeholder names, sorted, space-separated: what
                  the scripts' compatibility check compares (Lua cannot parse templates)
``type``          ``chat`` for a chat version (absent: text)
``messages``      a chat version's messages (msgpack list of maps)
``placeholders``  a chat version's placeholder names, sorted, space-separated (the check tells a
                  variable from a placeholder by it; a text version has no placeholders)
``config``        the model configuration (msgpack map; absent: empty)
================  ==========================================================================

A prompt hash (``{ns}:p:<name>``) gains ``compatibility`` (absent: ``none``). Versions written
before ``inputs`` (or, for chat versions, ``placeholders``) existed lack it: a checked move involving
one is refused with :class:`~promptreg.RegistryCorruptError` until ``promptreg migrate``
(:func:`fill_inputs`) adds it, so the check never passes on data it cannot read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack

from promptreg.registry.compatibility import encode_inputs
from promptreg.registry.models import PromptVersion, VersionType
from promptreg.registry.redis.keys import Keyspace

SCAN_COUNT = 1000
_TYPES: dict[bytes, VersionType] = {b"text": "text", b"chat": "chat"}


def content_args(
    messages: tuple[dict[str, str], ...] | None, config: dict[str, Any], inputs: frozenset[str],
    placeholders: frozenset[str] = frozenset(),
) -> list[Any]:  # fmt: skip
    """``add_version``'s trailing ARGV: inputs, messages (``''``: text), config (``''``: empty),
    placeholders (stored for a chat version only)."""
    return [
        encode_inputs(inputs),
        "" if messages is None else msgpack.packb([dict(m) for m in messages]),
        msgpack.packb(config) if config else "",
        encode_inputs(placeholders),
    ]


def chat_fields(fields: dict[bytes, bytes]) -> tuple[tuple[dict[str, str], ...] | None, dict[str, Any]]:
    """``(messages, config)`` from a version hash (``HGETALL``); raises what msgpack raises."""
    raw_messages = fields.get(b"messages")
    messages = None if raw_messages is None else tuple(msgpack.unpackb(raw_messages, raw=False))
    raw_config = fields.get(b"config")
    return messages, ({} if raw_config is None else msgpack.unpackb(raw_config, raw=False))


def version_chunks(client: Any, keys: Keyspace) -> Iterator[tuple[str, range]]:
    """``(name, numbers)`` for every prompt's versions, at most :data:`SCAN_COUNT` numbers at a time
    (what ``promptreg migrate``'s version passes walk: bounded reads, one prompt at a time)."""
    for raw in client.sscan_iter(keys.prompts, count=SCAN_COUNT):
        name = raw.decode("utf-8")
        latest = int(client.hget(keys.prompt(name), "latest") or 0)
        for start in range(1, latest + 1, SCAN_COUNT):
            yield name, range(start, min(latest, start + SCAN_COUNT - 1) + 1)


def fill_inputs(client: Any, keys: Keyspace) -> int:
    """Add ``inputs`` (and, to a chat version, ``placeholders``) to every version hash written without
    them; returns how many versions it completed. Idempotent.

    Both are derived from the immutable content, so writing them changes no version; concurrent
    runs write the same values. Reads and writes in bounded pipelines, one prompt at a time.
    """
    filled = 0
    for name, numbers in version_chunks(client, keys):
        pipe = client.pipeline(transaction=False)
        for number in numbers:
            pipe.hgetall(keys.version(name, number))
        todo = pipe.execute()
        pipe = client.pipeline(transaction=False)
        count = 0
        for number, fields in zip(numbers, todo, strict=True):
            chat = fields.get(b"type") == b"chat"
            if fields and (b"inputs" not in fields or (chat and b"placeholders" not in fields)):
                version = _version(number, fields)
                derived = {"inputs": encode_inputs(version.variables | version.placeholders)}
                if chat:
                    derived["placeholders"] = encode_inputs(version.placeholders)
                pipe.hset(keys.version(name, number), mapping=derived)
                count += 1
        if count:
            pipe.execute()
            filled += count
    return filled


def _version(number: int, fields: dict[bytes, bytes]) -> PromptVersion:
    messages, _config = chat_fields(fields)
    return PromptVersion(version=number, prompt_text=fields.get(b"prompt_text", b"").decode("utf-8"), messages=messages)
