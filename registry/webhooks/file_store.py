"""The webhooks of a JSON-file registry: a sidecar file beside it, ``REGISTRY.webhooks.json``.

Locked as the registry file is (:mod:`promptreg.registry.file_store`): every change takes an
exclusive ``flock`` on ``REGISTRY.webhooks.json.lock``, re-reads the file, applies the change and
replaces the file atomically (temp file, fsync, rename, fsync of the folder); readers take no lock
and see a whole old or a whole new file. The file is created readable by its owner only (a URL may
carry credentials). The lease's expiry is wall-clock time: workers sharing the file share a clock.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptreg.registry.atomic_file import lock_within, write_atomically
from promptreg.registry.errors import InvalidInputError, RegistryCorruptError, RegistryUnavailableError
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.validation import check_json_depth
from promptreg.registry.webhooks.errors import LeaseLostError, WebhookNotFoundError
from promptreg.registry.webhooks.models import (
    MAX_DEAD_LETTERS,
    MAX_ENDPOINTS,
    Cursor,
    DeadLetter,
    Lease,
    WebhookEndpoint,
)

MAX_SIDECAR_BYTES: Final = 256 * 1024 * 1024
"""The largest webhooks file read (dead letters are bounded per endpoint, endpoints per registry)."""
SUFFIX: Final = ".webhooks.json"
_T = TypeVar("_T")


class StoredLease(BaseModel):
    """The lease as the file holds it (``expires_at``: Unix time)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holder: str = Field(max_length=256)
    expires_at: float


class SidecarState(BaseModel):
    """The whole webhooks file."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["promptreg-webhooks"] = "promptreg-webhooks"
    format_version: Literal[1] = 1
    endpoints: dict[str, WebhookEndpoint] = Field(default_factory=dict)
    cursors: dict[str, Cursor] = Field(default_factory=dict)
    dead_letters: dict[str, list[DeadLetter]] = Field(default_factory=dict)
    lease: StoredLease | None = None

    def holds(self, holder: str) -> bool:
        """Whether ``holder`` holds an unexpired lease."""
        return self.lease is not None and self.lease.holder == holder and self.lease.expires_at > time.time()


class FileWebhookStore:
    """The :class:`~promptreg.registry.webhooks.store.WebhookStore` of a JSON-file registry."""

    def __init__(self, path: Path, *, lock_timeout: float = 10.0) -> None:
        self.path = path
        """The webhooks file (beside the registry file, whose links are resolved)."""
        self.lock_timeout = lock_timeout

    @classmethod
    def beside(cls, registry: JsonFilePromptRegistry) -> FileWebhookStore:
        """The webhooks file of ``registry``: ``REGISTRY.webhooks.json`` beside its real file."""
        target = Path(os.path.realpath(registry.path))
        return cls(target.with_name(target.name + SUFFIX), lock_timeout=registry.lock_timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- the protocol -----------------------------------------------------------------------------

    def add_endpoint(self, endpoint: WebhookEndpoint, cursor: Cursor) -> None:
        def apply(state: SidecarState) -> None:
            if len(state.endpoints) >= MAX_ENDPOINTS:
                raise InvalidInputError(f"this registry has {MAX_ENDPOINTS} webhook endpoints, the most it may have")
            state.endpoints[endpoint.id] = endpoint
            state.cursors[endpoint.id] = cursor

        self._write(apply)

    def remove_endpoint(self, endpoint_id: str) -> None:
        def apply(state: SidecarState) -> None:
            if state.endpoints.pop(endpoint_id, None) is None:
                raise WebhookNotFoundError(endpoint_id)
            state.cursors.pop(endpoint_id, None)
            state.dead_letters.pop(endpoint_id, None)

        self._write(apply)

    def endpoints(self) -> list[WebhookEndpoint]:
        return sorted(self._read().endpoints.values(), key=lambda e: (e.created_at, e.id))

    def cursor(self, endpoint_id: str) -> Cursor | None:
        return self._read().cursors.get(endpoint_id)

    def save_cursor(self, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        self._write(lambda state: self._move(state, endpoint_id, cursor, holder))

    def add_dead_letter(self, letter: DeadLetter, cursor: Cursor, holder: str) -> None:
        def apply(state: SidecarState) -> None:
            self._move(state, letter.endpoint, cursor, holder)
            kept = state.dead_letters.setdefault(letter.endpoint, [])
            kept.append(letter)
            del kept[:-MAX_DEAD_LETTERS]

        self._write(apply)

    def dead_letters(self, endpoint_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        state = self._read()
        found = [letter for key, letters in state.dead_letters.items() if endpoint_id in (None, key)
                 for letter in letters]  # fmt: skip
        return sorted(found, key=lambda letter: letter.at, reverse=True)[:limit]

    def acquire_lease(self, holder: str, ttl: float) -> bool:
        def apply(state: SidecarState) -> bool:
            now = time.time()
            if state.lease is not None and state.lease.holder != holder and state.lease.expires_at > now:
                return False
            state.lease = StoredLease(holder=holder, expires_at=now + ttl)
            return True

        return self._write(apply)

    def release_lease(self, holder: str) -> None:
        def apply(state: SidecarState) -> None:
            if state.lease is not None and state.lease.holder == holder:
                state.lease = None

        self._write(apply)

    def lease(self) -> Lease | None:
        found = self._read().lease
        if found is None or found.expires_at <= time.time():
            return None
        return Lease.model_validate({"holder": found.holder, "expires_at": found.expires_at})

    def close(self) -> None:
        """Nothing to release: every call opens and closes the file."""

    # -- the file ---------------------------------------------------------------------------------

    @staticmethod
    def _move(state: SidecarState, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        if not state.holds(holder):
            raise LeaseLostError(holder)
        if endpoint_id not in state.endpoints:
            raise WebhookNotFoundError(endpoint_id)
        state.cursors[endpoint_id] = cursor

    def _read(self) -> SidecarState:
        try:
            with open(self.path, "rb") as handle:
                data = handle.read(MAX_SIDECAR_BYTES + 1)
        except FileNotFoundError:
            return SidecarState()
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read webhooks file {self.path}: {exc.strerror or exc}") from exc
        if len(data) > MAX_SIDECAR_BYTES:
            raise RegistryCorruptError(f"{self.path}: over the {MAX_SIDECAR_BYTES}-byte limit of a webhooks file")
        try:
            check_json_depth(data, str(self.path))
            return SidecarState.model_validate_json(data)
        except (ValidationError, ValueError) as exc:
            raise RegistryCorruptError(f"{self.path}: not a promptreg webhooks file ({type(exc).__name__}); "
                                       "it was left untouched") from None  # fmt: skip

    def _write(self, apply: Callable[[SidecarState], _T]) -> _T:
        with self._locked():
            state = self._read()
            result = apply(state)  # refusals raise here, before anything is written
            data = state.model_dump_json(indent=2).encode("utf-8") + b"\n"
            try:
                write_atomically(self.path, data, mode=0o600)
            except OSError as exc:
                raise RegistryUnavailableError(
                    f"cannot write webhooks file {self.path}: {exc.strerror or exc}"
                ) from exc
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            # The registry's folder existed when it was opened (or it may create it: the default path).
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot open lock file {lock_path}: {exc.strerror or exc}") from exc
        try:
            lock_within(fd, lock_path, self.lock_timeout, "another process")
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
