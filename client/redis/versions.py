"""Reading immutable versions from Redis in bulk, into :class:`~promptreg.CachedVersion` s.

Each version is read from its packed record (:mod:`promptreg.registry.redis.packed`): ``MGET`` of
:data:`~promptreg.client.redis.state.CHUNK` record keys per command, each record decoded by one C
call. A version without a record (written by an earlier release, not migrated yet) or with a record
format this release does not know is read from its hash instead (``HMGET`` of the fields it is built
from), so a registry is read correctly at every stage of an upgrade. On a single server (or a
Sentinel-managed one) the chunks are *streamed* on one connection: chunk ``k + 1`` is sent before
the replies of chunk ``k`` are built, so the server works while this thread builds, and each
command stays bounded for the server (nothing stalls other clients). A cluster client uses plain
pipelines (every key of a registry is in one slot, so a chunk's ``MGET`` is one command there too).

Versions are built without validation: the registry validated them when they were written. The
templates of a chunk are compiled together (:func:`~promptreg.registry.template.compile_batch`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from sys import intern
from typing import Any

import msgpack
import redis

from promptreg.client.cached_version import EMPTY, CachedVersion, _Fields, cached_chat, cached_text
from promptreg.client.redis.state import CHUNK, held_connection, streams
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.packed import PACKED_FORMAT
from promptreg.registry.template import compile_batch

Found = dict[tuple[str, int], CachedVersion | None]
Pairs = list[tuple[str, int]]

_MAP = frozenset({dict, type(None)})
_TEXT = frozenset({str, type(None)})
_FIELDS = ("prompt_text", "created_at", "author", "message", "metadata", "messages", "config")
_EMPTY_MAP = msgpack.packb({})
_HMGET_HEAD = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(_FIELDS))
_HMGET_TAIL = b"".join(b"$%d\r\n%b\r\n" % (len(field), field.encode()) for field in _FIELDS)


def fetch_versions(client: redis.Redis, keys: Keyspace, pairs: Iterable[tuple[str, int]]) -> Found:
    """Read versions by ``(name, number)``; ``None`` for a version that does not exist (module docstring).

    Raises redis-py errors on I/O failure (the connection is then dropped, never reused mid-reply)
    and :class:`~promptreg.RegistryCorruptError` for a record or hash that is not a version.
    """
    wanted = list(pairs if isinstance(pairs, (set, frozenset)) else dict.fromkeys(pairs))
    found: Found = {}
    build = _Builder()
    unpacked: Pairs = []  # no record: read from the hash
    hashes = keys.version

    def mget(chunk: Pairs) -> list[bytes]:
        return [_command(b"MGET", keys.packed_keys(chunk))]

    def hmgets(chunk: Pairs) -> list[bytes]:
        return [b"".join([_key_head(hashes(name, number)) + _HMGET_TAIL for name, number in chunk])]

    def from_records(chunk: Pairs, replies: list[Any]) -> None:
        build.records(chunk, replies[0], found, unpacked)

    if isinstance(client, redis.Redis) and streams(client):
        _stream(client, wanted, mget, 1, from_records)
        _stream(client, unpacked, hmgets, None, lambda chunk, replies: build.hashes(chunk, replies, found))
        return found
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        records: Any = client.mget(keys.packed_keys(chunk))
        build.records(chunk, records, found, unpacked)
    for start in range(0, len(unpacked), CHUNK):
        chunk = unpacked[start : start + CHUNK]
        pipe: Any = client.pipeline(transaction=False)
        for name, number in chunk:
            pipe.hmget(hashes(name, number), _FIELDS)
        build.hashes(chunk, pipe.execute(), found)
    return found


def _key_head(key: str) -> bytes:
    raw = key.encode("utf-8")
    return b"%b$%d\r\n%b\r\n" % (_HMGET_HEAD, len(raw), raw)


def _command(name: bytes, args: list[str]) -> bytes:
    """One command in RESP, packed by hand: redis-py's packer checks every argument in Python."""
    encoded = "\n".join(args).encode("utf-8").split(b"\n")  # one encode for the whole chunk (keys hold no newline)
    body = b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in encoded])
    return b"*%d\r\n$%d\r\n%b\r\n%b" % (len(args) + 1, len(name), name, body)


def _stream(
    client: redis.Redis,
    wanted: Pairs,
    pack: Callable[[Pairs], list[bytes]],
    replies_per_chunk: int | None,
    build: Callable[[Pairs, list[Any]], None],
) -> None:
    """Send each chunk's commands before building the previous chunk's replies, on one connection.
    ``replies_per_chunk``: how many replies a chunk's commands give (``None``: one per pair)."""
    if not wanted:
        return
    chunks = [wanted[start : start + CHUNK] for start in range(0, len(wanted), CHUNK)]
    with held_connection(client) as conn:
        conn.send_packed_command(pack(chunks[0]))
        read = conn.read_response
        for index, chunk in enumerate(chunks):
            if index + 1 < len(chunks):  # keep the server busy while this chunk is built
                conn.send_packed_command(pack(chunks[index + 1]))
            count = len(chunk) if replies_per_chunk is None else replies_per_chunk
            build(chunk, [read() for _ in range(count)])


