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
from typing import Any

import redis

from promptreg.client.cache import StatePointers
from promptreg.registry.errors import RegistryCorruptError, StateReadError
from promptreg.registry.redis.keys import Keyspace
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
