"""The change stream's subscriber processes: raw SSE connections, and the Redis pub/sub floor.

:func:`stream_worker` is a forked child holding many ``/api/v1/events`` connections, raw asyncio
sockets (HTTP/1.1, chunked): each :class:`StreamSubscriber` stamps an arrival
(``time.monotonic_ns``) as the first thing it does on the socket's data and, once the measured
moves begin, parses only at the end, so parsing never delays another connection's stamp.
:func:`pubsub_worker` is the floor: redis-py ``SUBSCRIBE`` on the registry's change channel in its
own process. Both report to the parent over their pipe (:class:`benchmarks._harness.Children`).
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import time
from multiprocessing.connection import Connection
from typing import Any

import redis

from benchmarks._serve_plan import READY_TIMEOUT
from promptreg.registry.wire import decode


def raise_nofile(needed: int) -> None:
    """Raise this process's open-file limit to ``needed`` (up to the hard limit): a socket per subscriber.

    Children and servers started afterwards inherit it.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _recv(conn: Connection) -> Any:
    """The next message on the parent's pipe, without blocking the event loop."""
    loop = asyncio.get_running_loop()
    arrived = loop.create_future()

    def readable() -> None:
        if not arrived.done():
            arrived.set_result(None)

    loop.add_reader(conn.fileno(), readable)
    try:
        await arrived
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv()


