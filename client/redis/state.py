"""Reading the registry's state from Redis: labels at one revision, and immutable versions.

The label state is read inside ``MULTI``/``EXEC`` so it is one consistent cut at one revision. A
transaction can only read keys it names, and the keys depend on the prompt and label sets, so the
read is repeated with the sets the previous round found until the sets it asked for are the sets it
got (one round when the client already knows the prompts, three from cold). Versions never change,
so they are fetched afterwards, outside the transaction, and only those not cached yet.

The same transaction reads the newest entry of the ``{ns}:log`` audit stream: with the revision it
is the registry's *fingerprint*. A restore that lands on the revision number the client holds
still changes the newest entry's id, which the safety poll compares (:func:`read_fingerprint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgpack
import redis

from promptreg.client.cache import StatePointers
from promptreg.registry.errors import RegistryCorruptError, StateReadError
from promptreg.registry.models import PromptVersion
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.template import compile_formats
from promptreg.registry.validation import LATEST

CHUNK = 1000
"""Fields per ``HMGET``, commands per pipeline, ``COUNT`` per scan step: bounded server work each."""
MAX_ROUNDS = 8
"""Rounds of :func:`read_state` before giving up (only when prompts or labels are created non-stop)."""


@dataclass(frozen=True, slots=True)
class LogHead:
    """The newest entry of the registry-wide audit stream: its id and the write it records."""

    entry_id: bytes
    rev: int | None
    action: str | None
    prompt: str | None
    label: str | None
    version: int | None
    write_id: str | None = None
    """The write's id (``hid``; ``None``: written before write ids existed)."""


@dataclass(frozen=True, slots=True)
class RegistryState:
    """One consistent read of the registry: revision, label pointers and the audit stream's head."""

    rev: int
    pointers: dict[str, dict[str, int]]
    head: LogHead | None
    anchor_found: bool
    """Whether the audit entry given as ``anchor`` is still in the stream (the history continues)."""


def _text(value: Any) -> str | None:
    return None if value is None else value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _number(value: Any) -> int | None:
    return None if value is None else int(value)


def parse_log_head(raw: Any) -> LogHead | None:
    """The :class:`LogHead` of an ``XREVRANGE key + - COUNT 1`` reply (``None``: empty stream)."""
    if not raw:
        return None
    entry_id, fields = raw[0]
    if isinstance(fields, list):  # a RedisCluster transaction returns the raw reply: [field, value, ...]
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    try:
        return LogHead(
            entry_id=entry_id if isinstance(entry_id, bytes) else str(entry_id).encode(),
            rev=_number(fields.get(b"rev")),
            action=_text(fields.get(b"action")),
            prompt=_text(fields.get(b"prompt")),
            label=_text(fields.get(b"label")),
            version=_number(fields.get(b"version")),
            write_id=_text(fields.get(b"hid")),
        )
    except (ValueError, UnicodeDecodeError, AttributeError) as exc:
        raise RegistryCorruptError(f"unreadable audit entry {entry_id!r}: {exc!r}") from exc


HISTORY_WINDOW = 128
"""Newest audit entries a full state read takes the write ids of (:func:`write_history`): a cache
up to this many writes behind is placed in the registry's history without reloading its versions."""


def write_history(rev: int, revid: Any, entries: Any) -> dict[int, str]:
    """``rev -> write id`` from ``{ns}:revid`` (the write at ``rev``; missing: ``''``) and the newest
    audit entries (an ``XREVRANGE`` reply); entries without an id are left out (unknown)."""
    history: dict[int, str] = {}
    for _entry_id, fields in entries or ():
        if isinstance(fields, list):  # a RedisCluster transaction returns the raw reply
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        hid, at = fields.get(b"hid"), fields.get(b"rev")
        if hid is not None and at is not None:
            history[int(at)] = hid.decode("ascii")
    history[rev] = "" if revid is None else revid.decode("ascii")
    return history


def read_rev(client: redis.Redis, keys: Keyspace) -> int:
    """The registry's current revision (0 if nothing was ever written)."""
    raw: Any = client.get(keys.rev)
    return int(raw or 0)


def read_fingerprint(client: redis.Redis, keys: Keyspace) -> tuple[int, LogHead | None]:
    """``(rev, newest audit entry)`` read in one transaction (GET, XREVRANGE ... COUNT 1)."""
    pipe: Any = client.pipeline(transaction=True)
    rev_raw, head_raw = pipe.get(keys.rev).xrevrange(keys.log, count=1).execute()
    try:
        return int(rev_raw or 0), parse_log_head(head_raw)
    except ValueError as exc:
        raise RegistryCorruptError(f"unreadable registry revision {rev_raw!r}") from exc


