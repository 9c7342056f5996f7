"""The presence connection of a client on Redis: reports written without waiting for their replies.

A report is ``SET {ns}:fleet:<id> <record> PX <3 intervals>`` and ``ZADD {ns}:fleet <ms> <id>``, the
commands :func:`promptreg.registry.redis.fleet.report` sends (the keys and their cost are described
there). The client's listener writes one after each change it applies (its acknowledgement), so
both halves here are built for a thread woken by a message:

- :class:`ReportPacker` builds a report's bytes from a template made once: the record's msgpack and
  the commands' RESP framing, with three slots (state, revision, time). Measured in a process woken
  per message, building a :class:`~promptreg.registry.fleet.FleetMember`, encoding it and packing
  the commands through redis-py cost about 200 us of CPU per report; the template, a few us.
- :class:`PresenceLink` holds one connection (opened by redis-py: TLS, credentials, Sentinel's
  primary, ``SELECT``), its socket non-blocking: :meth:`~PresenceLink.send` is one ``send()`` that
  never waits, and :meth:`~PresenceLink.collect` reads the replies that arrived meanwhile (one
  ``recv()``), or waits for them when asked to. The replies of these commands are one line each
  (``+OK``, ``:1``, ``-ERR ...``): the link counts them and returns the errors.
"""

from __future__ import annotations

import select
import ssl
import struct
import time
from typing import Any

import msgpack
import redis

from promptreg.registry.fleet import MAX_REV, FleetMember, encode_member
from promptreg.registry.redis.fleet import PRUNE_AFTER_MS, record_ttl_ms
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.redis.topology import subscriber_for

SLOTS = ("state", "rev", "last_seen")
"""The fields of a record that change from one report to the next; the others are the template's."""
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


# msgpack's encodings of what a report fills in, as packb writes them (packb builds a packer per call)
_FIXINT = [msgpack.packb(n) for n in range(128)]
_UINT8, _UINT16, _UINT32, _UINT64 = (struct.Struct(f">B{code}").pack for code in "BHIQ")
_FLOAT64 = struct.Struct(">Bd").pack


def _escaped(constant: bytes) -> bytes:
    return constant.replace(b"%", b"%%")


def _command(*parts: bytes) -> bytes:
    """One command in RESP: an array of bulk strings."""
    return b"*%d\r\n" % len(parts) + b"".join(_bulk(part) for part in parts)


class ReportPacker:
    """The bytes of one client's reports, from a template of its record (module docstring).

    ``member`` gives every field but :data:`SLOTS` (its values there are only placeholders); a
    record packed here is byte for byte what :func:`~promptreg.registry.fleet.encode_member` makes
    of the same member (a test checks it).
    """

    def __init__(self, keys: Keyspace, member: FleetMember) -> None:
        fields: dict[str, Any] = member.model_dump(exclude={"started_at", "last_seen"})
        fields["started_at"] = member.started_at.timestamp()
        fields["last_seen"] = member.last_seen.timestamp()
        whole = encode_member(member)
        body = b"".join(msgpack.packb(k) + msgpack.packb(v) for k, v in fields.items())
        if not whole.endswith(body) or [key for key in fields if key in SLOTS] != list(SLOTS):
            raise ValueError("a presence record is not the msgpack map this template assumes")
        segments, segment = [], [whole[: len(whole) - len(body)]]  # the map's header first
        for key, value in fields.items():
            segment.append(msgpack.packb(key))
            if key in SLOTS:
                segments.append(_escaped(b"".join(segment)))
                segment = []
            else:
                segment.append(msgpack.packb(value))
        segments.append(_escaped(b"".join(segment)))
        # Formats for bytes' %-operator: the record's, with a %s per slot, and the whole report's
        # (one call builds it), with the record's length, its slots, and the score's length and bytes.
        self._record = b"%s".join(segments)
        self._fixed = sum(len(segment.replace(b"%%", b"%")) for segment in segments) + 9  # + last_seen's 9
        client_id = member.client_id.encode()
        fleet = keys.fleet.encode()
        ttl = b"%d" % record_ttl_ms(member.report_interval)
        self._report = (
            _escaped(b"*5\r\n$3\r\nSET\r\n" + _bulk(keys.member(member.client_id).encode()))
            + b"$%d\r\n"
            + self._record
            + b"\r\n"
            + _escaped(_bulk(b"PX") + _bulk(ttl) + b"*4\r\n$4\r\nZADD\r\n" + _bulk(fleet))
            + b"$%d\r\n%d\r\n"
            + _escaped(_bulk(client_id))
        )
        self._states: dict[str, bytes] = {}
        self._remove = _command(b"DEL", keys.member(member.client_id).encode()) + _command(b"ZREM", fleet, client_id)
        self._repair = _command(b"DEL", fleet)
        self._prune_head = (b"ZREMRANGEBYSCORE", fleet, b"-inf")

    def record(self, state: str, rev: int, now: float) -> bytes:
        """The record's msgpack for ``state`` and ``rev`` at ``now`` (Unix seconds)."""
        return self._record % self._slots(state, rev, now)

    def report(self, state: str, rev: int, now: float, repair: bool = False) -> bytes:
        """``SET`` + ``ZADD``: 2 replies (3 with ``repair``: ``DEL {ns}:fleet`` first, so an index
        of another type is replaced, as :func:`~promptreg.registry.redis.fleet.report` does)."""
        packed_state, packed_rev, packed_now = self._slots(state, rev, now)
        score = round(now * 1000)
        data = self._report % (
            self._fixed + len(packed_state) + len(packed_rev), packed_state, packed_rev, packed_now,
            len(b"%d" % score), score,
        )  # fmt: skip
        return self._repair + data if repair else data

    def _slots(self, state: str, rev: int, now: float) -> tuple[bytes, bytes, bytes]:
        """The slots' msgpack, byte for byte what ``msgpack.packb`` writes."""
        packed_state = self._states.get(state)
        if packed_state is None:
            packed_state = self._states[state] = msgpack.packb(state)
        if not 0 <= rev <= MAX_REV:
            raise ValueError(f"revision {rev} out of range")
        if rev < 128:
            packed_rev = _FIXINT[rev]
        elif rev < 0x10000:
            packed_rev = _UINT16(0xCD, rev) if rev > 0xFF else _UINT8(0xCC, rev)
        else:
            packed_rev = _UINT32(0xCE, rev) if rev < 0x100000000 else _UINT64(0xCF, rev)
        return packed_state, packed_rev, _FLOAT64(0xCB, now)

    def remove(self) -> tuple[bytes, int]:
        """``DEL`` the record, ``ZREM`` the index entry (the client closed, or paused)."""
        return self._remove, 2

    def prune(self, now_ms: int) -> tuple[bytes, int]:
        """Drop index entries not refreshed for :data:`~promptreg.registry.redis.fleet.PRUNE_AFTER_MS`."""
        return _command(*self._prune_head, b"%d" % (now_ms - PRUNE_AFTER_MS)), 1


