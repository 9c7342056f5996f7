"""A private PostgreSQL on a free loopback port, for the tests and the benchmarks.

``initdb`` runs once per process into a template; every server starts from a copy of it (about 10x
faster than ``initdb``). Debian's ``postgresql`` package puts its binaries in
``/usr/lib/postgresql/<version>/bin`` (not on PATH); they are looked up there too. PostgreSQL refuses
to run as root, so as root the server runs as the ``postgres`` system user (else ``nobody``), in a
temp dir it owns. Trust authentication on 127.0.0.1 only, ``fsync=off``: a throw-away server, not for
production. Each server is the caller's own process (``subprocess.Popen``), stopped by that handle.
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
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from promptreg.registry.cli.local_server import free_port
from promptreg.registry.errors import RegistryUnavailableError


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


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user to run PostgreSQL as when we are root (``None``: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RegistryUnavailableError("running as root and neither a postgres nor a nobody user exists")


def _user_kwargs(user: pwd.struct_passwd | None) -> dict[str, Any]:
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


class _Template:
    """One ``initdb`` per process, in a root dir shared by every server of the process."""

    root: Path | None = None
    path: Path | None = None

    @classmethod
    def get(cls, bin_dir: Path, user: pwd.struct_passwd | None) -> Path:
        if cls.root is None or not cls.root.exists():
            cls.root = Path(tempfile.mkdtemp(prefix="promptreg-pg-"))
            if user is not None:
                os.chown(cls.root, user.pw_uid, user.pw_gid)
            cls.path = None
        if cls.path is None or not cls.path.exists():
            path = cls.root / "template"
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(path), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-locale", "--no-sync"],
                check=True, capture_output=True, timeout=120, **_user_kwargs(user),
            )  # fmt: skip
            cls.path = path
        return cls.path


def remove_template() -> None:
    """Remove this process's ``initdb`` template (the next server makes a new one)."""
    root, _Template.root, _Template.path = _Template.root, None, None
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)


class LocalPostgresServer:
    """A PostgreSQL server of its own: a data dir (a copy of the template), a free port, a process.

    ``preexec_fn`` runs in the server process before exec (e.g. to make it die with its parent).
    Raises :class:`~promptreg.RegistryUnavailableError` when PostgreSQL or psycopg is not installed,
    or the server does not start.
    """

    def __init__(self, *, preexec_fn: Callable[[], None] | None = None, max_connections: int = 200) -> None:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            raise RegistryUnavailableError(
                "PostgreSQL (initdb, postgres) is not installed (apt-get install postgresql)"
            )
        self.bin_dir = bin_dir
        self.user = _run_as()
        template = _Template.get(self.bin_dir, self.user)
        self.data_dir = Path(tempfile.mkdtemp(prefix="data-", dir=template.parent))
        self.port = free_port()
        self.preexec_fn = preexec_fn
        self.max_connections = max_connections
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

    def start(self, timeout: float = 30.0) -> Self:
        """Start ``postgres`` and wait until it accepts connections."""
        try:
            import psycopg
        except ImportError as exc:
            raise RegistryUnavailableError(
                "psycopg is not installed: pip install 'psycopg[binary]>=3.2' (the [postgres] extra)"
            ) from exc
        log = open(self.log_path, "ab")  # noqa: SIM115 (the server writes it for its whole life)
        self.process = subprocess.Popen(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=", "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", f"max_connections={self.max_connections}"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.preexec_fn, **_user_kwargs(self.user),
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RegistryUnavailableError(f"postgres exited with {self.process.returncode}: {self.log()}")
            try:
                psycopg.connect(self.url(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RegistryUnavailableError(f"postgres did not start within {timeout} s: {self.log()}") from None
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
