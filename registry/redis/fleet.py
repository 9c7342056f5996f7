"""Fleet presence in Redis: what a client writes, and how the registry reads it back.

Two kinds of keys, both in the namespace's hash tag (:mod:`promptreg.registry.redis.keys`):

- ``{ns}:fleet:<client_id>``: a string, the client's record (msgpack, about 250 bytes), written
  with ``SET ... PX 3*report_interval``: the server expires it by itself when the client stops.
- ``{ns}:fleet``: a sorted set ``client_id -> time of the last report (ms)``, so a reader finds
  the records without ``SCAN``. A member whose record is gone has expired: readers drop it.

A report is ``SET`` + ``ZADD`` in one round trip (a pipeline, no transaction: each is idempotent),
so 1,000 clients reporting every 5 s send 400 commands/s (``benchmarks/fleet.py`` measures the
server's CPU). A client removes both keys when it closes; once at start it also drops index
entries not refreshed for :data:`PRUNE_AFTER_MS` (clients that died before any reader saw them gone).

**Reading is bounded, because the keys are writable by every service** (the ``reader`` ACL user may
write them, :mod:`promptreg.registry.redis.acl`): a read takes at most :data:`MAX_FLEET` index entries (the most
recently refreshed first, in one ``ZRANGE``: atomic, so no client is skipped while others refresh)
and at most :data:`~promptreg.registry.fleet.MAX_RECORD_BYTES` + 1 bytes of each record (``GETRANGE``), with
the record's remaining time to live (``PTTL``). A record counts only if
:func:`~promptreg.registry.fleet.decode_member` accepts it, it is stored under its own id, and the server
expires it no later than 3 of its own report intervals (what :func:`report` sets): a record written
without ``PX``, or with a longer one, cannot outlive its writer, so it is skipped. Skipped records
and invalid index entries are counted (:class:`~promptreg.registry.fleet.FleetRead`), never raised; an index
of the wrong type reads as empty, and the next client report replaces it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import redis

from promptreg.registry.fleet import (
    EXPIRY_INTERVALS,
    MAX_RECORD_BYTES,
    FleetMember,
    FleetRead,
    decode_member,
    encode_member,
    is_client_id,
)
from promptreg.registry.redis.keys import Keyspace

logger = logging.getLogger("promptreg.registry")

READ_CHUNK = 500
"""Records read per round trip (a pipeline of ``GETRANGE`` + ``PTTL`` per record)."""
MAX_FLEET = 10_000
"""Index entries one read takes at most: a fleet larger than this (or an index flooded with fake
ids) is read in part, and the read says so (:attr:`~promptreg.registry.fleet.FleetRead.truncated`)."""
PRUNE_AFTER_MS = 24 * 3600 * 1000
"""An index entry not refreshed for a day is dropped by the next client that starts."""


def record_ttl_ms(report_interval: float) -> int:
    """The ``PX`` of a record: :data:`~promptreg.registry.fleet.EXPIRY_INTERVALS` report intervals, in ms."""
    return max(1, round(report_interval * EXPIRY_INTERVALS * 1000))


def report(conn: Any, keys: Keyspace, member: FleetMember) -> None:
    """Write ``member``'s record (expiring after 3 intervals) and refresh its index entry.

    An index that is not a sorted set (another holder of the reader's rights wrote a string there)
    is replaced: the index only lists ids, every client puts its own back at its next report.
    """
    pipe = conn.pipeline(transaction=False)
    pipe.set(keys.member(member.client_id), encode_member(member), px=record_ttl_ms(member.report_interval))
    pipe.zadd(keys.fleet, {member.client_id: round(member.last_seen.timestamp() * 1000)})
    try:
        pipe.execute()
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        pipe = conn.pipeline(transaction=False)
        pipe.delete(keys.fleet)
        pipe.zadd(keys.fleet, {member.client_id: round(member.last_seen.timestamp() * 1000)})
        pipe.execute()


def prune(conn: Any, keys: Keyspace, now_ms: int) -> None:
    """Drop index entries whose client has not reported for :data:`PRUNE_AFTER_MS`."""
    with contextlib.suppress(redis.ResponseError):  # an index of the wrong type: the next report replaces it
        conn.zremrangebyscore(keys.fleet, "-inf", now_ms - PRUNE_AFTER_MS)


def remove(conn: Any, keys: Keyspace, client_id: str) -> None:
    """Remove a client's record and index entry (it closed)."""
    pipe = conn.pipeline(transaction=False)
    pipe.delete(keys.member(client_id))
    pipe.zrem(keys.fleet, client_id)
    for result in pipe.execute(raise_on_error=False):
        if isinstance(result, Exception) and "WRONGTYPE" not in str(result):
            raise result  # an index of the wrong type lists nobody: the record is gone all the same


def _accepted(client_id: str, raw: object, ttl: object) -> tuple[FleetMember | None, bool]:
    """``(member, malformed)`` for one record as read: ``(None, False)`` when it does not exist.

    Raises the error a reply holds unless it is ``WRONGTYPE`` (a key of another type: malformed); a
    refusal (``NOPERM``) or an unreadable server must not pass for a forged record.
    """
    for reply in (raw, ttl):
        if isinstance(reply, Exception) and "WRONGTYPE" not in str(reply):
            raise reply
    if ttl == -2:
        return None, False  # expired or removed: no such key
    if not isinstance(raw, bytes) or isinstance(ttl, bool) or not isinstance(ttl, int):
        return None, True  # a key of another type: GETRANGE refused it
    member = decode_member(raw)  # None beyond MAX_RECORD_BYTES: GETRANGE read one byte more than that
    if member is None or member.client_id != client_id:
        return None, True
    if not 0 < ttl <= record_ttl_ms(member.report_interval):
        return None, True  # no expiry (-1), or one its own interval does not allow: not a client's report
    return member, False


_LAST_BYTE = str(MAX_RECORD_BYTES).encode()


def _read_records(conn: Any, keys: Keyspace, client_ids: list[str]) -> tuple[dict[str, FleetMember | None], int]:
    found: dict[str, FleetMember | None] = {}
    malformed = 0
    for start in range(0, len(client_ids), READ_CHUNK):
        chunk = client_ids[start : start + READ_CHUNK]
        pipe = conn.pipeline(transaction=False)
        for client_id in chunk:
            key = keys.member(client_id).encode()  # bytes arguments: redis-py packs them at half the cost
            pipe.getrange(key, b"0", _LAST_BYTE)  # at most MAX_RECORD_BYTES + 1 bytes, whatever is stored
            pipe.pttl(key)
        replies = pipe.execute(raise_on_error=False)
        for index, client_id in enumerate(chunk):
            member, bad = _accepted(client_id, replies[2 * index], replies[2 * index + 1])
            found[client_id] = member
            malformed += bad
    return found, malformed


def read_members(conn: Any, keys: Keyspace, client_ids: Iterable[str]) -> dict[str, FleetMember | None]:
    """The current record of each of ``client_ids`` (``None``: expired, removed or not a client's
    report, see the module docstring)."""
    ids = list(client_ids)
    found, _ = _read_records(conn, keys, [client_id for client_id in ids if is_client_id(client_id)])
    return {client_id: found.get(client_id) for client_id in ids}


def scan_fleet(conn: Any, keys: Keyspace) -> FleetRead:
    """Every client whose record is a valid, unexpired report, by name, host and pid; with what was
    skipped and whether the index was cut at :data:`MAX_FLEET` entries (module docstring).

    Index entries whose record is gone or skipped are removed on the way (best effort: a user
    without the right to write them, or a read-only replica, just leaves them).
    """
    try:
        # Newest first: live clients refresh their entry every interval. One command: atomic.
        entries: list[bytes] = conn.zrange(keys.fleet, 0, MAX_FLEET, desc=True, use_rev=True)
    except redis.ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        return FleetRead(malformed=1)  # the index is not a sorted set; the next report replaces it
    truncated = len(entries) > MAX_FLEET
    ids: list[str] = []
    invalid: list[bytes] = []  # removed as they are stored: they may not even be UTF-8
    for raw in entries[:MAX_FLEET]:
        client_id = raw.decode("utf-8", "replace")
        if is_client_id(client_id):
            ids.append(client_id)
        else:
            invalid.append(raw)
    records, malformed = _read_records(conn, keys, ids)
    drop: list[str | bytes] = [client_id for client_id, member in records.items() if member is None]
    drop.extend(invalid)
    if drop:
        with contextlib.suppress(redis.RedisError):
            conn.zrem(keys.fleet, *drop)
    members = [member for member in records.values() if member is not None]
    members.sort(key=lambda m: (m.client_name or "", m.host, m.pid, m.client_id))
    return FleetRead(members=members, malformed=malformed + len(invalid), truncated=truncated)


def read_fleet(conn: Any, keys: Keyspace) -> list[FleetMember]:
    """The members of :func:`scan_fleet`; what it skipped or cut is logged (``promptreg.registry``)."""
    read = scan_fleet(conn, keys)
    if read.truncated:
        logger.warning(
            "promptreg: the fleet index %s holds more than %d entries: only the %d most recent were read",
            keys.fleet, MAX_FLEET, MAX_FLEET,
        )  # fmt: skip
    if read.malformed:
        logger.warning("promptreg: %d fleet entries skipped: not a client's report (forged or corrupt)", read.malformed)
    return read.members
