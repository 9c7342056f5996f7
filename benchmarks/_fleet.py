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
"""

from __future__ import annotations

import os
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Semaphore
from typing import Any

import redis

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
    ``("finish",)``: reply ``("events", {...})`` with every stamp, the final version and status.
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
                conn.send(("events", {
                    "stamps": stamps, "final_version": client.get(name).version, "state": status.state.value,
                    "rev": status.rev, "pid": os.getpid(),
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