def read_state(
    client: redis.Redis, keys: Keyspace, hint: Mapping[str, Iterable[str]] | None = None
) -> tuple[int, dict[str, dict[str, int]]]:
    """``(rev, {name: {label: number}})``: every prompt's labels and ``latest`` at one revision.

    See :func:`read_registry` (which also returns the audit stream's head) for the arguments and errors.
    """
    state = read_registry(client, keys, hint)
    return state.rev, state.pointers


def read_registry(
    client: redis.Redis,
    keys: Keyspace,
    hint: Mapping[str, Iterable[str]] | None = None,
    anchor: bytes | None = None,
) -> RegistryState:
    """Every prompt's labels and ``latest``, the revision and the audit head, at one revision.

    ``hint`` is what the caller believes the prompts and their labels are (the cache's current
    pointers); a correct hint makes this one round trip. ``anchor`` is the id of an audit entry the
    caller saw; :attr:`RegistryState.anchor_found` says whether it is still there. Raises redis-py
    errors on I/O failure, :class:`StateReadError` if the sets never settle,
    :class:`~promptreg.RegistryCorruptError` for unreadable values.
    """
    wanted: dict[str, list[str]] = {
        name: sorted(label for label in labels if label != LATEST) for name, labels in (hint or {}).items()
    }
    for _ in range(MAX_ROUNDS):
        names = sorted(wanted)
        pipe: Any = client.pipeline(transaction=True)
        pipe.get(keys.rev)
        pipe.xrevrange(keys.log, count=HISTORY_WINDOW)
        pipe.get(keys.revid)
        if anchor is not None:
            pipe.xrange(keys.log, min=anchor, max=anchor, count=1)
        pipe.smembers(keys.prompts)
        for name in names:
            pipe.smembers(keys.labels(name))
            pipe.hget(keys.prompt(name), "latest")
            for label in wanted[name]:
                pipe.get(keys.label(name, label))
        results = iter(pipe.execute())
        try:
            rev = int(next(results) or 0)
            window = next(results)
            head = parse_log_head(window)
            history = write_history(rev, next(results), window)
            anchor_found = anchor is not None and bool(next(results))
            found_names = {raw.decode("utf-8") for raw in next(results)}
            settled = found_names == set(names)
            pointers: dict[str, dict[str, int]] = {}
            found: dict[str, list[str]] = {}
            for name in names:
                label_set = sorted(raw.decode("utf-8") for raw in next(results))
                latest = int(next(results) or 0)
                values = [next(results) for _label in wanted[name]]
                found[name] = label_set
                settled = settled and label_set == wanted[name]
                labels = {label: int(value) for label, value in zip(wanted[name], values, strict=True) if value}
                if latest > 0:
                    labels[LATEST] = latest
                pointers[name] = labels
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryCorruptError(f"unreadable registry state in redis: {exc!r}") from exc
        if settled:
            return RegistryState(rev, StatePointers(pointers, history), head, anchor_found)
        wanted = {name: found.get(name, []) for name in found_names}
    raise StateReadError(f"prompts or labels kept changing during {MAX_ROUNDS} reads of the state")


def fetch_versions(
    client: redis.Redis, keys: Keyspace, pairs: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], PromptVersion | None]:
    """Read versions by ``(name, number)``; ``None`` for a version that does not exist.

    One ``HMGET`` per version of the fields it is built from (the ``sha256`` is not sent), in
    chunks of :data:`CHUNK` commands. On a single server (or a Sentinel-managed one) the chunks are
    *streamed* on one connection: chunk ``k + 1`` is sent before the replies of chunk ``k`` are read
    and built, so the server works while this thread builds versions, and each command stays O(1)
    for the server (nothing stalls other clients). Other clients (a cluster) use plain pipelines.
    Versions are built with :meth:`PromptVersion.trusted`: the registry validated them when they
    were written. Raises redis-py errors on I/O failure (the connection is then dropped, never reused
    mid-reply) and :class:`~promptreg.RegistryCorruptError` for a hash that is not a version.
    """
    wanted = list(pairs if isinstance(pairs, (set, frozenset)) else dict.fromkeys(pairs))
    build = _VersionBuilder()
    if isinstance(client, redis.Redis) and streams(client):
        return _stream(client, keys, wanted, build)
    found: dict[tuple[str, int], PromptVersion | None] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        pipe: Any = client.pipeline(transaction=False)
        for name, number in chunk:
            pipe.hmget(keys.version(name, number), _VERSION_FIELDS)
        build.chunk(chunk, pipe.execute(), found)
    return found


def streams(client: redis.Redis) -> bool:
    """Whether ``client`` hands out plain connections (``send_packed_command`` / ``read_response``)."""
    return isinstance(getattr(client, "connection_pool", None), redis.ConnectionPool)


