"""The subscriber connection read directly, for the listener of
:class:`~promptreg.client.redis.feed.RedisFeed`: fewer system calls per change message than redis-py's
``PubSub.get_message``, and no ``dict`` built around a change message.

Measured with strace on a woken listener: redis-py's ``get_message`` makes about eight system calls
per message (``poll()`` for the wait; a closed-socket probe, ``poll()`` and ``recv(MSG_PEEK)``; the
socket's timeout set and restored, ``ioctl`` twice; then ``poll()`` and ``recv()`` for the read).
:class:`SubscriberReads` makes three: its ``poll()``, then the socket's ``recv_into`` (Python's own
``poll()`` and ``recv()``; the socket keeps the timeout redis-py gave it, so redis-py's reads of the
same connection, the safety poll's, behave as before). The replies are parsed by the connection's
own hiredis reader, so whatever is left in it is what redis-py reads next.
"""

from __future__ import annotations

import select
import socket
from typing import Any

import redis

CHANGE_KINDS = frozenset({b"message", b"smessage", "message", "smessage"})
"""The first element of a reply that carries a change message (bytes, or str on a client that decodes)."""


class SubscriberReads:
    """One subscriber connection's socket and hiredis reader (module docstring). Only for a plain
    TCP socket parsed by hiredis (:meth:`of` returns ``None`` otherwise): TLS keeps decrypted bytes
    ``poll()`` cannot see."""

    __slots__ = ("buffer", "conn", "nothing", "poller", "reader", "sock")

    def __init__(self, conn: Any, sock: Any, reader: Any, nothing: object) -> None:
        self.conn = conn
        self.sock = sock
        self.reader = reader
        self.nothing = nothing
        """What the reader returns when no whole reply is buffered (redis-py's marker, or ``False``)."""
        self.poller = select.poll()
        self.poller.register(sock, select.POLLIN)
        self.buffer = bytearray(65536)

    @classmethod
    def of(cls, pubsub: Any) -> SubscriberReads | None:
        """Direct reads of ``pubsub``'s connection, or ``None`` where only redis-py may read it."""
        conn = pubsub.connection
        sock = getattr(conn, "_sock", None)
        reader = getattr(getattr(conn, "_parser", None), "_reader", None)
        if type(sock) is not socket.socket or reader is None or not hasattr(reader, "has_data") or reader.has_data():
            return None
        return cls(conn, sock, reader, reader.gets())

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for data and read it into the reader; whether any came.

        Raises ``redis.ConnectionError`` once the connection is closed: by the server, or by another
        thread (``disconnect()`` to interrupt the listener; checked first, so a closed descriptor's
        number, reused meanwhile, is never polled).
        """
        if self.conn._sock is not self.sock:
            raise redis.ConnectionError("the subscriber connection was closed")
        if not self.poller.poll(timeout * 1000):
            return False
        self.fill()
        return True

    def fill(self) -> None:
        """Read what the socket holds into the reader (raises ``ConnectionError`` on a closed connection)."""
        try:
            count = self.sock.recv_into(self.buffer)
        except OSError as exc:  # as redis-py reports it: the listener reconnects
            raise redis.ConnectionError(f"Error while reading from the subscriber connection: {exc}") from exc
        if not count:
            raise redis.ConnectionError("the server closed the subscriber connection")
        self.reader.feed(self.buffer, 0, count)
