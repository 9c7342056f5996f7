"""The tests' real ``redis-server``: :class:`registry.cli.local_server.LocalRedisServer` plus helpers."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

import redis

from registry.cli.local_server import LocalRedisServer, free_port

REDIS_SERVER = shutil.which("redis-server")

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "wait_until"]


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` passes; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class RedisServer(LocalRedisServer):
    """A redis-server a test started on a free loopback port; the test stops it."""

    def client(self) -> redis.Redis:
        """A plain client of this server (bytes responses)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)
