"""The tests' real PostgreSQL: ``initdb`` once per session, then ``postgres`` on a free loopback port.

Debian's ``postgresql`` package puts its binaries in ``/usr/lib/postgresql/<version>/bin`` (not on
PATH); they are looked up there too. PostgreSQL refuses to run as root, so when the tests run as root
the server runs as the ``postgres`` system user (else ``nobody``), in a temp dir it owns. Trust
authentication on loopback only. Each server is the test's own process (``subprocess.Popen``) and is
stopped by that handle at the end, also on failure.

Locally a missing PostgreSQL skips the tests with a message; in CI (``PROMPTREG_REQUIRE_POSTGRES=1``
or ``PROMPTREG_REQUIRE_REDIS=1``) it fails them instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from registry.cli.local_server import free_port

REQUIRE_POSTGRES = "1" in (os.environ.get("PROMPTREG_REQUIRE_POSTGRES"), os.environ.get("PROMPTREG_REQUIRE_REDIS"))


def postgres_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: PATH first, then Debian's newest version."""
    found = shutil.which("initdb")
    if found and shutil.which("postgres"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0))
    for candidate in reversed(candidates):
        if os.access(os.path.join(candidate, "initdb"), os.X_OK):
            return Path(candidate)
    return None


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
            pytest.fail("PROMPTREG_REQUIRE_POSTGRES=1 but psycopg is not installed (pip install 'promptreg[postgres]')")
        pytest.skip("psycopg is not installed (pip install 'promptreg[postgres]'); PostgreSQL tests skipped")
    return bin_dir


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


class _Template:
    """One ``initdb`` per session; every server starts from a copy (about 10x faster than initdb)."""

    path: Path | None = None

    @classmethod
    def get(cls, bin_dir: Path, root: Path, user: pwd.struct_passwd | None) -> Path:
        if cls.path is None or not cls.path.exists():
            path = root / "template"
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(path), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-locale", "--no-sync"],
                check=True, capture_output=True, timeout=120, **_user_kwargs(user),
            )  # fmt: skip
            cls.path = path
        return cls.path


def _user_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


_SESSION_ROOT: Path | None = None


def _session_root(user: pwd.struct_passwd | None) -> Path:
    global _SESSION_ROOT
    if _SESSION_ROOT is None or not _SESSION_ROOT.exists():
        _SESSION_ROOT = Path(tempfile.mkdtemp(prefix="promptreg-pg-"))
        if user is not None:
            os.chown(_SESSION_ROOT, user.pw_uid, user.pw_gid)
    return _SESSION_ROOT


class PostgresServer:
    """A PostgreSQL server of the tests: its own data dir (a copy of the template), port and process."""

    def __init__(self) -> None:
        self.bin_dir = need_postgres()
        self.user = _run_as()
        root = _session_root(self.user)
        template = _Template.get(self.bin_dir, root, self.user)
        self.data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=root))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.data_dir, 0o700)
        cp = ["cp", "-a", f"{template}/.", str(self.data_dir)]
        subprocess.run(cp, check=True, timeout=60, **_user_kwargs(self.user))

    def url(self, database: str = "postgres", **query: str) -> str:
        """A ``postgresql://`` URL of this server (user ``postgres``, trust auth)."""
        extra = "&".join(f"{k}={v}" for k, v in query.items())
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + (f"?{extra}" if extra else "")

    def start(self, timeout: float = 30.0) -> PostgresServer:
        """Start ``postgres`` and wait until it accepts connections."""
        import psycopg

        log = open(self.log_path, "ab")  # noqa: SIM115 (the server writes it for its whole life)
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, **_user_kwargs(self.user),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start within {timeout} s: {self.log()}") from None
                time.sleep(0.05)

    def stop(self, timeout: float = 20.0) -> None:
        """Fast shutdown (SIGINT: abort transactions, disconnect clients); SIGKILL if it hangs."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def restart(self) -> None:
        """Stop and start again on the same port with the same data."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove its data dir."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.log_path.unlink(missing_ok=True)

    def log(self) -> str:
        """The tail of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


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


_TABLES = ("promptreg_namespaces", "promptreg_prompts", "promptreg_versions", "promptreg_labels", "promptreg_audit")


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
