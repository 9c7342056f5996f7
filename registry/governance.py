"""Protected labels and approvals: a label whose moves need a second identity's approval.

``protect_label(name, label, approvals=N)`` (admin) makes every direct move of that label
(``set_label``, ``rollback``, ``delete_label``, rollouts) fail with
:class:`~promptreg.ProtectedLabelError`. The one route is a request:

1. ``request_label_move(name, label, version, author=..., reason=...)`` records a
   :class:`MoveRequest` in state ``pending``, with where the label points now (``from_version``).
2. ``approve(request_id, author=...)`` by an identity other than the requester, each approver once.
   The approval that reaches the protection's count performs the move in the same atomic write
   (``apply=False`` leaves the request ``approved`` for a later :meth:`GovernanceWrites.apply_request`).
   The move is the label's compare-and-set from ``from_version`` and its compatibility and
   composition checks: a label moved meanwhile refuses the approval
   (:class:`~promptreg.LabelConflictError`) and nothing is recorded.
3. ``reject(request_id, author=...)`` ends it; a request not applied within ``expires_in`` seconds
   (default 24 h) is ``expired``.

Every step is one atomic, audited write that publishes a change message (DESIGN.md section 6), so
the webhooks and the change stream see each of them. Where it is enforced against a writer that
goes around the Python API: docs/governance.md (Redis ACL roles, PostgreSQL grants; the JSON file
records approvals but cannot stop someone who edits the file).
"""

from __future__ import annotations

import re
import secrets
from abc import abstractmethod
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptreg.registry.errors import (
    ApprovalError,
    InvalidInputError,
    ProtectedLabelError,
    RequestNotFoundError,
    RequestStateError,
)
from promptreg.registry.models import AuditEvent, _as_utc, utcnow
from promptreg.registry.validation import validate_label, validate_name, validate_text_field, validate_version_number

DEFAULT_EXPIRES_IN = 24 * 3600
"""Seconds a request stays open unless ``expires_in`` says otherwise."""
MAX_EXPIRES_IN = 30 * 24 * 3600
"""The longest a request may stay open: 30 days."""
MAX_APPROVALS = 10
"""The most approvals a protection may require."""
MAX_LISTED = 1000
"""The most requests :meth:`GovernanceWrites.list_requests` returns."""
REQUEST_ID = re.compile(r"[0-9a-f]{16}")
"""A request id: 16 lowercase hex digits, random."""


class RequestState(StrEnum):
    """Where a :class:`MoveRequest` stands."""

    PENDING = "pending"
    """Waiting for approvals."""
    APPROVED = "approved"
    """Approved by enough identities, not applied yet (``approve(..., apply=False)``)."""
    REJECTED = "rejected"
    """Rejected by an approver: it can no longer be applied."""
    APPLIED = "applied"
    """The label moved (``applied_rev`` is the write's revision)."""
    EXPIRED = "expired"
    """Not applied before ``expires_at``."""


class Approval(BaseModel):
    """One identity's approval of a request."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    author: str
    at: datetime

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class LabelProtection(BaseModel):
    """A protected label: its moves need ``approvals`` approvals by identities other than the requester."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    label: str
    approvals: int = Field(ge=1, le=MAX_APPROVALS)


