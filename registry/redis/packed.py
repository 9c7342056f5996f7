"""The packed record of a version: the whole immutable version in one msgpack value, for bulk reads.

Beside its hash ``{ns}:p:<name>:v:<n>`` (which the registry's own reads, the compatibility check
and older clients use), every version written by this release has a string key
``{ns}:p:<name>:vp:<n>`` (:meth:`~promptreg.registry.redis.keys.Keyspace.packed`), written by
``add_version.lua`` in the same atomic write from the same values. A client reads its start-up's
versions with ``MGET`` of a thousand such keys per command and decodes each record with one C call
(``msgpack.unpackb``), where a hash needs one ``HMGET`` per version and a decode per field: on a
100k-prompt registry, a fifth of the server's CPU and of the client's reading time.

The record is a msgpack array::

    [PACKED_FORMAT, prompt_text, created_at, author, message, metadata, messages, config]

``created_at`` is the instant of the hash's ``created_at`` as a msgpack timestamp (decoded to an
aware UTC ``datetime`` in C, where parsing the ISO string costs a Python call); ``author`` and ``message`` are
``nil`` when absent; ``metadata`` and ``config`` are maps (``nil``: empty); ``messages`` is a chat
version's list of messages (``nil``: a text version). The version number is the key's. A reader
that finds no record (a version written by an earlier release, before ``promptreg migrate`` packed
it) or a format it does not know reads the hash instead: the hash stays the version's truth.

The format string of a template is *not* stored: a client compiles every template itself, so a
record written by someone with write access to Redis can hold any text, but never a ``str.format``
field (``{x.__class__}``) that renders more than a variable.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgpack

from promptreg.registry.redis.chat import version_chunks
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.records import version_from_hash

PACKED_FORMAT = 1
"""The first element of every packed record this release writes and reads."""


def pack_fields(
    prompt_text: str,
    created_at: datetime | str,
    author: str | None,
    message: str | None,
    metadata: dict[str, Any],
    messages: tuple[dict[str, str], ...] | None,
    config: dict[str, Any],
) -> bytes:
    """The packed record of a version with these values (``created_at`` aware, or as the hash stores it)."""
    at = datetime.fromisoformat(created_at) if isinstance(created_at, str) else created_at
    record: bytes = msgpack.packb(
        [
            PACKED_FORMAT,
            prompt_text,
            at if at.tzinfo is not None else at.replace(tzinfo=UTC),
            author,
            message,
            metadata or None,
            None if messages is None else [dict(m) for m in messages],
            config or None,
        ],
        datetime=True,
    )
    return record


def fill_packed(client: Any, keys: Keyspace) -> int:
    """Write the packed record of every version that has none (written by an earlier release);
    returns how many it wrote. Idempotent, safe beside writers and readers.

    Versions are immutable, so the record is built from the hash once and written with ``SET NX``:
    a concurrent run, or the write script of a new version, writes the same bytes or nothing.
    Reads and writes in bounded pipelines (:func:`~promptreg.registry.redis.chat.version_chunks`).
    """
    filled = 0
    for name, numbers in version_chunks(client, keys):
        if client.exists(*(keys.packed(name, n) for n in numbers)) == len(numbers):
            continue
        pipe = client.pipeline(transaction=False)
        for number in numbers:
            pipe.exists(keys.packed(name, number))
            pipe.hgetall(keys.version(name, number))
        replies = pipe.execute()
        pipe = client.pipeline(transaction=False)
        count = 0
        for number, exists, fields in zip(numbers, replies[0::2], replies[1::2], strict=True):
            if exists or not fields:
                continue
            version = version_from_hash(name, number, fields)
            record = pack_fields(
                version.prompt_text, fields[b"created_at"].decode("ascii"), version.author, version.message,
                version.metadata, version.messages, version.config,
            )  # fmt: skip
            pipe.set(keys.packed(name, number), record, nx=True)
            count += 1
        if count:
            filled += sum(1 for written in pipe.execute() if written)
    return filled
