"""Shared fixtures: real redis-server, fakeredis, fresh namespaces, backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ha_servers import ClusterDeployment, SentinelDeployment
from tests.postgres_server import postgres_server, private_postgres_server  # noqa: F401 (fixtures)
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


def need_binaries(*names: str) -> None:
    """Skip (or fail in CI, ``PROMPTREG_REQUIRE_REDIS=1``) when a server binary is not installed."""
    from tests.ha_servers import missing_binaries

    missing = missing_binaries(*names)
    if missing:
        if REQUIRE_REDIS:
            pytest.fail(f"PROMPTREG_REQUIRE_REDIS=1 but {', '.join(missing)} not on PATH")
        pytest.skip(
            f"{', '.join(missing)} not installed (apt-get install redis-server redis-sentinel); HA tests skipped"
        )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterDeployment]:
    """One 3-master Redis Cluster for the session (tests isolate themselves by namespace)."""
    need_binaries("redis-server", "redis-cli")
    cluster = ClusterDeployment().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def sentinel_deployment() -> Iterator[SentinelDeployment]:
    """A primary, two replicas and three sentinels of this test alone (it may fail them over)."""
    need_binaries("redis-server", "redis-sentinel")
    deployment = SentinelDeployment().start()
    try:
        yield deployment
    finally:
        deployment.cleanup()


@pytest.fixture
def namespace() -> str:
    """A fresh key namespace, so tests sharing a server never see each other's keys."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def registry_file(tmp_path: Path) -> Path:
    return tmp_path / "registry.json"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The PostgreSQL ``initdb`` template of this run is removed with it (its servers are stopped)."""
    from tests.servers.local_postgres import remove_template

    remove_template()
