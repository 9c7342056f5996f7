"""Percentage rollouts: a label keeps its version (the *stable* one) while a *candidate* version gets
a share of the lookups, and the split moves across the fleet like any label move.

A rollout is one more pointer on a label, written by the same kind of atomic, audited write that
publishes a change (DESIGN.md section 6): ``start_rollout``, ``set_rollout``, ``promote_rollout``
(the label moves to the candidate and the rollout ends) and ``abort_rollout`` (the candidate is
dropped). While a rollout runs, a plain move of its label (``set_label``, ``rollback``,
``delete_label``) is refused (:class:`~promptreg.RolloutActiveError`): promote or abort first.

Which variant a lookup gets (:func:`bucket`): the CRC-32 of the key, seeded with the prompt, the
label and the candidate, modulo 10,000, compared with the share in hundredths of a percent. (The
modulo also breaks the CRC's linearity: the raw CRC compared with a power-of-two fraction of 2**32
gave 44.2% of 1,000 ``user-<n>`` keys at 50%; modulo 10,000, every share stays within sampling
error.) The same key gets the same variant in every process, language and restart; raising the
percentage only moves keys from stable to candidate (the threshold grows); another candidate (or
another prompt) draws another sample of keys. This module is shared by the registry (which
validates) and the client (which picks).
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import TYPE_CHECKING
from zlib import crc32

from promptreg.registry.compatibility import check
from promptreg.registry.errors import (
    IncompatibleVersionError,
    InvalidInputError,
    LabelNotFoundError,
    PromptNotFoundError,
    RolloutActiveError,
    RolloutNotFoundError,
    VersionNotFoundError,
)
from promptreg.registry.models import AuditEvent, Prompt, Rollout, utcnow
from promptreg.registry.validation import (
    PERCENT_SCALE,
    validate_label,
    validate_name,
    validate_percent,
    validate_text_field,
    validate_version_number,
)

if TYPE_CHECKING:
    from promptreg.registry.compatibility import CompatibilityReport

FULL_SCALE = 100 * PERCENT_SCALE
"""Basis points in 100 %."""


def rollout_seed(name: str, label: str, candidate: int) -> int:
    """The CRC-32 a rollout's keys are hashed on top of: the prompt, the label and the candidate."""
    return crc32(f"promptreg\0{name}\0{label}\0{candidate}\0".encode())


def threshold(points: int) -> int:
    """The share ``points`` (basis points) as a bound on :func:`bucket`: a key whose bucket is below
    it gets the candidate."""
    return points


def bucket(key: str, seed: int) -> int:
    """The bucket (0-9999) of ``key`` (UTF-8) on top of ``seed``: ``zlib.crc32(key, seed) % 10000``,
    the same in every process and language with a CRC-32 (IEEE) that takes a starting value (or
    hashes the seed's prefix and the key together)."""
    return crc32(key.encode("utf-8"), seed) % FULL_SCALE


def picks_candidate(name: str, label: str, candidate: int, percent: float, key: str) -> bool:
    """Whether ``key`` gets the candidate of that rollout: the rule every client applies."""
    return bucket(key, rollout_seed(name, label, candidate)) < threshold(points_of(percent))


def percent_of(points: int) -> float:
    """Basis points as the percentage :class:`~promptreg.registry.models.Rollout` shows."""
    return points / PERCENT_SCALE


def points_of(percent: float) -> int:
    """A percentage (two decimals at most, as validated when written) in basis points."""
    return round(percent * PERCENT_SCALE)


def same_version(name: str, label: str, version: int) -> InvalidInputError:
    """The refusal of a rollout of the version the label already points at (every backend's)."""
    return InvalidInputError(f"version {version} is where label {label!r} of {name!r} points: nothing to roll out")


def check_start(
    prompt: Prompt | None, name: str, label: str, version: int, *, force: bool
) -> tuple[int, bool, CompatibilityReport]:
    """The checks of ``start_rollout`` for a backend that holds the whole prompt (the JSON file, a
    PostgreSQL transaction): returns ``(stable, forced, report)`` or raises what
    :meth:`RolloutWrites.start_rollout` documents."""
    if prompt is None:
        raise PromptNotFoundError(name)
    stable = prompt.labels.get(label)
    if stable is None:
        raise LabelNotFoundError(name, label)
    running = prompt.rollouts.get(label)
    if running is not None:
        raise RolloutActiveError(name, label, running.version)
    target = prompt.get_version_by_number(version)
    if target is None:
        raise VersionNotFoundError(name, version)
    if version == stable:
        raise same_version(name, label, version)
    report = check(prompt.compatibility, prompt.get_version_by_number(stable), target)
    if not report.compatible and not force:
        raise IncompatibleVersionError(name, label, version, stable, prompt.compatibility, report.added, report.removed)
    return stable, not report.compatible, report