class _Builder:
    """Builds cached versions from packed records or from hash fields; parses each distinct
    ``created_at`` once (versions written together, by an import or a migration, share it)."""

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: dict[Any, datetime] = {}

    def _time(self, raw: str | bytes) -> datetime:
        at = self._times.get(raw)
        if at is None:
            parsed = datetime.fromisoformat(raw if isinstance(raw, str) else raw.decode("ascii"))
            at = self._times[raw] = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
        return at

    def records(self, pairs: Pairs, replies: list[bytes | None], found: Found, unpacked: Pairs) -> None:
        """Build each ``(name, number)`` from its packed record into ``found``; a pair without a
        record (or with a format this release does not read) goes to ``unpacked``.

        One loop, the version built inline (a call per version cost as much as building it).
        """
        unpack = msgpack.unpackb
        rows: list[tuple[tuple[str, int], list[Any]]] = []
        try:
            for pair, raw in zip(pairs, replies, strict=True):
                if raw is None:
                    unpacked.append(pair)
                    continue
                row = unpack(raw, raw=False, timestamp=3)  # the timestamp: an aware UTC datetime, in C
                if type(row) is not list or len(row) != 8 or row[0] != PACKED_FORMAT:
                    unpacked.append(pair)  # another release's record: the hash is the truth
                    continue
                rows.append((pair, row))
            texts = [row[1] for _pair, row in rows if row[6] is None]
            formats, kept = compile_batch(texts)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:  # a text that is not a str: TypeError
            bad = next((p for p, row in rows if row[6] is None and type(row[1]) is not str), pair)
            raise RegistryCorruptError(f"version {bad[1]} of prompt {bad[0]!r} is not readable: {exc!r}") from exc
        new, cached, empty, position = _Fields, CachedVersion, EMPTY, 0
        for pair, (_format, _text, at, author, message, metadata, messages, config) in rows:
            if not (type(at) is datetime and type(metadata) in _MAP and type(config) in _MAP
                    and type(author) in _TEXT and type(message) in _TEXT):  # fmt: skip
                raise RegistryCorruptError(f"version {pair[1]} of prompt {pair[0]!r} is not readable: a field of "
                                           "its packed record has the wrong type")  # fmt: skip
            if author is not None:  # a few people write most versions: one string each, not one per version
                author = intern(author)
            if messages is None:
                built = new(pair[1], kept[position], at, author, message, metadata or empty, None, config or empty,
                            formats[position], None, None)  # fmt: skip
                built.__class__ = cached
                found[pair] = built  # type: ignore[assignment]
                position += 1
                continue
            try:
                found[pair] = cached_chat(pair[1], tuple(messages), at, author, message, metadata, config)
            except (AttributeError, ValueError, TypeError, KeyError) as exc:
                raise RegistryCorruptError(f"version {pair[1]} of prompt {pair[0]!r} is not readable: {exc!r}") from exc

    def hashes(self, pairs: Pairs, replies: list[list[bytes | None]], found: Found) -> None:
        """Build each ``(name, number)`` from its hash's ``HMGET`` reply into ``found`` (``None``: no such hash)."""
        unpack = msgpack.unpackb
        empty = _EMPTY_MAP
        for pair, (text, created, author, message, metadata, chat, config) in zip(pairs, replies, strict=True):
            if text is None or created is None:
                if text is None and created is None:
                    found[pair] = None  # no such version
                    continue
                raise RegistryCorruptError(
                    f"version {pair[1]} of prompt {pair[0]!r} is not readable: a field is missing"
                )
            try:
                at = self._time(created)
                meta = None if metadata is None or metadata == empty else unpack(metadata, raw=False)
                settings = None if config is None else unpack(config, raw=False)
                who = None if author is None else author.decode("utf-8")
                why = None if message is None else message.decode("utf-8")
                if chat is None:
                    decoded = text.decode("utf-8")
                    formats, kept = compile_batch([decoded])
                    found[pair] = cached_text(pair[1], kept[0], formats[0], None, at, who, why, meta, settings)
                else:
                    found[pair] = cached_chat(pair[1], tuple(unpack(chat, raw=False)), at, who, why, meta, settings)
            except (AttributeError, ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                raise RegistryCorruptError(f"version {pair[1]} of prompt {pair[0]!r} is not readable: {exc!r}") from exc
