"""The last-known-good file: the client's state on disk, so a service can boot during an outage.

The file is one msgpack map::

    {"format": "promptreg-client-snapshot", "schema": 1, "namespace": str, "rev": int,
     "written_at": float, "pointers": {name: {label: number}},
     "versions": [[name, number, prompt_text, created_at (ISO 8601), author, message, metadata,
                   messages (None for text), config], ...],
     "rollouts": {name: {label: [candidate, basis points]}}}

``rollouts`` is optional (a file without it, or a reader older than rollouts, serves the labels).

Schema 1 files (rows without the last two columns, written before chat versions) are still read.

:class:`LastKnownGood` is a client's file: when it is read and written. It holds only the versions
the labels point at. It is written to a temporary file in the same
directory, fsynced and renamed over the old one, so a reader sees the old file or the new one, never
half of one (several processes may share one path). No connection URL is stored: it may hold a
password.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from promptreg.client.cache import Cache
from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.client.status import ClientState, StatusTracker
from promptreg.registry.atomic_file import write_atomically
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.models import PromptVersion, PromptVersionLike

logger = logging.getLogger("promptreg.client")

FORMAT = "promptreg-client-snapshot"
SCHEMA = 2
_READABLE = (1, 2)
SNAPSHOT_INTERVAL = 1.0
"""At most one last-known-good write per this many seconds (the last change is always written)."""


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """What a snapshot file held."""

    rev: int
    written_at: float
    pointers: dict[str, dict[str, int]]
    versions: dict[tuple[str, int], CachedVersion]
    rollouts: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)


def save_snapshot(
    path: Path,
    namespace: str,
    rev: int,
    pointers: Mapping[str, Mapping[str, int]],
    versions: Mapping[tuple[str, int], PromptVersionLike],
    rollouts: Mapping[str, Mapping[str, tuple[int, int]]] | None = None,
) -> None:
    """Write the state atomically to ``path`` (temp file, fsync, rename, folder fsync). Raises ``OSError``."""
    rollouts = rollouts or {}
    needed = sorted(
        {(name, number) for name, labels in pointers.items() for number in labels.values()}
        | {(name, candidate) for name, labels in rollouts.items() for candidate, _ in labels.values()}
    )
    rows = []
    for name, number in needed:
        v = versions[name, number]
        messages = None if v.messages is None else list(v.messages)
        text = v.text_once() if isinstance(v, CachedVersion) else v.prompt_text  # no second copy kept
        rows.append([name, number, text, v.created_at.isoformat(), v.author, v.message, v.metadata,
                     messages, v.config])  # fmt: skip
    payload = msgpack.packb(
        {
            "format": FORMAT,
            "schema": SCHEMA,
            "namespace": namespace,
            "rev": rev,
            "written_at": time.time(),
            "pointers": {name: dict(labels) for name, labels in pointers.items()},
            "versions": rows,
            "rollouts": {
                name: {label: list(pair) for label, pair in labels.items()} for name, labels in rollouts.items()
            },
        }
    )
    write_atomically(path, payload)


def load_snapshot(path: Path, namespace: str) -> LoadedSnapshot | None:
    """Read a snapshot written by :func:`save_snapshot` for ``namespace``; ``None`` if there is no file.

    Raises :class:`~promptreg.RegistryCorruptError` if the file cannot be read as one (corrupt,
    truncated, another format or another namespace). The file is never modified.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RegistryCorruptError(f"cannot read snapshot {path}: {exc}") from exc
    try:
        raw: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RegistryCorruptError(f"snapshot {path} is not msgpack: {exc}") from exc
    try:
        return _parse(raw, namespace)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # pydantic's ValidationError is a ValueError
        raise RegistryCorruptError(f"snapshot {path} is malformed: {exc!r}") from exc


