"""The tests' real PostgreSQL: :class:`devservers.local_postgres.LocalPostgresServer` plus fixtures.

``initdb`` once per session, then ``postgres`` on a free loopback port per server (trust auth, as the
``postgres`` user when the tests run as root), stopped by its process handle, also on failure.

Locally a missing PostgreSQL skips the tests with a message; in CI (``PROMPTREG_REQUIRE_POSTGRES=1``
or ``PROMPTREG_REQUIRE_REDIS=1``) it fails them instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devservers.local_postgres import LocalPostgresServer, postgres_bin_dir

if TYPE_CHECKING:
    import psycopg

REQUIRE_POSTGRES = "1" in (os.environ.get("PROMPTREG_REQUIRE_POSTGRES"), os.environ.get("PROMPTREG_REQUIRE_REDIS"))

__all__ = [
    "REQUIRE_POSTGRES",
    "PostgresServer",
    "need_postgres",
    "postgres_bin_dir",
    "postgres_raw",
    "postgres_server",
    "private_postgres_server",
]


def need_postgres() -> Path:
    """The binaries' directory, or skip (fail in CI) naming what is missing."""
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        message = "PostgreSQL (initdb, postgres) is not installed (apt-get install postgresql)"
        if REQUIRE_POSTGRES:
            pytest.fail(f"PROMPTREG_REQUIRE_POSTGRES=1 but {message}")
        pytest.skip(f"{message}; PostgreSQL tests skipped")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if REQUIRE_POSTGRES:
            pytest.fail("PROMPTREG_REQUIRE_POSTGRES=1 but psycopg is not installed (pip install psycopg[binary])")
        pytest.skip("psycopg is not installed (pip install 'psycopg[binary]>=3.2'); PostgreSQL tests skipped")
    return bin_dir


class PostgresServer(LocalPostgresServer):
    """A PostgreSQL server of the tests; skips (fails in CI) when PostgreSQL is not installed."""

    def __init__(self) -> None:
        need_postgres()
        super().__init__()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the session (tests isolate themselves by namespace)."""
    need_postgres()
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def private_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test alone: for fault tests that stop or restart it."""
    need_postgres()
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.cleanup()


_TABLES = (
    "promptreg_namespaces", "promptreg_prompts", "promptreg_versions", "promptreg_labels",
    "promptreg_rollouts", "promptreg_audit", "promptreg_partials", "promptreg_protections", "promptreg_requests",
    "promptreg_approvals",
)  # fmt: skip


def postgres_raw(url: str, namespace: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row the namespace holds in every promptreg table, in a stable order (for "nothing changed")."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        out: dict[str, list[tuple[object, ...]]] = {}
        for table in _TABLES:
            try:
                rows = conn.execute(f"SELECT * FROM {table} WHERE namespace = %s", (namespace,)).fetchall()
            except psycopg.errors.UndefinedTable:
                rows = []
            out[table] = sorted(rows, key=repr)
        return out


def owner(registry: Any) -> psycopg.Connection[Any]:
    """A new autocommit connection as a :class:`~promptreg.PostgresPromptRegistry`'s own role (the owner in tests)."""
    import psycopg

    return psycopg.connect(registry._conninfo, autocommit=True)


def registry_rows(registry: Any) -> dict[str, list[tuple[object, ...]]]:
    """:func:`postgres_raw` of a :class:`~promptreg.PostgresPromptRegistry`'s namespace (as its owner connects)."""
    return postgres_raw(registry._conninfo, registry.namespace)


@pytest.fixture
def fresh_db(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database on the session's server, dropped afterwards: for tests of the schema itself."""
    import psycopg

    name = "db" + uuid.uuid4().hex[:10]
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE {name} WITH (FORCE)")