def presence_client(registry: RedisPromptRegistry) -> redis.Redis:
    """A client for the reports' connection: to the primary (through Sentinel, the one it names), or
    on a cluster to the node holding the namespace's hash tag (found after a keyed read, which
    refreshes redis-py's slot map)."""
    if registry.cluster:
        cluster: Any = registry.redis
        cluster.exists(registry.keys.fleet)
        return subscriber_for(cluster.get_redis_connection(cluster.get_node_from_key(registry.keys.fleet)))
    return subscriber_for(registry.redis, replica=False)


def reply_error(text: str) -> Exception:
    """The exception redis-py would raise for an error reply (``NOPERM`` is its own class)."""
    return redis.exceptions.NoPermissionError(text) if text.startswith("NOPERM") else redis.ResponseError(text)


class PresenceLink:
    """One connection to the node holding the namespace, written without waiting (module docstring).

    Not thread-safe: its owner calls it under one lock. Raises ``redis.ConnectionError`` when the
    connection fails (the link is then useless: :meth:`close` it and open another).
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        conn: Any = client.connection_pool.make_connection()  # not the pool's: only this link uses it
        conn.connect()  # the handshake, by redis-py (TLS, AUTH, SELECT, Sentinel's primary)
        sock = getattr(conn, "_sock", None)
        if sock is None:
            conn.disconnect()
            raise redis.ConnectionError("redis-py opened no socket for the presence connection")
        sock.setblocking(False)
        self._conn = conn
        self._sock = sock
        self._poller = select.poll()
        self._poller.register(sock, select.POLLIN)
        self._buffer = bytearray(4096)
        self._partial = b""
        self.unread = 0
        """Replies not read yet: the commands sent and not answered, as far as this side knows."""

    def send(self, data: bytes, replies: int) -> None:
        """Write ``data`` (commands expecting ``replies`` replies) now, in one ``send()``; never waits."""
        try:
            sent = self._sock.send(data)
        except _WOULD_BLOCK:
            sent = 0
        except OSError as exc:
            raise redis.ConnectionError(f"presence connection: {exc}") from exc
        if sent != len(data):  # redis has not read what was sent before: the link is not trusted
            raise redis.ConnectionError("presence connection: redis is not reading (send buffer full)")
        self.unread += replies

    def collect(self, wait: float = 0.0, stop: Any = None) -> list[str]:
        """Read the replies that arrived; with ``wait``, wait up to that many seconds for all of them
        (``TimeoutError`` after it; ``stop``, an Event, ends the wait early). Returns the errors."""
        errors: list[str] = []
        deadline = time.monotonic() + wait
        while True:
            self._read(errors)
            left = deadline - time.monotonic()
            if not self.unread or (stop is not None and stop.is_set()):
                return errors
            if left <= 0:
                if wait:
                    raise TimeoutError(f"no reply from redis to {self.unread} presence command(s) within {wait:g} s")
                return errors
            self._poller.poll(min(left, 0.25) * 1000)

    def _read(self, errors: list[str]) -> None:
        sock, buffer = self._sock, self._buffer
        while True:
            try:
                count = sock.recv_into(buffer)
            except _WOULD_BLOCK:
                return
            except OSError as exc:
                raise redis.ConnectionError(f"presence connection: {exc}") from exc
            if not count:
                raise redis.ConnectionError("presence connection: closed by the server")
            lines = (self._partial + buffer[:count]).split(b"\r\n")
            self._partial = bytes(lines.pop())
            for line in lines:
                kind = line[:1]
                if kind == b"-":
                    errors.append(line[1:].decode("utf-8", "replace"))
                elif kind not in (b"+", b":", b"_") and line != b"$-1":
                    raise redis.ConnectionError(f"presence connection: unexpected reply {bytes(line[:40])!r}")
                self.unread -= 1
            if self.unread < 0:
                raise redis.ConnectionError("presence connection: more replies than commands")
            if count < len(buffer) and not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                return

    def close(self) -> None:
        """Close the connection (never raises)."""
        try:
            self._conn.disconnect()
            self._client.close()
        except Exception:  # a broken socket: nothing left to close
            pass
