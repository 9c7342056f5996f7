"""Percentage rollouts on PostgreSQL (:mod:`promptreg.registry.rollouts`): the table
``promptreg_rollouts`` holds one row per rollout running (``candidate``, ``points``: its share in
hundredths of a percent, ``started_at``, ``author``), keyed by its label; the row is deleted when the
rollout is promoted or aborted.

Each write is one transaction like every other write of the store
(:class:`~promptreg.registry.postgres.store.PostgresPromptRegistry`): the namespace's revision row,
then the prompt row and the label row are locked, every check runs on what they hold, then the
rollout row is written, the audit row (with the share in ``points``) is appended, the revision is
bumped and the change is notified. A refusal raises before anything is written. The label row's
lock also orders a rollout against a ``set_label`` of the same label; the foreign keys keep a rollout
on an existing label row and an existing version. Every rollout write of a protected label is refused
(:class:`~promptreg.ProtectedLabelError`), in Python and by the table's trigger
(:mod:`promptreg.registry.postgres.governance_schema`).
"""

from __future__ import annotations

from abc import abstractmethod
from datetime import datetime
from typing import Any

from promptreg.registry.errors import (
    LabelNotFoundError,
    RolloutActiveError,
    RolloutNotFoundError,
    VersionNotFoundError,
)
from promptreg.registry.models import AuditEvent, Rollout
from promptreg.registry.postgres.pieces import StorePieces
from promptreg.registry.postgres.rows import rollout_from_row
from promptreg.registry.rollouts import same_version


class PostgresRollouts(StorePieces):
    """The rollout primitives of the PostgreSQL store, and the check its plain label moves make
    (:meth:`_no_rollout`). Mixed into :class:`~promptreg.registry.postgres.store.PostgresPromptRegistry`,
    which supplies the transaction and the row locks declared below."""

    # -- what the store supplies ------------------------------------------------------------------

    @abstractmethod
    def _put_label(self, conn: Any, name: str, label: str, version: int | None, previous: int | None) -> None: ...

    @abstractmethod
    def _check_rollout(self, conn: Any, name: str, label: str, candidate: int) -> None: ...

    @abstractmethod
    def _refuse_protected(self, conn: Any, name: str, label: str) -> None: ...

    # -- inside a write's transaction -------------------------------------------------------------

    def _lock_rollout(self, conn: Any, name: str, label: str) -> tuple[int, int] | None:
        """Lock the rollout row of ``label``: ``(candidate, points)``, or ``None`` when none runs."""
        row = conn.execute(
            "SELECT candidate, points FROM promptreg_rollouts WHERE namespace = %s AND name = %s AND label = %s "
            "FOR UPDATE",
            (self.namespace, name, label),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _no_rollout(self, conn: Any, name: str, label: str) -> None:
        """A plain move of ``label`` (``set_label``, ``rollback``, ``delete_label``) is refused while a
        rollout runs on it: :class:`~promptreg.RolloutActiveError`."""
        found = self._lock_rollout(conn, name, label)
        if found is not None:
            raise RolloutActiveError(name, label, found[0])

    def _running(self, conn: Any, name: str, label: str) -> tuple[int, int, int]:
        """``(stable, candidate, points)`` of the rollout of ``label``, its rows locked; raises
        :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.ProtectedLabelError` or
        :class:`~promptreg.RolloutNotFoundError`."""
        self._lock_prompt(conn, name)
        stable, _previous = self._lock_label(conn, name, label)
        self._refuse_protected(conn, name, label)
        found = self._lock_rollout(conn, name, label)
        if found is None or stable is None:  # a rollout's label is never deleted (_no_rollout)
            raise RolloutNotFoundError(name, label)
        return stable, found[0], found[1]

    # -- the primitives ---------------------------------------------------------------------------

    def _start_rollout(
        self, name: str, label: str, version: int, points: int, author: str | None, reason: str | None,
        at: datetime, *, force: bool,
    ) -> AuditEvent:  # fmt: skip
        with self._write() as (conn, rev):
            latest = self._lock_prompt(conn, name)
            stable, _previous = self._lock_label(conn, name, label)
            self._refuse_protected(conn, name, label)
            if stable is None:
                raise LabelNotFoundError(name, label)
            self._no_rollout(conn, name, label)
            if version > latest:
                raise VersionNotFoundError(name, version)
            if version == stable:
                raise same_version(name, label, version)
            forced = self._check(conn, name, label, stable, version, force)
            self._check_rollout(conn, name, label, version)
            conn.execute(
                "INSERT INTO promptreg_rollouts (namespace, name, label, candidate, points, started_at, author) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (self.namespace, name, label, version, points, at, author),
            )
            return self._commit(conn, rev, "start_rollout", name, at, label, version, stable, author, reason, forced,
                                points=points)  # fmt: skip

    def _set_rollout(
        self, name: str, label: str, points: int, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        with self._write() as (conn, rev):
            stable, candidate, _points = self._running(conn, name, label)
            conn.execute(
                "UPDATE promptreg_rollouts SET points = %s WHERE namespace = %s AND name = %s AND label = %s",
                (points, self.namespace, name, label),
            )
            return self._commit(conn, rev, "set_rollout", name, at, label, candidate, stable, author, reason,
                                points=points)  # fmt: skip

    def _end_rollout(
        self, name: str, label: str, promote: bool, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        with self._write() as (conn, rev):
            stable, candidate, _points = self._running(conn, name, label)
            conn.execute(
                "DELETE FROM promptreg_rollouts WHERE namespace = %s AND name = %s AND label = %s",
                (self.namespace, name, label),
            )
            if not promote:
                return self._commit(conn, rev, "abort_rollout", name, at, label, stable, candidate, author, reason)
            # One label move, as set_label makes it: the stable version becomes the rollback target.
            self._put_label(conn, name, label, candidate, stable)
            return self._commit(conn, rev, "promote_rollout", name, at, label, candidate, stable, author, reason)

    # -- reads ------------------------------------------------------------------------------------

    def _rollouts_of(self, conn: Any, name: str) -> dict[str, Rollout]:
        """The rollouts running on the labels of ``name``, in the caller's transaction."""
        rows = conn.execute(
            "SELECT label, candidate, points, started_at, author FROM promptreg_rollouts "
            "WHERE namespace = %s AND name = %s ORDER BY label",
            (self.namespace, name),
        ).fetchall()
        return {label: rollout_from_row(*rest) for label, *rest in rows}

    def _list_rollouts(self) -> dict[str, dict[str, Rollout]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, label, candidate, points, started_at, author FROM promptreg_rollouts "
                "WHERE namespace = %s",
                (self.namespace,),
            ).fetchall()
        found: dict[str, dict[str, Rollout]] = {}
        for name, label, *rest in rows:
            found.setdefault(name, {})[label] = rollout_from_row(*rest)
        return found