class StreamSubscriber(asyncio.Protocol):
    """One SSE connection: HTTP/1.1 head, chunked body, events. Once ``deferred``, an arrival is only
    stamped and kept; it is parsed at the end, so parsing never delays the stamp of another one."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.raw = bytearray()
        self.body = bytearray()
        self.head_done = False
        self.chunk_left = 0
        self.need_crlf = False
        self.status = 0
        self.ready_rev: int | None = None
        self.changes: list[tuple[int, int]] = []  # (rev from id:, monotonic_ns of arrival)
        self.bad_data = 0
        self.heartbeats = 0
        self.other_events = 0
        self.ended = False
        self.closed = False
        self.error: str | None = None
        self.deferred = False
        self.pending: list[tuple[int, bytes]] = []

    def itself(self) -> StreamSubscriber:
        """The protocol factory of this connection (it is made before it connects)."""
        return self

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.deferred:
            self.pending.append((time.monotonic_ns(), data))
        else:
            self.feed(time.monotonic_ns(), data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True

    def drain(self) -> None:
        pending, self.pending = self.pending, []
        for now, data in pending:
            self.feed(now, data)

    def feed(self, now: int, data: bytes) -> None:
        raw = self.raw
        raw += data
        if not self.head_done:
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(raw[:end]).lower()
            del raw[: end + 4]
            self.head_done = True
            self.status = int(head[9:12])
            if self.status != 200 or b"\r\ntransfer-encoding: chunked" not in head:
                self.error = f"status {self.status}, head {head[:200]!r}"
                if self.transport is not None:
                    self.transport.close()
                return
        body = self.body
        while raw and not self.ended:
            if self.need_crlf:
                if len(raw) < 2:
                    break
                del raw[:2]
                self.need_crlf = False
            elif self.chunk_left == 0:
                eol = raw.find(b"\r\n")
                if eol < 0:
                    break
                size = int(bytes(raw[:eol]).split(b";")[0], 16)
                del raw[: eol + 2]
                if size == 0:
                    self.ended = True
                self.chunk_left = size
            else:
                take = min(self.chunk_left, len(raw))
                body += raw[:take]
                del raw[:take]
                self.chunk_left -= take
                self.need_crlf = self.chunk_left == 0
        while True:
            end = body.find(b"\n\n")
            if end < 0:
                return
            block = bytes(body[:end])
            del body[: end + 2]
            self._event(now, block)

    def _event(self, now: int, block: bytes) -> None:
        kind, ident, data, comment = "message", None, None, False
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                comment = True
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"id":
                ident = int(value)
            elif field == b"event":
                kind = value.decode()
            elif field == b"data":
                data = value
        if kind == "change" and ident is not None:
            self.changes.append((ident, now))
            parsed = json.loads(data or b"null")
            if not isinstance(parsed, dict) or parsed.get("rev") != ident:
                self.bad_data += 1
        elif kind == "ready" and ident is not None:
            self.ready_rev = ident
        elif comment and data is None and ident is None:
            self.heartbeats += 1
        elif data is not None or ident is not None:
            self.other_events += 1  # resync, or anything unexpected; the "retry:" block is neither

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _stream_main(conn: Connection, port: int, request: bytes, count: int) -> None:
    loop = asyncio.get_running_loop()
    subscribers = [StreamSubscriber(request) for _ in range(count)]
    try:
        for start in range(0, count, 50):  # in batches: 1,000 SYNs at once would overflow nothing, but no need
            batch = subscribers[start : start + 50]
            await asyncio.gather(*(loop.create_connection(s.itself, "127.0.0.1", port) for s in batch))
        deadline = time.monotonic() + READY_TIMEOUT
        while not all(s.ready_rev is not None or s.error or s.closed for s in subscribers):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        for s in subscribers:
            s.deferred = True
        ready = {
            "subscribers": count,
            "ready": sum(s.ready_rev is not None for s in subscribers),
            "errors": [s.error for s in subscribers if s.error][:5],
        }
        conn.send(("ready", ready))
        command = await _recv(conn)
        if command[0] != "finish":
            raise ValueError(f"unknown command {command!r}")
        _, last_rev, timeout = command
        deadline = time.monotonic() + timeout
        while True:
            for s in subscribers:
                s.drain()
            done = all(s.closed or (s.changes and s.changes[-1][0] >= last_rev) for s in subscribers)
            if done or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        conn.send(("events", {
            "changes": [s.changes for s in subscribers],
            "ready_revs": [s.ready_rev for s in subscribers],
            "closed_early": sum(s.closed for s in subscribers),
            "errors": [s.error for s in subscribers if s.error][:5],
            "bad_data": sum(s.bad_data for s in subscribers),
            "heartbeats": sum(s.heartbeats for s in subscribers),
            "other_events": sum(s.other_events for s in subscribers),
            "non_200": sum(s.status not in (0, 200) for s in subscribers),
        }))  # fmt: skip
    finally:
        for s in subscribers:
            s.close()
        await asyncio.sleep(0)


def stream_worker(conn: Connection, port: int, request: bytes, count: int) -> None:
    """A subscriber process: ``count`` SSE connections; ``("ready", ...)``, then ``("finish", rev, s)``
    -> ``("events", ...)`` with every connection's ``(rev, arrival)`` of each change event."""
    raise_nofile(count + 256)
    asyncio.run(_stream_main(conn, port, request, count))


def pubsub_worker(conn: Connection, url: str, channel: str) -> None:
    """The floor: redis-py ``SUBSCRIBE`` on the registry's change channel; stamps each message's rev."""
    client = redis.Redis.from_url(url)
    pubsub: Any = client.pubsub()
    try:
        pubsub.subscribe(channel)
        deadline = time.monotonic() + 30
        while (message := pubsub.get_message(timeout=1.0)) is None or message["type"] != "subscribe":
            if time.monotonic() > deadline:
                raise TimeoutError("no SUBSCRIBE confirmation")
        conn.send(("ready", os.getpid()))
        stamps: list[tuple[int, int]] = []  # (monotonic_ns, rev)
        while not conn.poll():
            message = pubsub.get_message(timeout=0.05)
            now = time.monotonic_ns()
            if message is not None and message["type"] == "message":
                stamps.append((now, decode(message["data"]).rev))
        conn.recv()
        conn.send(("events", {"stamps": stamps}))
    finally:
        pubsub.close()
        client.close()
