"""The one atomic file write: a reader sees the whole old file or the whole new one, never a part,
and a crash right after the call keeps the new file.

Used by the JSON-file registry and by the client's last-known-good snapshot.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


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
