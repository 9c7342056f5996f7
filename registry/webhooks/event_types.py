"""The webhook event types, and which of them an audit entry makes.

============================  ===================================================================
type                          sent for
============================  ===================================================================
``label.moved``               ``set_label``, ``rollback``, ``delete_label``, ``promote_rollout``
``request.pending``           ``request_move`` (a move request waits for approvals)
``request.approved``          ``approve_request``, and a ``set_label`` with ``request`` set (the
                              approval that applied the move: ``request.approved`` then
                              ``label.moved``, from the one audit entry)
``request.rejected``          ``reject_request``
``fleet.converged``           after a ``label.moved``: every reporting client serves its revision
``fleet.lagging``             ... some did not within the fleet timeout (they are listed)
``registry.resync``           the audit log no longer covers the cursor, or a restore rewrote the
                              history: events may have been missed; delivery goes on from the
                              current revision
``audit.<action>``            every other audit action (``audit.add_version``, ...)
============================  ===================================================================

An endpoint subscribes with patterns (:func:`fnmatch.fnmatchcase`: ``*``, ``?``, ``[...]``):
``request.*``, ``label.moved``, ``fleet.*``; ``*`` (the default) is every type.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Final, get_args

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.models import AuditAction, AuditEvent

LABEL_MOVED: Final = "label.moved"
REQUEST_PENDING: Final = "request.pending"
REQUEST_APPROVED: Final = "request.approved"
REQUEST_REJECTED: Final = "request.rejected"
FLEET_CONVERGED: Final = "fleet.converged"
FLEET_LAGGING: Final = "fleet.lagging"
RESYNC: Final = "registry.resync"
FLEET_STEP: Final = "fleet"
"""The step of an audit entry whose type is known only once the fleet answered (converged or lagging)."""

LABEL_MOVES: Final = frozenset({"set_label", "rollback", "delete_label", "promote_rollout"})
"""The audit actions that move a label (each a ``label.moved``, then a fleet event)."""
_REQUEST_TYPES: Final = {
    "request_move": REQUEST_PENDING,
    "approve_request": REQUEST_APPROVED,
    "reject_request": REQUEST_REJECTED,
}

EVENT_TYPES: Final[tuple[str, ...]] = (
    LABEL_MOVED,
    REQUEST_PENDING,
    REQUEST_APPROVED,
    REQUEST_REJECTED,
    FLEET_CONVERGED,
    FLEET_LAGGING,
    RESYNC,
    *(f"audit.{action}" for action in get_args(AuditAction) if action not in LABEL_MOVES | set(_REQUEST_TYPES)),
)
"""Every type a webhook can carry."""

MAX_PATTERNS: Final = 32
MAX_PATTERN_LENGTH: Final = 64


def steps_of(event: AuditEvent) -> list[str]:
    """The messages one audit entry makes, in order: event types, and :data:`FLEET_STEP` after a
    label move (its type, converged or lagging, is decided when it is sent)."""
    if event.action in LABEL_MOVES:
        approved = [REQUEST_APPROVED] if event.action == "set_label" and event.request else []
        return [*approved, LABEL_MOVED, FLEET_STEP]
    return [_REQUEST_TYPES.get(event.action, f"audit.{event.action}")]


def validate_patterns(patterns: object) -> tuple[str, ...]:
    """The event patterns of an endpoint, each matching at least one of :data:`EVENT_TYPES` (a typo
    would silently match nothing). Raises :class:`~promptreg.InvalidInputError`."""
    if isinstance(patterns, str) or not isinstance(patterns, list | tuple):
        raise InvalidInputError("events must be a list of event type patterns")
    if not patterns:
        raise InvalidInputError("events must name at least one event type pattern (* for all)")
    if len(patterns) > MAX_PATTERNS:
        raise InvalidInputError(f"at most {MAX_PATTERNS} event patterns, got {len(patterns)}")
    clean: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not 0 < len(pattern) <= MAX_PATTERN_LENGTH or not pattern.isprintable():
            raise InvalidInputError(f"an event pattern is 1 to {MAX_PATTERN_LENGTH} printable characters, got "
                                    f"{str(pattern)[:MAX_PATTERN_LENGTH]!r}")  # fmt: skip
        if not any(fnmatchcase(kind, pattern) for kind in EVENT_TYPES):
            raise InvalidInputError(
                f"event pattern {pattern!r} matches no event type (types: {', '.join(EVENT_TYPES[:7])}, audit.<action>)"
            )
        if pattern not in clean:
            clean.append(pattern)
    return tuple(clean)


def matches(patterns: tuple[str, ...], kind: str) -> bool:
    """Whether an endpoint subscribed with ``patterns`` gets events of type ``kind``."""
    return any(fnmatchcase(kind, pattern) for pattern in patterns)
