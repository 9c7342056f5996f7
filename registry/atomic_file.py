"""The one atomic file write: a reader sees the whole old file or the whole new one, never a part,
and a crash right after the call keeps the new file; and the one wait for a file lock.

Used by the JSON-file registry, its webhooks sidecar and the client's last-known-good snapshot.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path

from promptreg.registry.errors import RegistryUnavailableError


def lock_within(fd: int, lock_path: Path, timeout: float, holder: str) -> None:
    """Take an exclusive ``flock`` on ``fd`` (the open ``lock_path``), polling with backoff up to
    ``timeout`` seconds. Raises :class:`~promptreg.RegistryUnavailableError` naming ``holder`` (who
    else may hold it) when the time is up, or when the lock cannot be taken at all."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RegistryUnavailableError(
                    f"could not lock {lock_path} within {timeout:g} s: {holder} holds it"
                ) from None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.05)
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot lock {lock_path}: {exc}") from exc


def write_atomically(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``data``: a temp file in the same folder, fsync, rename, fsync the folder.

    The folder is created if needed. ``mode`` sets the file's permission bits (default: those of
    the file being replaced, else 0o644). ``path`` must be the real file, not a symbolic link to it
    (the rename would replace the link): resolve it first. Raises ``OSError``; the temp file is
    removed on any failure.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode is None:
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)  # makes the rename itself durable
    finally:
        os.close(dir_fd)
