"""The servers ``promptreg demo`` runs against: the Redis or PostgreSQL a URL names, else a private
``redis-server`` on a free loopback port in a temp dir, else an in-process fakeredis; always stopped."""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterator

import redis

from promptreg.registry.cli.local_server import LocalRedisServer
from promptreg.registry.errors import ConfigurationError, PromptRegistryError, RegistryUnavailableError
from promptreg.registry.urls import POSTGRES_SCHEMES, redact_url, url_scheme


class DemoError(PromptRegistryError):
    """``promptreg demo`` could not run: no server could be started, or a worker failed. The CLI's
    own error (printed as one line like every other), not part of the library's error tree."""


@contextlib.contextmanager
def private_redis_server(executable: str) -> Iterator[str]:
    """Run ``redis-server`` on a free 127.0.0.1 port in a temp dir; yields its URL; always stops it.

    Raises :class:`DemoError` if it does not answer within 10 seconds.
    """
    try:
        server = LocalRedisServer(executable).start()
    except (RegistryUnavailableError, ConfigurationError) as exc:
        raise DemoError(str(exc)) from exc
    try:
        yield server.url
    finally:
        server.cleanup()


@contextlib.contextmanager
def fake_redis_server() -> Iterator[tuple[str, redis.Redis]]:
    """Serve an in-process fakeredis (RESP, Lua and pub/sub) on a free 127.0.0.1 port.

    Yields its URL and an in-process client of the same server. Write through that client: the
    TCP server (fakeredis 2.40) drops a connection whose command fails, and a first ``EVALSHA``
    fails with ``NOSCRIPT`` by design. Raises :class:`DemoError` when fakeredis (the ``demo``
    extra) is not installed.
    """
    try:
        from fakeredis import FakeRedis, TcpFakeServer
    except ImportError as exc:
        raise DemoError(
            "fakeredis is not installed: pip install 'fakeredis[lua]>=2.26' (the [demo] extra), or install redis-server"
        ) from exc
    server = TcpFakeServer(("127.0.0.1", 0), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, name="promptreg-demo-fakeredis", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{server.server_address[1]}/0", FakeRedis(server=server.fake_server)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@contextlib.contextmanager
def demo_server(url: str | None, choice: str = "auto") -> Iterator[tuple[str, str, redis.Redis | None]]:
    """Yields ``(url, description, writer)`` of the Redis the demo uses, starting one if needed.

    ``writer`` is the client the demo must write through (fakeredis only), else ``None``.

    ``url`` given: that one. Else ``choice`` ``auto`` prefers an installed ``redis-server`` and falls
    back to fakeredis; ``redis-server`` / ``fakeredis`` force one. Raises :class:`DemoError`.
    """
    if url:
        kind = "PostgreSQL" if url_scheme(url) in POSTGRES_SCHEMES else "Redis"
        yield url, f"the {kind} at {redact_url(url)}", None
        return
    executable = shutil.which("redis-server")
    if choice == "redis-server" and executable is None:
        raise DemoError("redis-server is not installed (apt-get install redis-server)")
    if choice != "fakeredis" and executable is not None:
        with private_redis_server(executable) as private_url:
            yield private_url, f"a private redis-server ({executable}) on {private_url}", None
        return
    why = " (no redis-server installed)" if choice == "auto" else ""
    with fake_redis_server() as (fake_url, writer):
        yield fake_url, f"an in-process fakeredis server on {fake_url}{why}", writer
