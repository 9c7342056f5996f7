"""What the Redis backend stores for chat versions and compatibility checks.

A version hash (``{ns}:p:<name>:v:<n>``, immutable) gains, beside ``prompt_text`` and friends:

=============  ==========================================================================
field          what
=============  ==========================================================================
``inputs``     the version's variable and placeholder names, sorted, space-separated: what
               the scripts' compatibility check compares (Lua cannot parse templates)
``type``       ``chat`` for a chat version (absent: text)
``messages``   a chat version's messages (msgpack list of maps)
``config``     the model configuration (msgpack map; absent: empty)
=============  ==========================================================================

A prompt hash (``{ns}:p:<name>``) gains ``compatibility`` (absent: ``none``). Versions written
before ``inputs`` existed have none: a checked move involving one is refused with
:class:`~registry.RegistryCorruptError` until ``promptreg migrate`` (:func:`fill_inputs`) adds it,
so the check never passes on data it cannot read.
"""

from __future__ import annotations

from typing import Any

import msgpack

from registry.compatibility import encode_inputs
from registry.errors import IncompatibleVersionError, PromptRegistryError, RegistryCorruptError
from registry.keys import Keyspace
from registry.models import PromptVersion

SCAN_COUNT = 1000


def content_args(
    messages: tuple[dict[str, str], ...] | None, config: dict[str, Any], inputs: frozenset[str]
) -> list[Any]:
    """``add_version``'s trailing ARGV: inputs, messages (``''``: text), config (``''``: empty)."""
    return [
        encode_inputs(inputs),
        "" if messages is None else msgpack.packb([dict(m) for m in messages]),
        msgpack.packb(config) if config else "",
    ]


def chat_fields(fields: dict[bytes, bytes]) -> tuple[tuple[dict[str, str], ...] | None, dict[str, Any]]:
    """``(messages, config)`` from a version hash (``HGETALL``); raises what msgpack raises."""
    raw_messages = fields.get(b"messages")
    messages = None if raw_messages is None else tuple(msgpack.unpackb(raw_messages, raw=False))
    raw_config = fields.get(b"config")
    return messages, ({} if raw_config is None else msgpack.unpackb(raw_config, raw=False))


def check_refusal(name: str, label: str, version: int, result: list[Any]) -> PromptRegistryError | None:
    """The error of a script's ``INCOMPATIBLE`` / ``NOINPUTS`` result (``check_move`` in _commit.lua)."""
    code = result[1]
    if code == b"INCOMPATIBLE":
        mode, added, removed = (part.decode("utf-8") for part in result[2:5])
        return IncompatibleVersionError(name, label, version, int(result[5]), mode, added.split(), removed.split())
    if code == b"NOINPUTS":
        return RegistryCorruptError(
            f"prompt {name!r}: version {int(result[2])} was written before promptreg stored variables, so the "
            f"compatibility check of label {label!r} cannot read it: run `promptreg migrate` (or force the move)"
        )
    return None


def fill_inputs(client: Any, keys: Keyspace) -> int:
    """Add ``inputs`` to every version hash written without it; returns how many. Idempotent.

    ``inputs`` is derived from the immutable content, so writing it changes no version; concurrent
    runs write the same value. Reads and writes in bounded pipelines, one prompt at a time.
    """
    filled = 0
    for raw in client.sscan_iter(keys.prompts, count=SCAN_COUNT):
        name = raw.decode("utf-8")
        latest = int(client.hget(keys.prompt(name), "latest") or 0)
        for start in range(1, latest + 1, SCAN_COUNT):
            numbers = range(start, min(latest, start + SCAN_COUNT - 1) + 1)
            pipe = client.pipeline(transaction=False)
            for number in numbers:
                pipe.hgetall(keys.version(name, number))
            todo = pipe.execute()
            pipe = client.pipeline(transaction=False)
            count = 0
            for number, fields in zip(numbers, todo, strict=True):
                if fields and b"inputs" not in fields:
                    version = _version(number, fields)
                    pipe.hset(
                        keys.version(name, number), "inputs", encode_inputs(version.variables | version.placeholders)
                    )
                    count += 1
            if count:
                pipe.execute()
                filled += count
    return filled


def _version(number: int, fields: dict[bytes, bytes]) -> PromptVersion:
    messages, _config = chat_fields(fields)
    return PromptVersion(version=number, prompt_text=fields.get(b"prompt_text", b"").decode("utf-8"), messages=messages)
