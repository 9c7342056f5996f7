"""What the PostgreSQL store supplies to its mixins (rollouts, governance): the transaction, the row
locks, the compatibility check and the audit row, declared once."""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from promptreg.registry.models import AuditAction, AuditEvent, CompatibilityMode


class StorePieces(ABC):
    """The pieces of :class:`~promptreg.registry.postgres.store.PostgresPromptRegistry` a mixin's
    writes are made of (each runs inside the transaction :meth:`_write` opens)."""

    namespace: str

    @abstractmethod
    def _write(self) -> AbstractContextManager[tuple[Any, int]]: ...

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]: ...

    @abstractmethod
    def _lock_prompt(self, conn: Any, name: str) -> int: ...

    @abstractmethod
    def _lock_label(self, conn: Any, name: str, label: str) -> tuple[int | None, int | None]: ...

    @abstractmethod
    def _check(self, conn: Any, name: str, label: str, current: int | None, target: int, force: bool) -> bool: ...

    @abstractmethod
    def _commit(
        self, conn: Any, rev: int, action: AuditAction, name: str, at: datetime, label: str | None = None,
        version: int | None = None, previous: int | None = None, author: str | None = None,
        reason: str | None = None, forced: bool = False, compatibility: CompatibilityMode | None = None,
        points: int | None = None, request: str | None = None, approvals: int | None = None,
    ) -> AuditEvent: ...  # fmt: skip
