"""The tests' real ``redis-server``: :class:`promptreg.registry.cli.local_server.LocalRedisServer` plus helpers."""

from __future__ import annotations

import shutil

from promptreg.registry.cli.local_server import LocalRedisServer, free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")

__all__ = ["REDIS_SERVER", "RedisServer", "free_port", "wait_until"]


class RedisServer(LocalRedisServer):
    """A redis-server a test started on a free loopback port; the test stops it."""
