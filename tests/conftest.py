"""Shared fixtures: real redis-server, fakeredis, fresh namespaces, backends."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# The shared helpers assert too: pytest explains their failures as it does a test module's.
pytest.register_assert_rewrite("tests.backends", "tests.helpers")

from promptreg.registry import PromptRegistry
from tests.backends import METADATA_LIMIT, TEXT_LIMIT, Backend, Cli, kinds, open_backend
from tests.ha_servers import ClusterDeployment, SentinelDeployment
from tests.postgres_server import fresh_db, postgres_server, private_postgres_server  # noqa: F401 (fixtures)
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
    from devservers.local_postgres import remove_template

    remove_template()


@pytest.fixture(params=kinds())
def backend(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """Every backend (:data:`tests.backends.KINDS`): a test that takes it runs once on each. A module
    that applies to some only overrides it with ``@pytest.fixture(params=kinds(...))``."""
    with open_backend(request.param, request, namespace, tmp_path) as opened:
        yield opened


@pytest.fixture
def any_registry(backend: Backend) -> PromptRegistry:
    """One registry with default limits on every backend (closed after the test)."""
    return backend.make()


@pytest.fixture
def reg(backend: Backend) -> PromptRegistry:
    """A registry on every backend with small limits (texts up to 4 x TEXT_LIMIT bytes), for the contract."""
    return backend.make(max_text_bytes=TEXT_LIMIT * 4, max_metadata_bytes=METADATA_LIMIT * 4)


@pytest.fixture(params=kinds("file", "redis", "postgres"))
def backend_env(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> dict[str, str]:
    """The environment that points ``promptreg`` at one registry, as users set it: the JSON file, a
    real redis-server, a real PostgreSQL (each test its own file or namespace)."""
    if request.param == "file":
        return {"PROMPTREG_URL": f"file://{tmp_path / 'registry.json'}", "PROMPTREG_NAMESPACE": ""}
    if request.param == "postgres":
        return {"PROMPTREG_URL": request.getfixturevalue("postgres_server").url(), "PROMPTREG_NAMESPACE": namespace}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"PROMPTREG_URL": server.url, "PROMPTREG_NAMESPACE": namespace}


@pytest.fixture
def run(backend_env: dict[str, str], tmp_path: Path) -> Cli:
    """``promptreg`` in-process (click's runner) against ``backend_env``'s registry."""
    return Cli(backend_env, tmp_path)
