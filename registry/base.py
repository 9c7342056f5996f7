"""``PromptRegistry``: the interface every backend implements.

The public methods validate every argument first and then call the backend's primitive, so every
backend refuses the same input with the same typed error, before anything is written. That includes
what only one backend could not store: a NUL character (U+0000) in a text field is refused by all
of them (:func:`refuse_nul`), because PostgreSQL text cannot hold it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Self

from promptreg.registry.chat import validate_messages
from promptreg.registry.compatibility import CompatibilityReport, check, deleted_labels, validate_mode
from promptreg.registry.composition import composes
from promptreg.registry.errors import (
    InvalidInputError,
    LabelConflictError,
    LabelNotFoundError,
    PromptNotFoundError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.fleet import FleetMember, FleetWait, await_fleet
from promptreg.registry.governance import GovernanceWrites
from promptreg.registry.migration import MigrationResult
from promptreg.registry.models import AuditEvent, CompatibilityMode, Prompt, PromptVersion, utcnow
from promptreg.registry.partials import PartialReads
from promptreg.registry.rollouts import RolloutWrites
from promptreg.registry.validation import (
    LATEST,
    MAX_METADATA_BYTES,
    MAX_TEXT_BYTES,
    refuse_nul,
    validate_label,
    validate_metadata,
    validate_name,
    validate_text,
    validate_text_field,
    validate_version_number,
)


class PromptRegistry(RolloutWrites, GovernanceWrites, PartialReads, ABC):
    """A store of prompts: unique names, immutable versions, mutable labels, an audit trail.

    ``max_text_bytes`` and ``max_metadata_bytes`` bound what ``add_version`` accepts (UTF-8 text,
    metadata as compact JSON). Registries are context managers; ``close()`` releases connections.
    """

    def __init__(self, *, max_text_bytes: int = MAX_TEXT_BYTES, max_metadata_bytes: int = MAX_METADATA_BYTES) -> None:
        self.max_text_bytes = max_text_bytes
        self.max_metadata_bytes = max_metadata_bytes

    # -- writes ---------------------------------------------------------------------------------

    def create_prompt(
        self,
        name: str,
        *,
        description: str | None = None,
        author: str | None = None,
        compatibility: CompatibilityMode = "none",
    ) -> Prompt:
        """Create an empty prompt; ``compatibility`` (``none``, ``backward``, ``full``) is its mode.

        Raises :class:`~promptreg.PromptExistsError` if the name is taken,
        :class:`~promptreg.InvalidNameError` if it is malformed and :class:`~promptreg.InvalidInputError`
        for an unknown mode.
        """
        validate_name(name)
        mode = validate_mode(compatibility)
        clean_description = validate_text_field(description, "description")
        clean_author = validate_text_field(author, "author")
        return self._create_prompt(name, clean_description, clean_author, utcnow(), compatibility=mode)

    def add_version(
        self,
        name: str,
        prompt_text: str | None = None,
        *,
        messages: Sequence[Mapping[str, str]] | None = None,
        config: Mapping[str, Any] | None = None,
        author: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        message: str | None = None,
    ) -> PromptVersion:
        """Append a new immutable version; its number is one more than the newest.

        Give exactly one of ``prompt_text`` (a text version) or ``messages`` (a chat version: a list
        of ``{"role", "content"}`` messages and ``{"placeholder": name}`` slots, see
        :mod:`promptreg.registry.chat`). ``config`` is the model configuration (JSON-compatible, bounded like
        metadata). Raises :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.PromptTooLargeError`
        (text, messages, metadata or config over the limit) or :class:`~promptreg.InvalidInputError`
        naming the field (both or neither of text and messages, a malformed message, metadata or config
        not JSON-compatible, a NUL character in the text, author or message: :func:`refuse_nul`).
        """
        validate_name(name)
        if (prompt_text is None) == (messages is None):
            raise InvalidInputError("give exactly one of prompt_text or messages")
        clean_messages = None if messages is None else validate_messages(messages, self.max_text_bytes)
        text = "" if prompt_text is None else validate_text(prompt_text, self.max_text_bytes)
        refuse_nul(text, "prompt text")
        clean_metadata = validate_metadata(metadata, self.max_metadata_bytes)
        clean_config = validate_metadata(config, self.max_metadata_bytes, "config")
        clean_author, clean_message = validate_text_field(author, "author"), validate_text_field(message, "message")
        return self._add_version(
            name, text, clean_author, clean_metadata, clean_message, utcnow(), messages=clean_messages,
            config=clean_config,
        )  # fmt: skip

    def set_label(
        self,
        name: str,
        label: str,
        version: int,
        *,
        expected_version: int | None = None,
        author: str | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> AuditEvent:
        """Point ``label`` at ``version``.

        ``expected_version`` is compare-and-set: the move happens only if the label points there now
        (``0``: only if the label does not exist yet; ``None``: no check). The prompt's compatibility
        mode is checked in the same atomic write against the version the label last pointed at: where
        it points now or, for a deleted label, where it pointed when it was deleted (deleting a label
        and setting it again is one move, checked the same way; only a label's first assignment is
        never checked). ``force=True`` moves anyway and records ``AuditEvent.forced``. Raises
        :class:`~promptreg.InvalidInputError` for a NUL character in ``author`` or ``reason``,
        :class:`~promptreg.LabelConflictError` when the compare-and-set fails,
        :class:`~promptreg.IncompatibleVersionError` when the mode refuses the move,
        :class:`~promptreg.VersionNotFoundError` for a missing version, and
        :class:`~promptreg.InvalidNameError` for a malformed or reserved (``latest``) label.
        """
        validate_name(name)
        validate_label(label, settable=True)
        validate_version_number(version)
        if expected_version is not None:
            validate_version_number(expected_version, allow_zero=True)
        _validate_force(force)
        args = (name, label, version, expected_version, validate_text_field(author, "author"),
                validate_text_field(reason, "reason"), utcnow())  # fmt: skip
        return self._set_label(*args, force=force)

    def delete_label(
        self,
        name: str,
        label: str,
        *,
        expected_version: int | None = None,
        author: str | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> AuditEvent:
        """Remove ``label``. Raises :class:`~promptreg.LabelNotFoundError` if it does not exist,
        :class:`~promptreg.LabelConflictError` if ``expected_version`` does not match, and
        :class:`~promptreg.PartialNotFoundError` when a prompt including this one as a partial at
        that label would be left without it (``force=True`` deletes anyway, recorded as forced)."""
        validate_name(name)
        validate_label(label, settable=True)
        if expected_version is not None:
            validate_version_number(expected_version)
        _validate_force(force)
        return self._delete_label(
            name,
            label,
            expected_version,
            validate_text_field(author, "author"),
            validate_text_field(reason, "reason"),
            utcnow(),
            force=force,
        )

    def rollback(
        self,
        name: str,
        label: str,
        *,
        expected_version: int | None = None,
        author: str | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> AuditEvent:
        """Move ``label`` back to where it pointed before its last move.

        Rolling back twice returns to where it started; a deleted label comes back. The move is
        checked like :meth:`set_label` (``force=True`` moves anyway). ``expected_version`` is
        compare-and-set as in :meth:`set_label` (``0``: only if the label is deleted now), so a
        rollback previewed against one position never undoes a move made since
        (:class:`~promptreg.LabelConflictError`). Raises
        :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.LabelNotFoundError` when the label
        does not exist and never did, :class:`~promptreg.RollbackUnavailableError` when it exists
        but never pointed anywhere else, and :class:`~promptreg.IncompatibleVersionError`.
        """
        validate_name(name)
        validate_label(label, settable=True)
        _validate_force(force)
        if expected_version is not None:
            validate_version_number(expected_version, allow_zero=True)
        args = (name, label, validate_text_field(author, "author"), validate_text_field(reason, "reason"), utcnow())
        try:
            return self._rollback(*args, force=force, expected_version=expected_version)
        except RollbackUnavailableError:
            # Only on the refusal path: say "no such label" rather than "nothing to roll back to".
            prompt = self._get_prompt(name)
            if prompt is not None and label not in prompt.labels:
                raise LabelNotFoundError(name, label) from None
            raise

    def set_compatibility(
        self, name: str, mode: CompatibilityMode, *, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """Set the prompt's compatibility mode (``none``, ``backward``, ``full``; see
        :mod:`promptreg.registry.compatibility`); audited like every write. Raises
        :class:`~promptreg.PromptNotFoundError` and :class:`~promptreg.InvalidInputError`."""
        validate_name(name)
        clean = validate_mode(mode)
        return self._set_compatibility(
            name, clean, validate_text_field(author, "author"), validate_text_field(reason, "reason"), utcnow()
        )

    def check_compatibility(self, name: str, label: str, version: int) -> CompatibilityReport:
        """Whether moving ``label`` to ``version`` passes the prompt's mode, and what it changes
        (inputs added and removed, a change of version type or of an input's kind); writes nothing.
        A deleted label is checked against where it pointed when it was deleted, as :meth:`set_label`
        checks it; a label never set is always compatible. Raises
        :class:`~promptreg.PromptNotFoundError` and :class:`~promptreg.VersionNotFoundError`."""
        validate_name(name)
        validate_label(label, settable=True)
        validate_version_number(version)
        prompt = self._get_prompt(name)
        if prompt is None:
            raise PromptNotFoundError(name)
        target = prompt.get_version_by_number(version)
        if target is None:
            raise VersionNotFoundError(name, version)
        current = prompt.labels.get(label)
        if current is None:
            current = deleted_labels(self._history(name)).get(label)
        before = None if current is None else prompt.get_version_by_number(current)
        if composes(target) or (before is not None and composes(before)):  # as set_label checks it: composed
            return self._composed_report(prompt, label, before, target)
        return check(prompt.compatibility, before, target)

    # -- reads ----------------------------------------------------------------------------------

    def get_prompt(self, name: str) -> Prompt | None:
        """The whole prompt (every version, every label), or ``None`` if there is none."""
        validate_name(name)
        return self._get_prompt(name)

    def get_version(
        self, name: str, *, label: str | None = None, version: int | None = None, resolve: bool = False
    ) -> PromptVersion:
        """One version, by ``label`` or by ``version`` number; with neither, the newest.

        With ``resolve=True`` the version's ``{{> partial}}`` references are resolved at ``label``
        (a ``version`` number: at ``latest``), as a client serves it: the text (or messages)
        composed, and :attr:`~promptreg.PromptVersion.partials` naming each partial's version.
        Raises :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.LabelNotFoundError`,
        :class:`~promptreg.VersionNotFoundError` or, resolving, a
        :class:`~promptreg.CompositionError`.
        """
        validate_name(name)
        if label is not None and version is not None:
            raise InvalidInputError("give a label or a version, not both")
        if version is not None:
            validate_version_number(version)
            found = self._get_version(name, version)
            return self._resolved(name, LATEST, found) if resolve else found
        label = LATEST if label is None else validate_label(label)
        number = self._resolve_label(name, label)
        found = self._get_version(name, number)
        return self._resolved(name, label, found) if resolve else found

    def list_prompts(self) -> list[str]:
        """Every prompt name, sorted."""
        return sorted(self._list_prompts())

    def describe(self, names: Iterable[str]) -> dict[str, str | None]:
        """Each named prompt's description (``None``: it has none), in one read; names with no
        prompt are left out. What ``promptreg serve`` lists beside the labels. Raises
        :class:`~promptreg.InvalidNameError` and :class:`~promptreg.RegistryUnavailableError`."""
        wanted = list(dict.fromkeys(validate_name(name) for name in names))
        return self._describe(wanted) if wanted else {}

    def history(self, name: str) -> list[AuditEvent]:
        """The prompt's audit trail, oldest first. Raises :class:`~promptreg.PromptNotFoundError`."""
        validate_name(name)
        return self._history(name)

    def revision(self) -> int:
        """The registry's current revision (every write adds one). Raises
        :class:`~promptreg.RegistryUnavailableError`."""
        return self._revision()

    def changes_since(self, rev: int, *, limit: int = 1000) -> list[AuditEvent] | None:
        """Every write after revision ``rev``, registry-wide, oldest first (at most ``limit``).

        ``None`` when they cannot all be given: more than ``limit`` of them, or the registry's log
        no longer holds the first one (the Redis log keeps about the last 100,000 writes), or the
        registry's history is older than ``rev`` (a restore): the reader must read the state anew.
        What ``promptreg serve``'s change stream replays on resume. Raises
        :class:`~promptreg.InvalidInputError` and :class:`~promptreg.RegistryUnavailableError`.
        """
        for value, what, low in ((rev, "rev", 0), (limit, "limit", 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise InvalidInputError(f"{what} must be an integer >= {low}, got {value!r:.40}")
        current = self._revision()
        if rev > current:
            return None
        if rev == current:
            return []
        if current - rev > limit:
            return None
        events = self._changes_since(rev, limit)
        return events if events and events[0].rev == rev + 1 else None  # else: trimmed or rewritten

    # -- the fleet: which client serves which revision ---------------------------------------------

    def fleet(self) -> list[FleetMember]:
        """Every :class:`promptreg.PromptClient` reporting its presence, by name, host and pid.

        Only the Redis backend keeps presence; the JSON file and PostgreSQL return ``[]`` (their
        clients do not report). Raises :class:`~promptreg.RegistryUnavailableError` when the store
        cannot be reached.
        """
        return []

    def wait_for_fleet(self, rev: int | None = None, *, timeout: float = 5.0) -> FleetWait:
        """Wait until every client in :meth:`fleet` serves revision ``rev`` (default: the current one).

        The clients are those present when the wait begins; each acknowledges a change by reporting
        after it applied it (at most one report per 25 ms: a burst of changes shares reports).
        Returns after ``timeout`` seconds at most, with the clients that reached ``rev``, those
        still lagging, and those gone meanwhile (record expired or removed).
        With no client reporting the wait is complete at once, with nobody reached. Raises
        :class:`~promptreg.InvalidInputError` for a negative ``rev`` or ``timeout`` and
        :class:`~promptreg.RegistryUnavailableError`.
        """
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise InvalidInputError(f"timeout must be >= 0 seconds, got {timeout!r}")
        started = time.monotonic()
        if rev is None:
            rev = self._revision()  # read before the fleet: an acknowledgement seen after it counts
        elif isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
            raise InvalidInputError(f"rev must be an integer >= 0, got {rev!r}")
        return await_fleet(rev, self.fleet(), self._fleet_members, timeout, started)

    def migrate(self, *, rebuild: bool = False) -> MigrationResult:
        """Bring stored data up to this version's layout; idempotent (``promptreg migrate``).

        The base implementation has nothing to migrate and says so (the JSON file backend). The
        Redis backend builds the index a 0.1.0 registry lacks; ``rebuild`` rebuilds it even when it
        is there. Raises :class:`~promptreg.RegistryUnavailableError` when the store is unreachable.
        """
        return MigrationResult(False, 0, f"nothing to migrate: {type(self).__name__} keeps no index")

    _atomic_batches: ClassVar[bool] = False
    """Whether :meth:`_batch` makes its writes one atomic write (PostgreSQL: one transaction)."""

    @contextmanager
    def _batch(self) -> Iterator[None]:
        """Group the writes made inside into one atomic write where the backend can (``sync`` and
        ``import`` use it): on PostgreSQL one transaction, all or nothing. Here, and on Redis and the
        JSON file, each write stays its own atomic write: a failure leaves the earlier ones made."""
        yield

    def close(self) -> None:
        """Release connections and file handles. Idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- backend primitives (arguments are already validated) -----------------------------------

    @abstractmethod
    def _create_prompt(
        self, name: str, description: str | None, author: str | None, at: datetime, *,
        compatibility: CompatibilityMode = "none",
    ) -> Prompt: ...  # fmt: skip

    @abstractmethod
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
    ) -> PromptVersion: ...

    @abstractmethod
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
    ) -> AuditEvent: ...

    @abstractmethod
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
    ) -> AuditEvent: ...

    @abstractmethod
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
    ) -> AuditEvent: ...

    @abstractmethod
    def _set_compatibility(
        self, name: str, mode: CompatibilityMode, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent: ...

    @abstractmethod
    def _get_prompt(self, name: str) -> Prompt | None: ...

    def _resolve_label(self, name: str, label: str) -> int:
        """The version number ``label`` points at (``latest``: the newest); backends may do better."""
        prompt = self._get_prompt(name)
        if prompt is None:
            raise PromptNotFoundError(name)
        found = prompt.get_version_by_label(label)
        if found is None:
            raise LabelNotFoundError(name, label)
        return found.version

    def _get_version(self, name: str, version: int) -> PromptVersion:
        """One version by number; backends may do better than loading the whole prompt."""
        prompt = self._get_prompt(name)
        if prompt is None:
            raise PromptNotFoundError(name)
        found = prompt.get_version_by_number(version)
        if found is None:
            raise VersionNotFoundError(name, version)
        return found

    def _revision(self) -> int:
        """The registry's current revision; backends read it directly (this walks every history)."""
        return max((e.rev for name in self._list_prompts() for e in self._history(name)), default=0)

    def _describe(self, names: list[str]) -> dict[str, str | None]:
        """Descriptions of the prompts that exist among ``names``; backends read only those."""
        found = {name: self._get_prompt(name) for name in names}
        return {name: prompt.description for name, prompt in found.items() if prompt is not None}

    def _changes_since(self, rev: int, limit: int) -> list[AuditEvent]:
        """The audit entries after ``rev`` the log still holds, oldest first, at most ``limit``;
        backends read their registry-wide log (this walks every history)."""
        events = [e for name in self._list_prompts() for e in self._history(name) if e.rev > rev]
        return sorted(events, key=lambda e: e.rev)[:limit]

    def _fleet_members(self, client_ids: Iterable[str]) -> dict[str, FleetMember | None]:
        """The current record of each client (``None``: gone); backends may read only those."""
        current = {member.client_id: member for member in self.fleet()}
        return {client_id: current.get(client_id) for client_id in client_ids}

    @abstractmethod
    def _list_prompts(self) -> list[str]: ...

    @abstractmethod
    def _history(self, name: str) -> list[AuditEvent]: ...


def _validate_force(force: object) -> None:
    if not isinstance(force, bool):
        raise InvalidInputError(f"force must be True or False, got {force!r:.80}")


def check_expected(name: str, label: str, expected: int | None, current: int | None) -> None:
    """A label move's compare-and-set, for backends that check it in Python: raise
    :class:`~promptreg.LabelConflictError` unless ``expected`` is ``None``, or is where the label
    points (``current``), or is ``0`` and the label is unset."""
    if expected is None:
        return
    if (current is None and expected != 0) or (current is not None and current != expected):
        raise LabelConflictError(name, label, expected, current)
