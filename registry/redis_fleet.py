"""Fleet presence in Redis: what a client writes, and how the registry reads it back.

Two kinds of keys, both in the namespace's hash tag (:mod:`registry.keys`):

- ``{ns}:fleet:<client_id>``: a string, the client's record (msgpack, about 250 bytes), written
  with ``SET ... PX 3*report_interval``: the server expires it by itself when the client stops.
- ``{ns}:fleet``: a sorted set ``client_id -> time of the last report (ms)``, so a reader finds
  the records without ``SCAN``. A member whose record is gone has expired: readers drop it.

A report is ``SET`` + ``ZADD`` in one round trip (a pipeline, no transaction: each is idempotent),
so 1,000 clients reporting every 5 s send 400 commands/s (``benchmarks/fleet.py`` measures the
server's CPU). A client removes both keys when it closes; once at start it also drops index
entries not refreshed for :data:`PRUNE_AFTER_MS` (clients that died before any reader saw them gone).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import redis

from registry.fleet import EXPIRY_INTERVALS, FleetMember, decode_member, encode_member
from registry.keys import Keyspace

READ_CHUNK = 500
"""Records per ``MGET`` (and index entries per ``ZRANGE``) when reading the fleet."""
PRUNE_AFTER_MS = 24 * 3600 * 1000
"""An index entry not refreshed for a day is dropped by the next client that starts."""


def report(conn: Any, keys: Keyspace, member: FleetMember) -> None:
    """Write ``member``'s record (expiring after 3 intervals) and refresh its index entry."""
    ttl_ms = max(1, round(member.report_interval * EXPIRY_INTERVALS * 1000))
    pipe = conn.pipeline(transaction=False)
    pipe.set(keys.member(member.client_id), encode_member(member), px=ttl_ms)
    pipe.zadd(keys.fleet, {member.client_id: round(member.last_seen.timestamp() * 1000)})
    pipe.execute()


def prune(conn: Any, keys: Keyspace, now_ms: int) -> None:
    """Drop index entries whose client has not reported for :data:`PRUNE_AFTER_MS`."""
    conn.zremrangebyscore(keys.fleet, "-inf", now_ms - PRUNE_AFTER_MS)


def remove(conn: Any, keys: Keyspace, client_id: str) -> None:
    """Remove a client's record and index entry (it closed)."""
    pipe = conn.pipeline(transaction=False)
    pipe.delete(keys.member(client_id))
    pipe.zrem(keys.fleet, client_id)
    pipe.execute()


def read_members(conn: Any, keys: Keyspace, client_ids: Iterable[str]) -> dict[str, FleetMember | None]:
    """The current record of each of ``client_ids`` (``None``: expired, removed or unreadable)."""
    ids = list(client_ids)
    found: dict[str, FleetMember | None] = {}
    for start in range(0, len(ids), READ_CHUNK):
        chunk = ids[start : start + READ_CHUNK]
        raws: list[bytes | None] = conn.mget([keys.member(client_id) for client_id in chunk])
        for client_id, raw in zip(chunk, raws, strict=True):
            member = None if raw is None else decode_member(raw)
            found[client_id] = member if member is not None and member.client_id == client_id else None
    return found


def read_fleet(conn: Any, keys: Keyspace) -> list[FleetMember]:
    """Every client whose record has not expired, by name, host and pid.

    Index entries whose record is gone are removed on the way (best effort: a user without the
    right to write them, or a read-only replica, just leaves them).
    """
    ids: list[str] = []
    start = 0
    while True:
        chunk: list[bytes] = conn.zrange(keys.fleet, start, start + READ_CHUNK - 1)
        ids.extend(raw.decode("utf-8", "replace") for raw in chunk)
        if len(chunk) < READ_CHUNK:
            break
        start += READ_CHUNK
    records = read_members(conn, keys, dict.fromkeys(ids))
    gone = [client_id for client_id, member in records.items() if member is None]
    if gone:
        with contextlib.suppress(redis.RedisError):
            conn.zrem(keys.fleet, *gone)
    members = [member for member in records.values() if member is not None]
    return sorted(members, key=lambda m: (m.client_name or "", m.host, m.pid, m.client_id))
