"""Compatibility modes: which label moves a prompt accepts, as in a schema registry.

A version's *interface* is what a caller passes to render it and what it gets back: its type (a
``text`` version renders to a string, a ``chat`` version to a list of messages), its
``{{variable}}`` names (each takes a value rendered as text) and its placeholder names (each takes a
list of messages). Its *inputs* are the variable and placeholder names. Moving a label from version
``a`` to version ``b`` under a mode:

``none``      every move is accepted (the default);
``backward``  every caller that renders ``a`` today keeps working with ``b``: ``b`` needs no input
              ``a`` does not have (``b`` may drop inputs; extra values are ignored), has ``a``'s
              type, and takes each input it shares with ``a`` the same way (a variable stays a
              variable, a placeholder a placeholder);
``full``      ``b`` has exactly ``a``'s interface: the same type, the same variables and placeholders.

A label is checked against the version it last pointed at: where it points now or, once deleted,
where it pointed when it was deleted (so deleting a label and setting it again is the same move,
checked the same way). Only a label's very first assignment is never checked. The backends check
inside the write itself (the Lua script, the file lock, the PostgreSQL transaction), so no
concurrent write can slip a move past it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from promptreg.registry.errors import IncompatibleVersionError, InvalidInputError
from promptreg.registry.models import AuditEvent, CompatibilityMode, PromptVersion, VersionType

MODES: tuple[CompatibilityMode, ...] = ("none", "backward", "full")


@dataclass(frozen=True, slots=True)
class CompatibilityReport:
    """What :meth:`~promptreg.PromptRegistry.check_compatibility` found, without writing.

    ``added`` are the inputs (variables and placeholders) the target version needs that the label's
    version does not have; ``removed`` those it no longer takes (both sorted). ``type_change`` is
    ``(its type, the target's type)`` when the move changes the version type (``text`` <-> ``chat``:
    ``render`` returns another kind of value); ``kind_changes`` are the inputs both take, one as a
    ``{{variable}}`` and the other as a placeholder (sorted). ``current_version`` is the version the
    move is checked against: where the label points now or, for a deleted label, where it last
    pointed (``None``: the label was never set, so the move is not checked).
    """

    compatible: bool
    mode: CompatibilityMode
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    current_version: int | None = None
    version: int | None = None
    type_change: tuple[VersionType, VersionType] | None = None
    kind_changes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Interface:
    """What a caller passes to render a version and what it gets back (the module docstring)."""

    type: VersionType
    variables: frozenset[str]
    placeholders: frozenset[str]

    @property
    def inputs(self) -> frozenset[str]:
        """The variable and placeholder names."""
        return self.variables | self.placeholders


def validate_mode(mode: object) -> CompatibilityMode:
    """Return ``mode`` if it is ``"none"``, ``"backward"`` or ``"full"``; else :class:`InvalidInputError`."""
    if not isinstance(mode, str) or mode not in MODES:
        raise InvalidInputError(f"compatibility must be one of {', '.join(MODES)}, got {mode!r:.80}")
    return mode


def inputs_of(version: PromptVersion) -> frozenset[str]:
    """What a caller must pass to render ``version``: its variables and its placeholders."""
    return version.variables | version.placeholders


def interface_of(version: PromptVersion) -> Interface:
    """The interface of ``version``: its type, variables and placeholders."""
    return Interface(version.type, version.variables, version.placeholders)


def encode_inputs(names: Iterable[str]) -> str:
    """Names as stored beside a Redis version (``inputs``, ``placeholders``): sorted, space-separated."""
    return " ".join(sorted(names))


def compare(
    mode: CompatibilityMode, current: Interface | None, target: Interface, version: int | None = None,
    current_version: int | None = None,
) -> CompatibilityReport:  # fmt: skip
    """The report for moving a label whose version has interface ``current`` (``None``: never set)
    to a version with interface ``target``."""
    if current is None:
        return CompatibilityReport(True, mode, (), (), None, version)
    added = tuple(sorted(target.inputs - current.inputs))
    removed = tuple(sorted(current.inputs - target.inputs))
    type_change = None if current.type == target.type else (current.type, target.type)
    kind_changes = tuple(sorted((current.variables & target.placeholders) | (current.placeholders & target.variables)))
    if mode == "none":
        ok = True
    else:
        ok = not added and type_change is None and not kind_changes and (mode == "backward" or not removed)
    return CompatibilityReport(ok, mode, added, removed, current_version, version, type_change, kind_changes)


def check(mode: CompatibilityMode, current: PromptVersion | None, target: PromptVersion) -> CompatibilityReport:
    """The report for moving a label from ``current`` (``None``: never set) to ``target`` under ``mode``."""
    return compare(
        mode,
        None if current is None else interface_of(current),
        interface_of(target),
        target.version,
        None if current is None else current.version,
    )


def deleted_labels(history: Iterable[AuditEvent]) -> dict[str, int]:
    """Where each deleted label of a prompt pointed when it was deleted, from its audit trail (oldest
    first): the version its next move is checked against. A label set again is no longer deleted."""
    deleted: dict[str, int] = {}
    for event in history:
        if event.label is None:
            continue
        if event.action == "delete_label" and event.previous_version is not None:
            deleted[event.label] = event.previous_version
        elif event.action in ("set_label", "rollback"):
            deleted.pop(event.label, None)
    return deleted


def reasons(report: CompatibilityReport) -> list[str]:
    """Why ``report``'s move is refused, one short phrase per reason (empty when nothing changed)."""
    version, current = report.version, report.current_version
    why = []
    if report.type_change is not None:
        before, after = report.type_change
        returns = "a list of messages" if after == "chat" else "a string"
        why.append(
            f"version {version} is a {after} prompt and version {current} a {before} one: render returns {returns}"
        )
    if report.added:
        why.append(f"version {version} needs {', '.join(report.added)}, which version {current} does not take")
    if report.kind_changes:
        why.append(f"{', '.join(report.kind_changes)} switches between a {{{{variable}}}} and a placeholder")
    if report.removed:
        why.append(f"it no longer takes {', '.join(report.removed)}")
    return why


def refusal_error(name: str, label: str, report: CompatibilityReport) -> IncompatibleVersionError:
    """The :class:`~promptreg.IncompatibleVersionError` of a refused move, saying every reason."""
    error = IncompatibleVersionError(
        name, label, int(report.version or 0), report.current_version, report.mode, report.added, report.removed
    )
    if report.type_change is not None or report.kind_changes:
        # The error's own message names added and removed inputs only; say the other reasons too.
        error.args = (
            f"prompt {name!r}: label {label} {report.current_version} -> {report.version} refused under "
            f"{report.mode} compatibility: {'; '.join(reasons(report))} (force to move anyway)",
        )
    return error


def enforce(
    name: str, label: str, mode: CompatibilityMode, current: PromptVersion | None, target: PromptVersion, force: bool
) -> bool:
    """Check a label move inside a backend's write; returns whether it goes through only by ``force``.

    ``current`` is the version the label last pointed at (where it points, or where it pointed when
    it was deleted; ``None``: never set, never checked). Raises
    :class:`~promptreg.IncompatibleVersionError` when ``mode`` refuses moving from ``current`` to
    ``target`` and ``force`` is false.
    """
    if mode == "none" or current is None or current.version == target.version:
        return False
    report = check(mode, current, target)
    if report.compatible:
        return False
    if force:
        return True
    raise refusal_error(name, label, report)
