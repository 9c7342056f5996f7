"""Shared fixtures: real redis-server, fakeredis, fresh namespaces, backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.redis_server import REDIS_SERVER, RedisServer

REQUIRE_REDIS = os.environ.get("PROMPTREG_REQUIRE_REDIS") == "1"


def _need_redis_server() -> None:
    if REDIS_SERVER is None:
        if REQUIRE_REDIS:
            pytest.fail("PROMPTREG_REQUIRE_REDIS=1 but redis-server is not on PATH")
        pytest.skip("redis-server is not installed (apt-get install redis-server); real-Redis tests skipped")


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``redis`` start their own server: skip (or fail in CI) when there is none."""
    if item.get_closest_marker("redis") is not None:
        _need_redis_server()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session (tests isolate themselves by namespace)."""
    _need_redis_server()
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test alone, with AOF on: for fault tests that kill or restart it."""
    _need_redis_server()
    server = RedisServer(appendonly=True).start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace, so tests sharing a server never see each other's keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    return tmp_path / "registry.json"
