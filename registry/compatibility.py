"""Compatibility modes: which label moves a prompt accepts, as in a schema registry.

A version's *inputs* are its ``{{variable}}`` names and its placeholder names: what a caller must
pass to render it. Moving a label from version ``a`` to version ``b`` under a mode:

``none``      every move is accepted (the default);
``backward``  ``b`` needs no input ``a`` does not have: every caller that renders ``a`` today keeps
              working with ``b`` (``b`` may drop inputs; extra values are ignored);
``full``      ``b`` has exactly ``a``'s inputs.

A label's first assignment is never checked. The backends check inside the write itself (the Lua
script, the file lock, the PostgreSQL transaction), so no concurrent write can slip a move past it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from registry.errors import IncompatibleVersionError, InvalidInputError
from registry.models import CompatibilityMode, PromptVersion

MODES: tuple[CompatibilityMode, ...] = ("none", "backward", "full")


@dataclass(frozen=True, slots=True)
class CompatibilityReport:
    """What :meth:`~registry.PromptRegistry.check_compatibility` found, without writing.

    ``added`` are the inputs (variables and placeholders) the target version needs that the label's
    current version does not have; ``removed`` those it no longer takes (both sorted).
    ``current_version`` is where the label points now (``None``: unset, so the move is not checked).
    """

    compatible: bool
    mode: CompatibilityMode
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    current_version: int | None = None
    version: int | None = None


def validate_mode(mode: object) -> CompatibilityMode:
    """Return ``mode`` if it is ``"none"``, ``"backward"`` or ``"full"``; else :class:`InvalidInputError`."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInputError(f"compatibility must be one of {', '.join(MODES)}, got {mode!r:.80}")
    return mode


def inputs_of(version: PromptVersion) -> frozenset[str]:
    """What a caller must pass to render ``version``: its variables and its placeholders."""
    return version.variables | version.placeholders


def encode_inputs(names: Iterable[str]) -> str:
    """Inputs as stored beside a Redis version (``inputs`` field): sorted, space-separated."""
    return " ".join(sorted(names))


def compare(
    mode: CompatibilityMode, current: frozenset[str] | None, target: frozenset[str], version: int | None = None,
    current_version: int | None = None,
) -> CompatibilityReport:  # fmt: skip
    """The report for moving a label whose version takes ``current`` (``None``: unset) to one taking ``target``."""
    if current is None:
        return CompatibilityReport(True, mode, (), (), None, version)
    added = tuple(sorted(target - current))
    removed = tuple(sorted(current - target))
    if mode == "none":
        ok = True
    elif mode == "backward":
        ok = not added
    else:
        ok = not added and not removed
    return CompatibilityReport(ok, mode, added, removed, current_version, version)


def check(mode: CompatibilityMode, current: PromptVersion | None, target: PromptVersion) -> CompatibilityReport:
    """The report for moving a label from ``current`` (``None``: unset) to ``target`` under ``mode``."""
    return compare(
        mode,
        None if current is None else inputs_of(current),
        inputs_of(target),
        target.version,
        None if current is None else current.version,
    )


def enforce(
    name: str, label: str, mode: CompatibilityMode, current: PromptVersion | None, target: PromptVersion, force: bool
) -> bool:
    """Check a label move inside a backend's write; returns whether it goes through only by ``force``.

    Raises :class:`~registry.IncompatibleVersionError` when ``mode`` refuses moving from ``current``
    (``None``: a first assignment, never checked) to ``target`` and ``force`` is false.
    """
    if mode == "none" or current is None or current.version == target.version:
        return False
    report = check(mode, current, target)
    if report.compatible:
        return False
    if force:
        return True
    raise IncompatibleVersionError(name, label, target.version, current.version, mode, report.added, report.removed)
