"""``JsonFilePromptRegistry``: the whole registry in one JSON file, for local development.

Same contract as the Redis backend, no server. The file looks like this::

    {"format": "promptreg", "format_version": 1, "rev": 7,
     "prompts": {"movie-critic": {"description": ..., "author": ..., "created_at": ...,
                                  "versions": [...], "labels": {"production": 3},
                                  "previous": {"production": 2}, "history": [...]}}}

``rev`` is the registry-wide revision, bumped by every write; ``previous`` is where each label
pointed before its last move (what ``rollback`` returns to; for a deleted label, where it pointed
when it was deleted, which its next move is checked against); ``history`` is the prompt's audit trail.

Writes take an exclusive ``fcntl.flock`` on the sidecar file ``PATH.lock``, re-read the file under
the lock, apply the change, write a temp file in the same directory, fsync it, ``os.replace`` it over
the old file and fsync the directory. Concurrent processes therefore never lose a write, and a reader
(which takes no lock) always sees a whole old or a whole new file. A file that cannot be read as a
promptreg registry raises :class:`~promptreg.RegistryCorruptError` and is never overwritten; so does a
file over :data:`MAX_FILE_BYTES` (refused before it is read) or nested deeper than
:data:`~promptreg.registry.validation.MAX_JSON_DEPTH` levels (refused without a recursive parse).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeVar

from promptreg.registry.atomic_file import lock_within, write_atomically
from promptreg.registry.base import PromptRegistry, check_expected
from promptreg.registry.composition_checks import check_move as check_graph
from promptreg.registry.composition_checks import check_new_version
from promptreg.registry.errors import (
    InvalidInputError,
    LabelNotFoundError,
    PromptExistsError,
    PromptTooLargeError,
    RegistryCorruptError,
    RegistryUnavailableError,
    RollbackUnavailableError,
)
from promptreg.registry.file_format import StoredPrompt, StoredState, parse_state
from promptreg.registry.file_governance import FileGovernance
from promptreg.registry.file_writes import (
    audit,
    check_move,
    end_rollout,
    graph_of,
    no_rollout,
    prompt_of,
    set_label,
    set_rollout,
    start_rollout,
)
from promptreg.registry.models import AuditEvent, CompatibilityMode, Prompt, PromptVersion
from promptreg.registry.validation import (
    MAX_METADATA_BYTES,
    MAX_TEXT_BYTES,
)

MAX_FILE_BYTES: Final = 1024**3
"""The largest registry file this backend reads (1 GiB, as ``promptreg import`` reads exports): a
larger file is refused before it is read, and a write that would make the file larger is refused."""

_T = TypeVar("_T")


class FileState(NamedTuple):
    """The whole registry as read from the file at one moment (see :meth:`JsonFilePromptRegistry.load_state`)."""

    rev: int
    """The registry revision: bumped by every write, 0 for a registry never written."""
    prompts: dict[str, Prompt]
    """Every prompt by name, with all its versions and labels."""


class JsonFilePromptRegistry(FileGovernance, PromptRegistry):
    """A prompt registry stored in one JSON file (``file://PATH``), for local development.

    A missing file is an empty registry; the first write creates it. Its folder must exist: a
    mistyped path is refused, not created (:class:`~promptreg.InvalidInputError` here, or
    :class:`~promptreg.RegistryUnavailableError` on a write if the folder has gone since), unless
    ``create_parent=True``, which lets the first write create the missing folders (the factory sets it
    for its default, ``./.promptreg/registry.json``, only). ``lock_timeout`` (seconds) bounds the
    wait for the write lock. Every call reads the file, so several processes can share it. Raises
    :class:`~promptreg.RegistryCorruptError` (the file is not a readable promptreg registry; it is
    left untouched) and :class:`~promptreg.RegistryUnavailableError` (the file or its lock cannot be
    used in time).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_text_bytes: int = MAX_TEXT_BYTES,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        lock_timeout: float = 10.0,
        create_parent: bool = False,
    ) -> None:
        super().__init__(max_text_bytes=max_text_bytes, max_metadata_bytes=max_metadata_bytes)
        if isinstance(lock_timeout, bool) or not isinstance(lock_timeout, int | float) or not lock_timeout >= 0:
            raise InvalidInputError(f"lock_timeout must be a number of seconds >= 0, got {lock_timeout!r}")
        self.path = Path(os.path.abspath(os.fspath(path)))
        """The registry file (absolute). It may be a symbolic link: writes go through it to its
        target (replaced atomically), and the link stays a link; a link's own target folder is made
        if missing (the link says where the file goes)."""
        self.lock_timeout = float(lock_timeout)
        self.create_parent = bool(create_parent)
        """Whether the first write may create the file's missing folders (else they must exist)."""
        if not self.create_parent and not self.path.parent.is_dir():
            raise InvalidInputError(self._no_folder())

    def _no_folder(self) -> str:
        return (
            f"registry folder {self.path.parent} does not exist: create it first "
            "(promptreg creates the registry file, never its folder)"
        )

    @property
    def lock_path(self) -> Path:
        """The sidecar file whose ``flock`` serialises writers: beside the real file, so writers that
        reach one file through different links still take the same lock."""
        target = self._target()
        return target.with_name(target.name + ".lock")

    def _target(self) -> Path:
        # Resolved at every write: the link may be re-pointed while this object lives.
        return Path(os.path.realpath(self.path))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # -- state for file-watching clients ---------------------------------------------------------

    def load_state(self) -> FileState:
        """Read the whole registry at once: ``(rev, {name: Prompt})``.

        One read of the file, so the result is consistent even while other processes write. A
        file watcher calls this after the file changed; ``rev`` tells whether anything is new.
        Raises :class:`~promptreg.RegistryCorruptError` and :class:`~promptreg.RegistryUnavailableError`.
        """
        state = self._read()
        return FileState(state.rev, {name: stored.to_prompt(name) for name, stored in state.prompts.items()})

    # -- writes ----------------------------------------------------------------------------------

    def _create_prompt(
        self, name: str, description: str | None, author: str | None, at: datetime, *,
        compatibility: CompatibilityMode = "none",
    ) -> Prompt:  # fmt: skip
        def apply(state: StoredState) -> Prompt:
            if name in state.prompts:
                raise PromptExistsError(name)
            stored = StoredPrompt(description=description, author=author, created_at=at, compatibility=compatibility)
            state.prompts[name] = stored
            audit(state, stored, "create_prompt", name, at, author=author)
            return stored.to_prompt(name)

        return self._write(apply)

    def _add_version(
        self,
        name: str,
        prompt_text: str,
        author: str | None,
        metadata: dict[str, Any],
        message: str | None,
        at: datetime,
        *,
        messages: tuple[dict[str, str], ...] | None = None,
        config: dict[str, Any] | None = None,
    ) -> PromptVersion:
        def apply(state: StoredState) -> PromptVersion:
            stored = prompt_of(state, name)
            version = PromptVersion(
                version=len(stored.versions) + 1,
                prompt_text=prompt_text,
                created_at=at,
                author=author,
                message=message,
                metadata=metadata,
                messages=messages,
                config=config or {},
            )
            check_new_version(graph_of(state), name, version.version, version)
            stored.versions.append(version)
            audit(state, stored, "add_version", name, at, version=version.version, author=author, reason=message)
            return version

        return self._write(apply)

    def _set_label(
        self,
        name: str,
        label: str,
        version: int,
        expected_version: int | None,
        author: str | None,
        reason: str | None,
        at: datetime,
        *,
        force: bool = False,
    ) -> AuditEvent:
        def apply(state: StoredState) -> AuditEvent:
            return set_label(state, name, label, version, expected_version, author, reason, at, force=force)

        return self._write(apply)

    def _delete_label(
        self,
        name: str,
        label: str,
        expected_version: int | None,
        author: str | None,
        reason: str | None,
        at: datetime,
        *,
        force: bool = False,
    ) -> AuditEvent:
        def apply(state: StoredState) -> AuditEvent:
            stored = prompt_of(state, name)
            current = stored.labels.get(label)
            if current is None:
                raise LabelNotFoundError(name, label)
            no_rollout(stored, name, label)
            check_expected(name, label, expected_version, current)
            forced = check_graph(graph_of(state), name, label, None, force=force)
            del stored.labels[label]
            stored.previous[label] = current
            return audit(state, stored, "delete_label", name, at, label, None, current, author, reason, forced=forced)

        return self._write(apply)

    def _rollback(
        self,
        name: str,
        label: str,
        author: str | None,
        reason: str | None,
        at: datetime,
        *,
        force: bool = False,
        expected_version: int | None = None,
    ) -> AuditEvent:
        def apply(state: StoredState) -> AuditEvent:
            stored = prompt_of(state, name)
            no_rollout(stored, name, label)
            target = stored.previous.get(label)
            if target is None:
                raise RollbackUnavailableError(name, label)
            current = stored.labels.get(label)
            check_expected(name, label, expected_version, current)
            forced = check_move(stored, name, label, current, target, force)
            forced = check_graph(graph_of(state), name, label, target, force=force) or forced
            if current is None:
                del stored.previous[label]
            else:
                stored.previous[label] = current
            stored.labels[label] = target
            return audit(state, stored, "rollback", name, at, label, target, current, author, reason, forced=forced)

        return self._write(apply)

    def _set_compatibility(
        self, name: str, mode: CompatibilityMode, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        def apply(state: StoredState) -> AuditEvent:
            stored = prompt_of(state, name)
            stored.compatibility = mode
            return audit(state, stored, "set_compatibility", name, at, author=author, reason=reason, compatibility=mode)

        return self._write(apply)

    def _start_rollout(
        self, name: str, label: str, version: int, points: int, author: str | None, reason: str | None,
        at: datetime, *, force: bool,
    ) -> AuditEvent:  # fmt: skip
        return self._write(lambda state: start_rollout(state, name, label, version, points, author, reason, at, force))

    def _set_rollout(
        self, name: str, label: str, points: int, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        return self._write(lambda state: set_rollout(state, name, label, points, author, reason, at))

    def _end_rollout(
        self, name: str, label: str, promote: bool, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        return self._write(lambda state: end_rollout(state, name, label, promote, author, reason, at))

    # -- reads -----------------------------------------------------------------------------------

    def _get_prompt(self, name: str) -> Prompt | None:
        stored = self._read().prompts.get(name)
        return None if stored is None else stored.to_prompt(name)

    def _list_prompts(self) -> list[str]:
        return list(self._read().prompts)

    def _describe(self, names: list[str]) -> dict[str, str | None]:
        prompts = self._read().prompts
        return {name: prompts[name].description for name in names if name in prompts}

    def _revision(self) -> int:
        # No fleet here: clients of a file do not report presence (fleet() is [], documented).
        return self._read().rev

    def _history(self, name: str) -> list[AuditEvent]:
        return list(prompt_of(self._read(), name).history)

    # -- the file --------------------------------------------------------------------------------

    def _read(self) -> StoredState:
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > MAX_FILE_BYTES:
                    raise RegistryCorruptError(
                        f"{self.path}: the file is {size} bytes, over the {MAX_FILE_BYTES}-byte limit of a "
                        "registry file (the file was left untouched)"
                    )
                data = handle.read(MAX_FILE_BYTES + 1)  # a file that grew since fstat is still cut
        except FileNotFoundError:
            return StoredState()
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot read registry file {self.path}: {exc}") from exc
        if len(data) > MAX_FILE_BYTES:
            raise RegistryCorruptError(
                f"{self.path}: the file is over the {MAX_FILE_BYTES}-byte limit of a registry file "
                "(the file was left untouched)"
            )
        return parse_state(data, self.path)

    def _write(self, apply: Callable[[StoredState], _T]) -> _T:
        # Every refusal is raised by ``apply`` before anything touches the disk.
        target = self._target()
        lock_path = target.with_name(target.name + ".lock")
        with self._locked(target, lock_path):
            state = self._read()
            result = apply(state)
            data = state.model_dump_json(indent=2).encode("utf-8") + b"\n"
            if len(data) > MAX_FILE_BYTES:  # it could never be read back
                raise PromptTooLargeError(
                    f"the registry file would be {len(data)} bytes, the limit is {MAX_FILE_BYTES}; nothing was written"
                )
            self._replace(target, data)
        return result

    @contextlib.contextmanager
    def _locked(self, target: Path, lock_path: Path) -> Iterator[None]:
        if not self.create_parent and not self.path.parent.is_dir():
            raise RegistryUnavailableError(self._no_folder())  # it was there when this object was made
        try:
            # Only a link's target folder (or, with create_parent, the path's own) can be missing here.
            target.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot open lock file {lock_path}: {exc}") from exc
        try:
            lock_within(fd, lock_path, self.lock_timeout, "another writer")
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _replace(self, target: Path, data: bytes) -> None:
        # ``target`` is the resolved path: replacing it (not a link in front of it) keeps the link.
        try:
            write_atomically(target, data)
        except OSError as exc:
            raise RegistryUnavailableError(f"cannot write registry file {self.path}: {exc}") from exc