def _parse(raw: Any, namespace: str) -> LoadedSnapshot:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ValueError("not a promptreg client snapshot")
    if raw.get("schema") not in _READABLE:
        raise ValueError(f"unsupported schema {raw.get('schema')!r}")
    if raw.get("namespace") != namespace:
        raise ValueError(f"snapshot is of namespace {raw.get('namespace')!r}, not {namespace!r}")
    rev = raw["rev"]
    if not isinstance(rev, int) or rev < 0:
        raise ValueError(f"bad rev {rev!r}")
    pointers: dict[str, dict[str, int]] = {}
    for name, labels in raw["pointers"].items():
        if not isinstance(name, str) or not isinstance(labels, dict):
            raise TypeError(f"bad pointers entry {name!r}")
        for label, number in labels.items():
            if not isinstance(label, str) or not isinstance(number, int):
                raise TypeError(f"bad label {label!r} of {name!r}")
        pointers[name] = dict(labels)
    versions: dict[tuple[str, int], CachedVersion] = {}
    for row in raw["versions"]:
        name, number, text, created_at, author, message, metadata, *chat = row
        if len(chat) > 2:
            raise ValueError(f"version row of {len(row)} fields")
        messages, config = [*chat, None, None][:2]
        versions[name, number] = cached_from_model(  # validated: a file is input
            PromptVersion(
                version=number,
                prompt_text=text,
                created_at=datetime.fromisoformat(created_at),
                author=author,
                message=message,
                metadata=metadata,
                messages=messages,
                config=config or {},
            )
        )
    rollouts: dict[str, dict[str, tuple[int, int]]] = {}
    for name, labels in (raw.get("rollouts") or {}).items():
        for label, (candidate, points) in labels.items():
            if not (isinstance(candidate, int) and isinstance(points, int) and 0 < points < 10_000):
                raise TypeError(f"bad rollout of {name!r} {label!r}")
            rollouts.setdefault(name, {})[label] = (candidate, points)
    missing = {(n, v) for n, labels in pointers.items() for v in labels.values()} - versions.keys()
    missing |= {(n, c) for n, labels in rollouts.items() for c, _ in labels.values()} - versions.keys()
    if missing:
        raise ValueError(f"labels point at versions not in the file: {sorted(missing)[:5]}")
    return LoadedSnapshot(rev, float(raw["written_at"]), pointers, versions, rollouts)


class LastKnownGood:
    """A client's last-known-good file at ``path``: loaded at start, before the registry's state;
    written after changes (at most once per :data:`SNAPSHOT_INTERVAL`) while ``live``, and at close."""

    def __init__(self, path: Path, namespace: str) -> None:
        self.path = path
        self.namespace = namespace
        self._written: object = None  # the cache generation last written
        self._due = 0.0

    def load(self, cache: Cache, status: StatusTracker) -> bool:
        """Fill ``cache`` from the file if no state was loaded yet (status ``stale``); ``False`` if
        there is no file, it cannot be read (logged) or a state came first."""
        try:
            loaded = load_snapshot(self.path, self.namespace)
        except RegistryCorruptError as exc:
            logger.warning("promptreg: ignoring the last-known-good file: %s", exc)
            return False
        if loaded is None:
            return False
        for (name, _number), version in loaded.versions.items():
            cache.add_version(name, version)
        if cache.replace(loaded.rev, loaded.pointers, only_if_empty=True, rollouts=loaded.rollouts) is None:
            return False  # a state was loaded already
        self._written = cache.generation
        status.serving_snapshot()
        return True

    def write_if_due(self, cache: Cache, status: StatusTracker) -> None:
        """:meth:`write` unless the last write is younger than :data:`SNAPSHOT_INTERVAL`."""
        if time.monotonic() >= self._due:
            self.write(cache, status)

    def write(self, cache: Cache, status: StatusTracker, *, force: bool = False) -> None:
        """Write ``cache`` if it changed since the last write and the client is ``live`` (any state
        with ``force``). An ``OSError`` is logged; the next try waits ten intervals."""
        generation = cache.generation
        if not cache.loaded or generation == self._written:
            return
        if not force and status.state is not ClientState.LIVE:
            return  # only the registry's state is worth keeping as last-known-good
        try:
            rev, pointers, rollouts = cache.state_copy()
            save_snapshot(self.path, self.namespace, rev, pointers, cache.versions, rollouts)
        except OSError as exc:
            logger.warning("promptreg: cannot write the last-known-good file %s: %s", self.path, exc)
            self._due = time.monotonic() + 10 * SNAPSHOT_INTERVAL
            return
        self._written = generation
        self._due = time.monotonic() + SNAPSHOT_INTERVAL
