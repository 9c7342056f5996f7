"""Protected labels and move requests on PostgreSQL (:mod:`promptreg.registry.governance`).

Each step is one write of the store (:class:`~promptreg.registry.postgres.store.PostgresPromptRegistry`):
the namespace's revision row is locked, the checks run (those of every backend, in Python, with
typed errors), the rows are written, the audit row appended, the revision bumped and the change
notified, all in one transaction. What the roles may not do is refused by the database itself
(:mod:`promptreg.registry.postgres.governance_schema`): protections are written with the admin's
grants, requests, approvals and rejections only through ``SECURITY DEFINER`` functions that check
identities again (the author string and the login role), and the move of an approved request is made
by such a function, since no other role may write a protected label's row. A refusal of the
database's is translated here (:func:`_refusals`): a permission it refuses is a
:class:`~promptreg.RegistryAuthError` at the store's boundary.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from promptreg.registry.errors import (
    ApprovalError,
    InvalidInputError,
    LabelConflictError,
    PromptRegistryError,
    RequestNotFoundError,
    RequestStateError,
    RolloutActiveError,
    VersionNotFoundError,
)
from promptreg.registry.governance import (
    Approval,
    LabelProtection,
    MoveRequest,
    RequestState,
    check_applicable,
    check_decidable,
    refuse_protected,
)
from promptreg.registry.models import AuditAction, AuditEvent
from promptreg.registry.postgres.governance_schema import APPLY_FUNCTION, DECIDE_FUNCTION, REFUSALS, REQUEST_FUNCTION
from promptreg.registry.postgres.pieces import StorePieces
from promptreg.registry.postgres.rows import AUDIT_COLUMNS, event_from_row, utc
from promptreg.registry.postgres.schema import GOVERNANCE_SCHEMA

_REQUEST = """
    SELECT r.id, r.name, r.label, r.version, r.from_version, r.author, r.reason, r.created_at, r.expires_at,
           r.state, r.approvals_required, r.decided_by, r.decided_at, r.decision_reason, r.applied_rev,
           ARRAY(SELECT a.author FROM promptreg_approvals a WHERE a.namespace = r.namespace AND a.request = r.id
                 ORDER BY a.at, a.author),
           ARRAY(SELECT a.at FROM promptreg_approvals a WHERE a.namespace = r.namespace AND a.request = r.id
                 ORDER BY a.at, a.author)
    FROM promptreg_requests r
"""
"""A request row with its approvals (authors and times, in the order given)."""


def _call(signature: str) -> str:
    """``SELECT f(%s, ...)`` for a function signature of governance_schema."""
    name, args = signature.split("(", 1)
    return f"SELECT {name}({', '.join(['%s'] * len(args.split(',')))})"


def _request_from_row(row: tuple[Any, ...]) -> MoveRequest:
    (id_, name, label, version, from_version, author, reason, created_at, expires_at, state, required,
     decided_by, decided_at, decision_reason, applied_rev, authors, times) = row  # fmt: skip
    return MoveRequest(
        id=id_, prompt=name, label=label, version=version, from_version=from_version, author=author, reason=reason,
        created_at=utc(created_at), expires_at=utc(expires_at), state=RequestState(state),
        approvals_required=required, approvals=tuple(Approval(author=a, at=utc(t)) for a, t in zip(authors, times,
                                                                                                  strict=True)),
        decided_by=decided_by, decided_at=None if decided_at is None else utc(decided_at),
        decision_reason=decision_reason, applied_rev=applied_rev,
    )  # fmt: skip


def not_protected(name: str, label: str) -> InvalidInputError:
    """The refusal of a request, or of an unprotect, on a label that is not protected."""
    return InvalidInputError(f"label {label!r} of prompt {name!r} is not protected")


@contextmanager
def _refusals(request_id: str) -> Iterator[None]:
    """Translate the refusals the governance functions raise (their SQLSTATEs) into typed errors;
    every other database error goes on to the store's boundary (``map_postgres_errors``)."""
    try:
        yield
    except Exception as exc:
        code = getattr(exc, "sqlstate", None)
        if code not in REFUSALS:
            raise
        diag = exc.diag  # type: ignore[attr-defined]
        message, detail = diag.message_primary or "", diag.message_detail or ""
        error: PromptRegistryError
        if code == "PRN01":
            error = RequestNotFoundError(request_id)
        elif code == "PRS01":
            error = RequestStateError(request_id, detail or "undecidable")
        elif code == "PRA01":
            error = ApprovalError(request_id, message)
        else:  # PRC01, PRP01, PRR01, PRV01: the Python checks before the call raise these first
            error = PromptRegistryError(f"move request {request_id!r}: {message}")
        raise error from None