def running(prompt: Prompt | None, name: str, label: str) -> Rollout:
    """The rollout running on ``label``, or :class:`~promptreg.PromptNotFoundError` /
    :class:`~promptreg.RolloutNotFoundError`."""
    if prompt is None:
        raise PromptNotFoundError(name)
    found = prompt.rollouts.get(label)
    if found is None:
        raise RolloutNotFoundError(name, label)
    return found


class RolloutWrites:
    """The rollout methods of :class:`~promptreg.PromptRegistry` (validation, then the backend's
    primitive: each write is one atomic, audited write that publishes a change message)."""

    def start_rollout(
        self,
        name: str,
        label: str,
        version: int,
        percent: float,
        *,
        author: str | None = None,
        reason: str | None = None,
        force: bool = False,
    ) -> AuditEvent:
        """Send ``percent`` of the lookups of ``label`` to ``version`` (the candidate); the label
        keeps its version (the stable one) for the rest.

        ``percent`` is above 0 and below 100, with at most two decimals. The candidate is checked
        against the stable version under the prompt's compatibility mode, in the same atomic write
        (``force=True`` starts anyway and records ``AuditEvent.forced``). Raises
        :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.LabelNotFoundError` (the label
        does not exist), :class:`~promptreg.VersionNotFoundError`,
        :class:`~promptreg.RolloutActiveError` (a rollout is already running on the label),
        :class:`~promptreg.IncompatibleVersionError` and :class:`~promptreg.InvalidInputError`
        (a bad percentage, or the candidate is the stable version).
        """
        validate_name(name)
        validate_label(label, settable=True)
        validate_version_number(version)
        points = validate_percent(percent)
        if not isinstance(force, bool):
            raise InvalidInputError(f"force must be True or False, got {force!r:.80}")
        who, why = validate_text_field(author, "author"), validate_text_field(reason, "reason")
        return self._start_rollout(name, label, version, points, who, why, utcnow(), force=force)

    def set_rollout(
        self, name: str, label: str, percent: float, *, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """Change the share of the running rollout of ``label`` (widen it, or narrow it). Raising it
        only moves keys from stable to candidate. Raises :class:`~promptreg.RolloutNotFoundError`,
        :class:`~promptreg.PromptNotFoundError` and :class:`~promptreg.InvalidInputError`."""
        validate_name(name)
        validate_label(label, settable=True)
        points = validate_percent(percent)
        who, why = validate_text_field(author, "author"), validate_text_field(reason, "reason")
        return self._set_rollout(name, label, points, who, why, utcnow())

    def promote_rollout(
        self, name: str, label: str, *, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """End the rollout of ``label`` by moving the label to the candidate (one label move: the
        label's previous version becomes its rollback target). Raises
        :class:`~promptreg.RolloutNotFoundError` and :class:`~promptreg.PromptNotFoundError`."""
        validate_name(name)
        validate_label(label, settable=True)
        who, why = validate_text_field(author, "author"), validate_text_field(reason, "reason")
        return self._end_rollout(name, label, True, who, why, utcnow())

    def abort_rollout(
        self, name: str, label: str, *, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """End the rollout of ``label`` by dropping the candidate: every lookup gets the label's
        version again. Raises :class:`~promptreg.RolloutNotFoundError` and
        :class:`~promptreg.PromptNotFoundError`."""
        validate_name(name)
        validate_label(label, settable=True)
        who, why = validate_text_field(author, "author"), validate_text_field(reason, "reason")
        return self._end_rollout(name, label, False, who, why, utcnow())

    def list_rollouts(self) -> dict[str, dict[str, Rollout]]:
        """Every running rollout, ``{name: {label: Rollout}}``, names sorted. Raises
        :class:`~promptreg.RegistryUnavailableError`."""
        found = self._list_rollouts()
        return {name: dict(sorted(found[name].items())) for name in sorted(found)}

    # -- backend primitives (arguments are already validated) -----------------------------------

    @abstractmethod
    def _start_rollout(
        self, name: str, label: str, version: int, points: int, author: str | None, reason: str | None,
        at: datetime, *, force: bool,
    ) -> AuditEvent: ...  # fmt: skip

    @abstractmethod
    def _set_rollout(
        self, name: str, label: str, points: int, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent: ...

    @abstractmethod
    def _end_rollout(
        self, name: str, label: str, promote: bool, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent: ...

    def _list_rollouts(self) -> dict[str, dict[str, Rollout]]:
        """Every running rollout; backends read an index (this reads every prompt)."""
        found: dict[str, dict[str, Rollout]] = {}
        for name in self._list_prompts():
            prompt = self._get_prompt(name)
            if prompt is not None and prompt.rollouts:
                found[name] = dict(prompt.rollouts)
        return found

    @abstractmethod
    def _list_prompts(self) -> list[str]: ...

    @abstractmethod
    def _get_prompt(self, name: str) -> Prompt | None: ...
