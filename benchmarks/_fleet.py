"""The processes of the propagation benchmark: PromptClient processes and raw pub/sub subscribers.

The raw subscribers are the floor of each path: redis-py ``SUBSCRIBE`` (a ``PUBLISH`` from the
parent), redis-py ``SSUBSCRIBE`` on a cluster's slot owner (``SPUBLISH``), or psycopg ``LISTEN``
(``NOTIFY``) on PostgreSQL (:data:`RAW_KINDS`).

Each runs in its own forked process (see :class:`benchmarks._harness.Children`) and talks to the
parent over its pipe. Both kinds stamp an arrival with ``time.monotonic_ns()`` (Linux
``CLOCK_MONOTONIC``: one clock for every process of the machine) as the first thing they do, keep
the stamps in a list, and release a shared semaphore so the parent knows when every process has the
change. They send their stamps only at the end, so nothing but the stamp and the release happens
while a move is in flight.

The parent's side: :class:`RawPublisher` sends the floor's messages, and :class:`PublishClock`
starts both fleets' clocks at the same point, the moment the command that publishes is handed to
the driver (see its docstring).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

import redis
from redis.cluster import RedisCluster

from promptreg.registry.redis.topology import connect, parse_redis_url

RAW_STOP = b"stop"
RAW_KINDS = ("publish", "spublish", "notify")
"""How raw messages travel: ``PUBLISH``/``SUBSCRIBE``, ``SPUBLISH``/``SSUBSCRIBE``, ``NOTIFY``/``LISTEN``."""
RAW_PAYLOAD_BYTES = 120  # about the size of a promptreg change message


def raw_payload(seq: int) -> bytes:
    """A raw message: its sequence number, padded to the size of a change message."""
    return f"{seq:08d}".encode().ljust(RAW_PAYLOAD_BYTES, b".")


def client_worker(conn: Connection, url: str, namespace: str, name: str, label: str, sem: Semaphore) -> None:
    """A service process: one PromptClient; records every ``on_change`` for ``name``/``label``.

    Commands: ``("watch", version, timeout)``: reply ``("watching", None)``, then call ``get(name)`` (at
    once after each ``on_change``, and every 50 ms regardless) until it returns ``version``, and keep
    the time; it is sent (``("served", monotonic_ns or None)``) only when ``("report",)`` comes, so
    no pipe traffic competes with the other processes while the change is still in flight.
    ``("finish",)``: reply ``("events", {...})`` with every stamp, the final version and status, and
    how many fleet reports (acknowledgements included) the client wrote.
    """
    from promptreg.client import PromptClient

    client = PromptClient(url, namespace=namespace, default_label=label, start_timeout=60.0)
    try:
        if not client.wait_ready(60.0):
            raise RuntimeError(f"client not ready: {client.status()}")
        stamps: list[tuple[int, int, int | None]] = []  # (monotonic_ns, rev, version)
        changed = threading.Event()
        highest = [0]

        def on_change(event: Any) -> None:
            now = time.monotonic_ns()
            if event.name != name or event.label != label:
                return
            stamps.append((now, event.rev, event.version))
            changed.set()
            if event.rev > highest[0]:  # one release per revision, even if an event were repeated
                highest[0] = event.rev
                sem.release()

        client.on_change(on_change)
        conn.send(("ready", os.getpid()))
        while True:
            command = conn.recv()
            if command[0] == "watch":
                _, target, timeout = command
                changed.clear()
                conn.send(("watching", None))
                served = _serve_until(client, name, target, changed, timeout)
                if conn.recv()[0] != "report":
                    raise ValueError("expected ('report',) after a watch")
                conn.send(("served", served))
            elif command[0] == "finish":
                status = client.status()
                reporter = client._presence.reporter
                conn.send(("events", {
                    "stamps": stamps, "final_version": client.get(name).version, "state": status.state.value,
                    "rev": status.rev, "pid": os.getpid(), "reports": None if reporter is None else reporter.reports,
                }))  # fmt: skip
                return
            else:
                raise ValueError(f"unknown command {command!r}")
    finally:
        client.close()


def _serve_until(client: Any, name: str, target: int, changed: threading.Event, timeout: float) -> int | None:
    """Like a request handler: ``get()`` until it returns ``target``; the monotonic_ns it first did.

    Woken by ``on_change``; the 50 ms poll is only a safety net. A tight poll in 50 processes would
    take the CPU the listeners need on this 2-core machine and slow down what it measures.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        changed.wait(0.05)
        changed.clear()
        if client.get(name).version == target:
            return time.monotonic_ns()
    return None


def raw_worker(conn: Connection, kind: str, address: str, channel: str, sem: Semaphore) -> None:
    """The floor: a plain subscriber of ``channel`` at ``address`` in the main thread; stamps each message.

    ``kind`` (:data:`RAW_KINDS`): ``publish``: redis-py ``SUBSCRIBE`` and ``pubsub.listen()`` on the
    Redis URL ``address``; ``spublish``: the same with ``SSUBSCRIBE`` (``address`` is the slot's
    owner); ``notify``: psycopg ``LISTEN`` and ``notifies()``, ``address`` a libpq conninfo.
    """
    if kind == "notify":
        _raw_postgres(conn, address, channel, sem)
        return
    sharded = kind == "spublish"
    subscriber = redis.Redis.from_url(address)
    pubsub: Any = subscriber.pubsub()  # redis-py 8.2 leaves listen() untyped
    try:
        if sharded:
            pubsub.ssubscribe(channel)
        else:
            pubsub.subscribe(channel)
        confirmation, data_type = ("ssubscribe", "smessage") if sharded else ("subscribe", "message")
        deadline = time.monotonic() + 30
        while True:
            message = pubsub.get_message(timeout=1.0)
            if message is not None and message["type"] == confirmation:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {confirmation.upper()} confirmation")
        conn.send(("ready", os.getpid()))
        stamps: list[tuple[int, int]] = []  # (monotonic_ns, seq)
        for message in pubsub.listen():
            now = time.monotonic_ns()
            if message["type"] != data_type:
                continue
            data = message["data"]
            if data == RAW_STOP:
                break
            stamps.append((now, int(data[:8])))
            sem.release()
        conn.send(("events", {"stamps": stamps, "pid": os.getpid()}))
    finally:
        pubsub.close()
        subscriber.close()