class PostgresGovernance(StorePieces):
    """The governance primitives of the PostgreSQL store, and the check its direct label moves make
    (:meth:`_refuse_protected`). Mixed into the store, which supplies the transaction, the row locks
    and the checks declared below."""

    _schema: int

    # -- what the store supplies ------------------------------------------------------------------

    @abstractmethod
    def _check_graph(self, conn: Any, name: str, label: str, target: int | None, force: bool) -> bool: ...

    if TYPE_CHECKING:  # PostgresRollouts' (a later base: declared abstract here, it would shadow it)

        def _lock_rollout(self, conn: Any, name: str, label: str) -> tuple[int, int] | None: ...

    # -- inside a write's transaction -------------------------------------------------------------

    def _refuse_protected(self, conn: Any, name: str, label: str) -> None:
        """A direct move of a protected label (set_label, rollback, delete_label, a rollout) raises
        :class:`~promptreg.ProtectedLabelError`."""
        found = conn.execute(
            "SELECT 1 FROM promptreg_protections WHERE namespace = %s AND name = %s AND label = %s",
            (self.namespace, name, label),
        ).fetchone()
        refuse_protected(found is not None, name, label)

    def _request_row(self, conn: Any, request_id: str) -> MoveRequest | None:
        row = conn.execute(f"{_REQUEST} WHERE r.namespace = %s AND r.id = %s", (self.namespace, request_id))
        found = row.fetchone()
        return None if found is None else _request_from_row(found)

    def _check_move(self, conn: Any, request: MoveRequest) -> int | None:
        """The checks of the move ``request`` asks, as set_label makes them without force: the
        label still where the request found it (:class:`~promptreg.LabelConflictError`), no rollout,
        compatibility and composition. Returns where the label points."""
        name, label = request.prompt, request.label
        self._lock_prompt(conn, name)
        current, previous = self._lock_label(conn, name, label)
        if current != request.from_version:
            expected = 0 if request.from_version is None else request.from_version
            raise LabelConflictError(name, label, expected, current)
        rollout = self._lock_rollout(conn, name, label)
        if rollout is not None:
            raise RolloutActiveError(name, label, rollout[0])
        self._check(conn, name, label, current if current is not None else previous, request.version, False)
        self._check_graph(conn, name, label, request.version, False)
        return current

    def _applied(self, conn: Any, rev: int, request: MoveRequest, author: str, at: datetime) -> MoveRequest:
        """The tail of a write that applied ``request`` (moved from ``request.from_version``): the
        move's audit row, a ``set_label`` naming the request."""
        applied = self._request_row(conn, request.id)
        assert applied is not None and applied.applied_rev == rev + 1
        self._commit(conn, rev, "set_label", request.prompt, at, request.label, request.version, request.from_version,
                     author, request.reason, request=request.id)  # fmt: skip
        return applied

    # -- the primitives ---------------------------------------------------------------------------

    def _protect_label(
        self, name: str, label: str, approvals: int | None, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        with self._write() as (conn, rev):
            self._lock_prompt(conn, name)
            key = (self.namespace, name, label)
            if approvals is None:
                gone = conn.execute(
                    "DELETE FROM promptreg_protections WHERE namespace = %s AND name = %s AND label = %s RETURNING 1",
                    key,
                ).fetchone()
                if gone is None:
                    raise not_protected(name, label)
                return self._commit(conn, rev, "unprotect_label", name, at, label, author=author, reason=reason)
            rollout = self._lock_rollout(conn, name, label)
            if rollout is not None:
                raise RolloutActiveError(name, label, rollout[0])
            conn.execute(
                "INSERT INTO promptreg_protections (namespace, name, label, approvals) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (namespace, name, label) DO UPDATE SET approvals = EXCLUDED.approvals",
                (*key, approvals),
            )
            return self._commit(conn, rev, "protect_label", name, at, label, author=author, reason=reason,
                                approvals=approvals)  # fmt: skip

    def _protections(self, name: str | None) -> list[LabelProtection]:
        with self._read() as conn:
            if self._schema < GOVERNANCE_SCHEMA:
                return []
            rows = conn.execute(
                "SELECT name, label, approvals FROM promptreg_protections WHERE namespace = %s "
                "AND (%s::text IS NULL OR name = %s)",
                (self.namespace, name, name),
            ).fetchall()
        return [LabelProtection(prompt=prompt, label=label, approvals=count) for prompt, label, count in rows]

    def _request_move(self, request: MoveRequest) -> MoveRequest:
        name, label = request.prompt, request.label
        with self._write() as (conn, rev), _refusals(request.id):
            if request.version > self._lock_prompt(conn, name):
                raise VersionNotFoundError(name, request.version)
            found = conn.execute(
                "SELECT 1 FROM promptreg_protections WHERE namespace = %s AND name = %s AND label = %s",
                (self.namespace, name, label),
            ).fetchone()
            if found is None:
                raise not_protected(name, label)
            conn.execute(
                _call(REQUEST_FUNCTION),
                (self.namespace, request.id, name, label, request.version, request.author, request.reason,
                 request.created_at, request.expires_at),
            )  # fmt: skip
            stored = self._request_row(conn, request.id)
            assert stored is not None
            self._commit(conn, rev, "request_move", name, stored.created_at, label, stored.version,
                         stored.from_version, stored.author, stored.reason, request=stored.id)  # fmt: skip
            return stored

    def _decide(
        self, request_id: str, author: str, at: datetime, *, approve: bool, apply: bool, reason: str | None
    ) -> MoveRequest:
        with self._write() as (conn, rev), _refusals(request_id):
            current = check_decidable(self._request_row(conn, request_id), request_id, author, at, approving=approve)
            if approve and apply and len(current.approvals) + 1 >= self._required(conn, current):
                self._check_move(conn, current)  # before anything is recorded: a refused move records nothing
            state = conn.execute(_call(DECIDE_FUNCTION), (self.namespace, request_id, author, at, approve, apply,
                                                          reason)).fetchone()[0]  # fmt: skip
            if state == RequestState.APPLIED:
                return self._applied(conn, rev, current, author, at)
            action: AuditAction = "approve_request" if approve else "reject_request"
            self._commit(conn, rev, action, current.prompt, at, current.label, current.version, current.from_version,
                         author, reason, request=request_id)  # fmt: skip
            decided = self._request_row(conn, request_id)
            assert decided is not None
            return decided

    def _required(self, conn: Any, request: MoveRequest) -> int:
        """The approvals ``request`` needs: its own count, raised to the protection's if an admin raised
        it since (``promptreg_decide_request`` computes the same in the same transaction)."""
        row = conn.execute(
            "SELECT approvals FROM promptreg_protections WHERE namespace = %s AND name = %s AND label = %s",
            (self.namespace, request.prompt, request.label),
        ).fetchone()
        return max(request.approvals_required, row[0] if row else 1)

    def _apply_request(self, request_id: str, author: str, at: datetime) -> MoveRequest:
        with self._write() as (conn, rev), _refusals(request_id):
            current = check_applicable(self._request_row(conn, request_id), request_id, at)
            self._check_move(conn, current)
            conn.execute(_call(APPLY_FUNCTION), (self.namespace, request_id, author, at))
            return self._applied(conn, rev, current, author, at)

    # -- reads ------------------------------------------------------------------------------------

    def _get_request(self, request_id: str) -> MoveRequest | None:
        with self._read() as conn:
            if self._schema < GOVERNANCE_SCHEMA:
                return None
            return self._request_row(conn, request_id)

    def _list_requests(self, name: str | None) -> list[MoveRequest]:
        with self._read() as conn:
            if self._schema < GOVERNANCE_SCHEMA:
                return []
            rows = conn.execute(
                f"{_REQUEST} WHERE r.namespace = %s AND (%s::text IS NULL OR r.name = %s)",
                (self.namespace, name, name),
            ).fetchall()
        return [_request_from_row(row) for row in rows]

    def _audit_columns(self) -> str:
        """The audit columns the store's history reads select: :data:`AUDIT_COLUMNS`, then
        ``request, approvals`` (``NULL`` on a schema before migration 7)."""
        extra = "request, approvals" if self._schema >= GOVERNANCE_SCHEMA else "NULL, NULL"
        return f"{AUDIT_COLUMNS}, {extra}"


def event_with_request(row: tuple[Any, ...]) -> AuditEvent:
    """An :class:`AuditEvent` from a row of :meth:`PostgresGovernance._audit_columns`."""
    event = event_from_row(row[:-2])
    request, approvals = row[-2:]
    if request is None and approvals is None:
        return event
    return event.model_copy(update={"request": request, "approvals": approvals})
