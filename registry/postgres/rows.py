"""Rows of the PostgreSQL tables as promptreg's models: the columns the store selects and the
functions that read them (the registry's reads and the client's PostgreSQL feed share them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from promptreg.registry.models import AuditEvent, PromptVersion, Rollout
from promptreg.registry.rollouts import percent_of

VERSION_COLUMNS = "version, prompt_text, author, message, metadata, created_at, messages, config"
"""The columns :func:`version_from_row` reads, in order (the client's PostgreSQL feed selects them too)."""
AUDIT_COLUMNS = (
    "rev, at, action, prompt, label, version, previous_version, author, reason, forced, compatibility, points"
)
"""The columns :func:`event_from_row` reads, in order (``points``: a rollout's share, schema migration 5)."""


def utc(value: datetime) -> datetime:
    """``value`` (a ``timestamptz``) in UTC."""
    return value.astimezone(UTC)


def version_from_row(row: tuple[Any, ...]) -> PromptVersion:
    """A :class:`PromptVersion` from a row of ``version, prompt_text, author, message, metadata,
    created_at, messages, config`` (the last two optional: rows selected before chat versions)."""
    number, text, author, message, metadata, created_at, *chat = row
    messages, config = [*chat, None, None][:2]
    return PromptVersion(version=number, prompt_text=text, created_at=utc(created_at), author=author,
                         message=message, metadata=metadata, messages=messages, config=config or {})  # fmt: skip


def event_from_row(row: tuple[Any, ...]) -> AuditEvent:
    """An :class:`AuditEvent` from a row of :data:`AUDIT_COLUMNS`."""
    rev, at, action, prompt, label, version, previous, author, reason, forced, compatibility, points = row
    return AuditEvent(rev=rev, at=utc(at), action=action, prompt=prompt, label=label, version=version,
                      previous_version=previous, author=author, reason=reason, forced=forced,
                      compatibility=compatibility, percent=None if points is None else percent_of(points))  # fmt: skip


def rollout_from_row(candidate: int, points: int, started_at: datetime, author: str | None) -> Rollout:
    """A :class:`Rollout` from ``candidate, points, started_at, author`` of ``promptreg_rollouts``."""
    return Rollout(version=candidate, percent=percent_of(points), started_at=utc(started_at), author=author)