def _raw_postgres(conn: Connection, conninfo: str, channel: str, sem: Semaphore) -> None:
    """The PostgreSQL floor: psycopg ``LISTEN`` on its own autocommit connection, ``notifies()``."""
    from psycopg import sql

    from promptreg.registry.postgres.conn import connect

    listener = connect(conninfo)
    try:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))  # active once it returns
        conn.send(("ready", os.getpid()))
        stamps: list[tuple[int, int]] = []  # (monotonic_ns, seq)
        stop = RAW_STOP.decode()
        for note in listener.notifies():
            now = time.monotonic_ns()
            if note.payload == stop:
                break
            stamps.append((now, int(note.payload[:8])))
            sem.release()
        conn.send(("events", {"stamps": stamps, "pid": os.getpid()}))
    finally:
        listener.close()


def await_all(sem: Semaphore, count: int, timeout: float) -> int:
    """Take ``count`` releases of ``sem`` within ``timeout`` seconds; returns how many did not come."""
    deadline = time.monotonic() + timeout
    for taken in range(count):
        if not sem.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return count - taken
    return 0


class RawPublisher:
    """The parent's side of the floor: ``PUBLISH``, ``SPUBLISH`` (RedisCluster) or ``NOTIFY``."""

    def __init__(self, kind: str, writer_url: str, conninfo: str, channel: str) -> None:
        self.kind = kind
        self.channel = channel
        self.conn: Any
        if self.kind == "notify":
            from promptreg.registry.postgres.conn import connect as pg_connect

            self.conn = pg_connect(conninfo)
        else:
            self.conn = connect(parse_redis_url(writer_url))

    def publish(self, payload: bytes) -> None:
        if self.kind == "notify":
            self.conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload.decode()))
        elif self.kind == "spublish":
            self.conn.spublish(self.channel, payload)
        else:
            self.conn.publish(self.channel, payload)

    def close(self) -> None:
        self.conn.close()


_PUBLISHING = frozenset({"PUBLISH", "SPUBLISH"})


def _publishes(args: tuple[Any, ...]) -> bool:
    """Whether a redis-py command publishes: ``PUBLISH``/``SPUBLISH``, or a write script's ``FCALL``
    told to publish (its last argument; ``DEFER`` leaves the publish to a later command)."""
    name = str(args[0]).upper() if args else ""
    return name in _PUBLISHING or (name == "FCALL" and str(args[-1]).upper() in _PUBLISHING)


class PublishClock:
    """The start of a move's clock, the same for both fleets: ``time.monotonic_ns()`` as the command
    that publishes is handed to the driver.

    For a promptreg write that is the write script's ``FCALL`` on Redis (the script writes, then
    publishes; or, on Sentinel and with ``wait_replicas``, the ``PUBLISH`` the registry sends once the
    write is confirmed), and on PostgreSQL the statement calling ``pg_notify`` (the transaction's
    ``COMMIT``, when the notification leaves, follows it: one more round trip, counted against the
    client). For the floor, its ``PUBLISH``/``SPUBLISH``/``pg_notify``. So what a write does in Python
    before its command (building the call, the write's id) is left out of both, and what the
    server does for the write before it publishes counts against the client. While
    :meth:`installed`, every ``execute_command`` of redis-py's clients (and psycopg's
    ``Connection.execute``) of this process stamps :attr:`stamp` when it publishes; the stamp is
    taken at the driver's entry for both fleets alike.
    """

    def __init__(self) -> None:
        self.stamp: int | None = None

    def start(self) -> int:
        """Before a move: forget the last stamp; returns the time now (the fallback start)."""
        self.stamp = None
        return time.monotonic_ns()

    @contextlib.contextmanager
    def installed(self) -> Iterator[PublishClock]:
        """Stamp every publishing command of this process (in the parent only: install after forking)."""
        targets: list[tuple[type, str, Callable[[tuple[Any, ...]], bool]]] = [
            (redis.Redis, "execute_command", _publishes),
            (RedisCluster, "execute_command", _publishes),
        ]
        with contextlib.suppress(ImportError):
            import psycopg

            targets.append((psycopg.Connection, "execute", lambda args: bool(args) and "pg_notify" in str(args[0])))
        originals = [(cls, name, cls.__dict__[name]) for cls, name, _ in targets]
        for cls, name, test in targets:
            setattr(cls, name, self._stamping(cls.__dict__[name], test))
        try:
            yield self
        finally:
            for cls, name, original in originals:
                setattr(cls, name, original)

    def _stamping(self, original: Callable[..., Any], test: Callable[[tuple[Any, ...]], bool]) -> Callable[..., Any]:
        def stamped(this: Any, *args: Any, **kwargs: Any) -> Any:
            if test(args):
                self.stamp = time.monotonic_ns()
            return original(this, *args, **kwargs)

        return stamped