@contextmanager
def held_connection(client: redis.Redis) -> Iterator[Any]:
    """One connection of ``client``'s pool (see :func:`streams`) for a run of commands packed by hand.

    Released at the end; dropped instead if anything fails, since replies may still be on their way
    and the connection must never be handed out again mid-reply.
    """
    pool: Any = client.connection_pool
    conn: Any = pool.get_connection()
    try:
        yield conn
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _stream(
    client: redis.Redis, keys: Keyspace, wanted: list[tuple[str, int]], build: _VersionBuilder
) -> dict[tuple[str, int], PromptVersion | None]:
    found: dict[tuple[str, int], PromptVersion | None] = {}
    if not wanted:
        return found
    chunks = [wanted[start : start + CHUNK] for start in range(0, len(wanted), CHUNK)]
    key_of = keys.version
    with held_connection(client) as conn:
        encoding, errors = conn.encoder.encoding, conn.encoder.encoding_errors

        def packed(chunk: list[tuple[str, int]]) -> list[bytes]:
            # RESP by hand: every command is HMGET <key> <the same fields>; redis-py's packer costs
            # more per command than building the version.
            keys_ = [key_of(name, number).encode(encoding, errors) for name, number in chunk]
            return [b"".join([b"%b$%d\r\n%b\r\n%b" % (_HMGET_HEAD, len(key), key, _HMGET_TAIL) for key in keys_])]

        conn.send_packed_command(packed(chunks[0]))
        read = conn.read_response
        for index, chunk in enumerate(chunks):
            if index + 1 < len(chunks):  # keep the server busy while this chunk is built
                conn.send_packed_command(packed(chunks[index + 1]))
            build.chunk(chunk, [read() for _ in chunk], found)
    return found


_VERSION_FIELDS = ("prompt_text", "created_at", "author", "message", "metadata", "messages", "config")
_EMPTY_MAP = msgpack.packb({})
_HMGET_HEAD = b"*%d\r\n$5\r\nHMGET\r\n" % (2 + len(_VERSION_FIELDS))
_HMGET_TAIL = b"".join(b"$%d\r\n%b\r\n" % (len(field), field.encode()) for field in _VERSION_FIELDS)


class _VersionBuilder:
    """Builds :class:`PromptVersion` s from ``HMGET`` replies; parses each distinct ``created_at`` once.

    Versions written together (an import, a migration) share their timestamp: one immutable
    ``datetime`` serves them all, which saves the parse and the memory. A chunk is built in one loop
    with its names bound locally: at 100k prompts the call per version cost as much as the decoding.
    """

    __slots__ = ("_times",)

    def __init__(self) -> None:
        self._times: dict[bytes, datetime] = {}

    def chunk(
        self,
        pairs: list[tuple[str, int]],
        replies: list[list[bytes | None]],
        found: dict[tuple[str, int], PromptVersion | None],
    ) -> None:
        """Build the version of each ``(name, number)`` from its reply into ``found`` (``None``: no such hash).

        Raises :class:`~promptreg.RegistryCorruptError` for a hash that is not a version.
        """
        times = self._times
        trusted = PromptVersion.trusted
        unpack = msgpack.unpackb
        empty = _EMPTY_MAP
        texts = _texts(replies)  # decoded, and compiled together: a few C-level passes per chunk
        formats = None if texts is None else compile_formats(texts)
        for index, (pair, (text, created, author, message, metadata, chat, config)) in enumerate(
            zip(pairs, replies, strict=True)
        ):
            if text is None or created is None:
                if text is None and created is None:
                    found[pair] = None  # no such hash
                    continue
                raise RegistryCorruptError(
                    f"version {pair[1]} of prompt {pair[0]!r} is not readable: a field is missing"
                )
            try:
                at = times.get(created)
                if at is None:
                    at = times[created] = _utc(datetime.fromisoformat(created.decode("ascii")))
                found[pair] = trusted(
                    pair[1],
                    text.decode("utf-8") if texts is None else texts[index],
                    at,
                    None if author is None else author.decode("utf-8"),
                    None if message is None else message.decode("utf-8"),
                    {} if metadata is None or metadata == empty else unpack(metadata, raw=False),
                    None if chat is None else tuple(unpack(chat, raw=False)),
                    None if config is None else unpack(config, raw=False),
                    None if formats is None else formats[index],
                )
            except (AttributeError, ValueError, TypeError, msgpack.UnpackException) as exc:
                raise RegistryCorruptError(f"version {pair[1]} of prompt {pair[0]!r} is not readable: {exc!r}") from exc


def _texts(replies: list[list[bytes | None]]) -> list[str] | None:
    """Every reply's ``prompt_text`` decoded (``""`` where there is none), or ``None`` when one does not
    decode: then each version decodes its own, and the one that fails says which it is."""
    try:
        return ["" if reply[0] is None else reply[0].decode("utf-8") for reply in replies]
    except (UnicodeDecodeError, AttributeError, IndexError, TypeError):
        return None


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is UTC else at.astimezone(UTC) if at.tzinfo else at.replace(tzinfo=UTC)
