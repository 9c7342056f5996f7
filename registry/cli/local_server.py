"""A private ``redis-server`` on a free loopback port, for the demo, the benchmarks and the tests.

It runs in its own temp dir, listens on 127.0.0.1 only, and is stopped by the process that started it
(:meth:`LocalRedisServer.cleanup`, or the ``with`` block). Not for production: use your own Redis.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

import redis

from promptreg.registry.errors import ConfigurationError, RegistryUnavailableError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until it is truthy or ``timeout`` seconds pass; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


class LocalRedisServer:
    """One ``redis-server`` process in a temp dir on a free 127.0.0.1 port.

    ``appendonly=True`` turns on AOF with ``appendfsync always``, so a ``kill -9`` and a
    :meth:`start` on the same port and dir keep every acknowledged write. ``preexec_fn`` runs in the
    server's process before exec (e.g. to make it die with its parent). Raises
    :class:`~promptreg.ConfigurationError` when no ``redis-server`` is installed, and
    :class:`~promptreg.RegistryUnavailableError` when it does not answer within ``start_timeout`` seconds.
    """

    def __init__(
        self,
        executable: str | None = None,
        *,
        appendonly: bool = False,
        extra_args: tuple[str, ...] = (),
        preexec_fn: Callable[[], None] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        found = executable or shutil.which("redis-server")
        if found is None:
            raise ConfigurationError("redis-server is not installed (apt-get install redis-server)")
        self.executable = found
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="promptreg-redis-"))
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.preexec_fn = preexec_fn
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.choose_port: Callable[[], int] | None = None
        """Picks another port when the first start finds the port taken; ``None``: :func:`free_port`,
        and only while :attr:`port` is the one the constructor picked (a port the caller set is kept)."""
        self._picked = self.port
        self._started = False

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A plain client of this server (bytes responses, 5 s socket timeout)."""
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    @property
    def log_path(self) -> Path:
        """The server's log file."""
        return self.dir / "redis.log"

    def start(self) -> Self:
        """Start the server (again, after :meth:`kill` or :meth:`stop`) and wait until it answers.

        A server of this object's that is running already is left as it is (``with server:`` on a
        started server does not start a second one, whose handle would be lost). The first start
        moves to another free port when the one picked is taken by the time the server binds it
        (another process can get it in between, as an outgoing connection's port); a restart keeps
        its port, which clients know.
        """
        if self.process is not None and self.process.poll() is None:
            return self
        for _ in range(4):
            try:
                return self._start()
            except RegistryUnavailableError:
                movable = self.choose_port is not None or self.port == self._picked
                if self._started or not movable or "already in use" not in self._log_tail():
                    raise
                self.port = self._picked = (self.choose_port or free_port)()
        return self._start()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")[-2000:]
        except OSError:
            return ""

    def _start(self) -> Self:
        args = [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip
        try:
            self.process = subprocess.Popen(
                args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=self.preexec_fn
            )
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot run {self.executable}: {exc}") from exc
        deadline = time.monotonic() + self.start_timeout
        # Our own process must be the one answering: another server on the port is no success.
        while self._answering_pid() != self.process.pid:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RegistryUnavailableError(f"redis-server exited with code {code} (log: {self.log_path})")
            if time.monotonic() > deadline:
                self.stop()
                raise RegistryUnavailableError(f"redis-server did not answer on port {self.port} in time")
            time.sleep(0.02)
        self._started = True
        return self

    def _answering_pid(self) -> int | None:
        """The process id of the server answering on our port (``None``: none answers, or it is loading)."""
        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5) as c:
                c.ping()  # refused while the server still loads its data (-LOADING): not ready yet
                return int(c.info("server")["process_id"])
        except (redis.RedisError, KeyError, ValueError):
            return None

    def kill(self) -> None:
        """``kill -9``: no shutdown, no final save."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s). Idempotent."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def cleanup(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.cleanup()