class MoveRequest(BaseModel):
    """A request to move a protected label: ``label`` of ``prompt`` from ``from_version`` (``None``:
    not set when requested) to ``version``, asked by ``author`` for ``reason``.

    ``state`` is as stored, except that a pending or approved request read after ``expires_at`` is
    ``expired``. ``approvals_required`` is the protection's count when the request was made.
    ``decided_by`` / ``decided_at`` are the rejecter's (state ``rejected``) or the identity whose
    write applied it (state ``applied``, with the write's revision in ``applied_rev``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    prompt: str
    label: str
    version: int
    from_version: int | None = None
    author: str
    reason: str
    created_at: datetime
    expires_at: datetime
    state: RequestState = RequestState.PENDING
    approvals_required: int = Field(default=1, ge=1, le=MAX_APPROVALS)
    approvals: tuple[Approval, ...] = ()
    decided_by: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None
    applied_rev: int | None = None

    @field_validator("created_at", "expires_at", "decided_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _as_utc(value)

    def as_of(self, now: datetime) -> MoveRequest:
        """This request as read at ``now``: ``expired`` once past ``expires_at`` unless decided."""
        if self.state in (RequestState.PENDING, RequestState.APPROVED) and now >= self.expires_at:
            return self.model_copy(update={"state": RequestState.EXPIRED})
        return self


def new_request_id() -> str:
    """A fresh random request id (:data:`REQUEST_ID`)."""
    return secrets.token_hex(8)


def validate_request_id(request_id: object) -> str:
    """The id, or :class:`~promptreg.InvalidInputError` unless it is 16 lowercase hex digits."""
    if not isinstance(request_id, str) or REQUEST_ID.fullmatch(request_id) is None:
        raise InvalidInputError(f"invalid request id {request_id!r:.40}: 16 lowercase hex digits expected")
    return request_id


def validate_identity(author: object, what: str = "author") -> str:
    """A non-empty identity (or reason) string, bounded like every text field."""
    if not isinstance(author, str) or not author.strip():
        raise InvalidInputError(f"{what} is required: approvals compare identities")
    clean = validate_text_field(author, what)
    assert clean is not None
    return clean


def check_decidable(
    request: MoveRequest | None, request_id: str, author: str, at: datetime, *, approving: bool
) -> MoveRequest:
    """The checks every backend makes before recording an approval or a rejection of ``request_id``
    by ``author`` at ``at``: returns the request as of ``at``, else raises
    :class:`~promptreg.RequestNotFoundError`, :class:`~promptreg.RequestStateError` (not pending,
    or expired) or :class:`~promptreg.ApprovalError` (the requester, or an identity that approved
    already)."""
    if request is None:
        raise RequestNotFoundError(request_id)
    current = request.as_of(at)
    wanted = (RequestState.PENDING,) if approving else (RequestState.PENDING, RequestState.APPROVED)
    if current.state not in wanted:
        raise RequestStateError(request_id, current.state.value)
    if author == current.author:
        raise ApprovalError(request_id, f"{author!r} made this request: another identity must decide it")
    if approving and any(approval.author == author for approval in current.approvals):
        raise ApprovalError(request_id, f"{author!r} approved this request already")
    return current


def check_applicable(request: MoveRequest | None, request_id: str, at: datetime) -> MoveRequest:
    """An approved request that may be applied at ``at``, or the typed refusal."""
    if request is None:
        raise RequestNotFoundError(request_id)
    current = request.as_of(at)
    if current.state is not RequestState.APPROVED:
        raise RequestStateError(request_id, current.state.value)
    return current


def refuse_protected(protected: bool, name: str, label: str) -> None:
    """Raise :class:`~promptreg.ProtectedLabelError` for a direct move of a protected label."""
    if protected:
        raise ProtectedLabelError(name, label)


class GovernanceWrites:
    """The protected-label methods of :class:`~promptreg.PromptRegistry` (validation, then the
    backend's primitive: each write is one atomic, audited write that publishes a change message)."""

    def protect_label(
        self, name: str, label: str, *, approvals: int = 1, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """Protect ``label`` of ``name``: from now on it moves only through an approved
        :class:`MoveRequest` that ``approvals`` identities other than the requester approved
        (protecting again changes the count for later requests). The label need not exist yet.
        An admin's write where the store enforces roles. Raises
        :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.RolloutActiveError` while a
        rollout runs on the label, :class:`~promptreg.InvalidInputError` for ``approvals`` outside
        1-10, and :class:`~promptreg.RegistryAuthError` when the store refuses the role."""
        validate_name(name)
        validate_label(label, settable=True)
        if isinstance(approvals, bool) or not isinstance(approvals, int) or not 1 <= approvals <= MAX_APPROVALS:
            raise InvalidInputError(f"approvals must be an integer from 1 to {MAX_APPROVALS}, got {approvals!r:.40}")
        return self._protect_label(
            name,
            label,
            approvals,
            validate_text_field(author, "author"),
            validate_text_field(reason, "reason"),
            utcnow(),
        )

    def unprotect_label(
        self, name: str, label: str, *, author: str | None = None, reason: str | None = None
    ) -> AuditEvent:
        """Remove the protection of ``label`` (admin): direct moves work again; requests still open
        may still be approved. Raises :class:`~promptreg.PromptNotFoundError`,
        :class:`~promptreg.InvalidInputError` when the label is not protected, and
        :class:`~promptreg.RegistryAuthError`."""
        validate_name(name)
        validate_label(label, settable=True)
        return self._protect_label(
            name, label, None, validate_text_field(author, "author"), validate_text_field(reason, "reason"), utcnow()
        )

    def protected_labels(self, name: str | None = None) -> list[LabelProtection]:
        """The protected labels (of ``name`` only, when given), sorted by prompt and label."""
        if name is not None:
            validate_name(name)
        return sorted(self._protections(name), key=lambda p: (p.prompt, p.label))

    def request_label_move(
        self,
        name: str,
        label: str,
        version: int,
        *,
        author: str,
        reason: str,
        expires_in: float = DEFAULT_EXPIRES_IN,
    ) -> MoveRequest:
        """Ask to move protected ``label`` of ``name`` to ``version``; returns the pending request.

        ``author`` is the requester (it cannot approve its own request), ``reason`` is required.
        The request records where the label points now: applying it later is a compare-and-set from
        there. ``expires_in`` (seconds, up to 30 days) bounds how long it may wait. Raises
        :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.VersionNotFoundError`,
        :class:`~promptreg.InvalidInputError` (the label is not protected: move it directly; a
        missing author or reason) and :class:`~promptreg.InvalidNameError`.
        """
        validate_name(name)
        validate_label(label, settable=True)
        validate_version_number(version)
        clean_author = validate_identity(author)
        clean_reason = validate_identity(reason, "reason")
        if (
            isinstance(expires_in, bool)
            or not isinstance(expires_in, int | float)
            or not 1 <= expires_in <= MAX_EXPIRES_IN
        ):
            raise InvalidInputError(f"expires_in must be 1 to {MAX_EXPIRES_IN} seconds, got {expires_in!r:.40}")
        now = utcnow()
        request = MoveRequest(
            id=new_request_id(), prompt=name, label=label, version=version, author=clean_author, reason=clean_reason,
            created_at=now, expires_at=now + timedelta(seconds=expires_in),
        )  # fmt: skip
        return self._request_move(request)

    def approve(self, request_id: str, *, author: str, apply: bool = True) -> MoveRequest:
        """Approve a pending request as ``author`` (not its requester; each identity once).

        The approval that completes the count moves the label in the same atomic write and returns
        the request ``applied`` (``apply=False``: ``approved``, for :meth:`apply_request`). Raises
        :class:`~promptreg.RequestNotFoundError`, :class:`~promptreg.RequestStateError` (not
        pending, or expired), :class:`~promptreg.ApprovalError` (the requester, or twice), and for
        the move: :class:`~promptreg.LabelConflictError` (the label moved since the request),
        :class:`~promptreg.IncompatibleVersionError`, :class:`~promptreg.CompositionError`; a
        refused move records no approval. :class:`~promptreg.RegistryAuthError` when the store
        refuses the role (a writer cannot approve on Redis or PostgreSQL).
        """
        validate_request_id(request_id)
        if not isinstance(apply, bool):
            raise InvalidInputError(f"apply must be a bool, got {apply!r:.40}")
        return self._decide(request_id, validate_identity(author), utcnow(), approve=True, apply=apply, reason=None)

    def reject(self, request_id: str, *, author: str, reason: str | None = None) -> MoveRequest:
        """Reject a pending or approved request as ``author`` (not its requester). Raises
        :class:`~promptreg.RequestNotFoundError`, :class:`~promptreg.RequestStateError`,
        :class:`~promptreg.ApprovalError` and :class:`~promptreg.RegistryAuthError`."""
        validate_request_id(request_id)
        clean = validate_text_field(reason, "reason")
        return self._decide(request_id, validate_identity(author), utcnow(), approve=False, apply=False, reason=clean)

    def apply_request(self, request_id: str, *, author: str) -> MoveRequest:
        """Move the label of an ``approved`` request (approved with ``apply=False``), checked as
        :meth:`approve` checks it. Raises :class:`~promptreg.RequestNotFoundError`,
        :class:`~promptreg.RequestStateError` (not approved, or expired) and the move's errors."""
        validate_request_id(request_id)
        return self._apply_request(request_id, validate_identity(author), utcnow())

    def get_request(self, request_id: str) -> MoveRequest:
        """One request as it stands now. Raises :class:`~promptreg.RequestNotFoundError`."""
        validate_request_id(request_id)
        found = self._get_request(request_id)
        if found is None:
            raise RequestNotFoundError(request_id)
        return found.as_of(utcnow())

    def list_requests(
        self,
        *,
        name: str | None = None,
        label: str | None = None,
        state: RequestState | str | None = None,
        limit: int = 100,
    ) -> list[MoveRequest]:
        """Requests, newest first, filtered by prompt, label and state (``pending`` excludes the
        expired ones), at most ``limit`` (1-1000)."""
        if name is not None:
            validate_name(name)
        if label is not None:
            validate_label(label, settable=True)
        try:
            wanted = None if state is None else RequestState(state)
        except ValueError:
            raise InvalidInputError(f"unknown request state {state!r:.40}") from None
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LISTED:
            raise InvalidInputError(f"limit must be an integer from 1 to {MAX_LISTED}, got {limit!r:.40}")
        now = utcnow()
        found = [request.as_of(now) for request in self._list_requests(name)]
        chosen = [
            request
            for request in found
            if (label is None or request.label == label) and (wanted is None or request.state is wanted)
        ]
        chosen.sort(key=lambda request: (request.created_at, request.id), reverse=True)
        return chosen[:limit]

    # -- what each backend implements ---------------------------------------------------------

    @abstractmethod
    def _protect_label(
        self, name: str, label: str, approvals: int | None, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        """Protect (``approvals`` set) or unprotect (``None``), audited as ``protect_label`` /
        ``unprotect_label`` with ``approvals`` in the event."""

    @abstractmethod
    def _protections(self, name: str | None) -> list[LabelProtection]: ...

    @abstractmethod
    def _request_move(self, request: MoveRequest) -> MoveRequest:
        """Store ``request`` (filling ``from_version`` and ``approvals_required``), audited as
        ``request_move`` with the request's id in ``AuditEvent.request``."""

    @abstractmethod
    def _decide(
        self, request_id: str, author: str, at: datetime, *, approve: bool, apply: bool, reason: str | None
    ) -> MoveRequest:
        """Approve or reject (:func:`check_decidable`); an approval completing the count with
        ``apply`` moves the label in the same write (audited as the move, with the request id)."""

    @abstractmethod
    def _apply_request(self, request_id: str, author: str, at: datetime) -> MoveRequest: ...

    @abstractmethod
    def _get_request(self, request_id: str) -> MoveRequest | None: ...

    @abstractmethod
    def _list_requests(self, name: str | None) -> list[MoveRequest]:
        """Every stored request (of ``name`` when given), as stored (the caller applies expiry)."""
