"""Protected labels and move requests on the JSON file (registry/governance.py): each step is one
write under the file lock, like every other write. The file records protections, requests and
approvals; it cannot enforce them against someone who edits the file (docs/governance.md)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from promptreg.registry.errors import InvalidInputError, VersionNotFoundError
from promptreg.registry.file_format import StoredState
from promptreg.registry.file_writes import audit, no_rollout, prompt_of, set_label
from promptreg.registry.governance import (
    Approval,
    LabelProtection,
    MoveRequest,
    RequestState,
    check_applicable,
    check_decidable,
)
from promptreg.registry.models import AuditEvent

_T = TypeVar("_T")


def not_protected(name: str, label: str) -> InvalidInputError:
    """The refusal of a request, or an unprotect, on a label that is not protected."""
    return InvalidInputError(f"label {label!r} of prompt {name!r} is not protected")


def apply_move(state: StoredState, request: MoveRequest, author: str, at: datetime) -> MoveRequest:
    """Move the label as ``request`` asks (compare-and-set from its ``from_version``, the usual
    checks, no force): the request applied, or the move's refusal with the state unchanged."""
    expected = 0 if request.from_version is None else request.from_version
    event = set_label(
        state, request.prompt, request.label, request.version, expected, author, request.reason, at,
        force=False, request=request.id,
    )  # fmt: skip
    return request.model_copy(
        update={"state": RequestState.APPLIED, "decided_by": author, "decided_at": at, "applied_rev": event.rev}
    )


class FileGovernance:
    """The governance primitives of :class:`~promptreg.JsonFilePromptRegistry`."""

    _write: Callable[..., Any]
    _read: Callable[[], StoredState]

    def _protect_label(
        self, name: str, label: str, approvals: int | None, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        def apply(state: StoredState) -> AuditEvent:
            stored = prompt_of(state, name)
            if approvals is None:
                if label not in stored.protected:
                    raise not_protected(name, label)
                del stored.protected[label]
                return audit(state, stored, "unprotect_label", name, at, label, author=author, reason=reason)
            no_rollout(stored, name, label, approved=True)
            stored.protected[label] = approvals
            return audit(
                state, stored, "protect_label", name, at, label, author=author, reason=reason, approvals=approvals
            )

        result: AuditEvent = self._write(apply)
        return result

    def _protections(self, name: str | None) -> list[LabelProtection]:
        state = self._read()
        return [
            LabelProtection(prompt=prompt, label=label, approvals=count)
            for prompt, stored in state.prompts.items()
            if name is None or prompt == name
            for label, count in stored.protected.items()
        ]

    def _request_move(self, request: MoveRequest) -> MoveRequest:
        def apply(state: StoredState) -> MoveRequest:
            stored = prompt_of(state, request.prompt)
            if request.version > len(stored.versions):
                raise VersionNotFoundError(request.prompt, request.version)
            required = stored.protected.get(request.label)
            if required is None:
                raise not_protected(request.prompt, request.label)
            current = stored.labels.get(request.label)
            full = request.model_copy(update={"from_version": current, "approvals_required": required})
            state.requests[full.id] = full
            audit(
                state, stored, "request_move", full.prompt, full.created_at, full.label, full.version, current,
                full.author, full.reason, request=full.id,
            )  # fmt: skip
            return full

        result: MoveRequest = self._write(apply)
        return result

    def _decide(
        self, request_id: str, author: str, at: datetime, *, approve: bool, apply: bool, reason: str | None
    ) -> MoveRequest:
        def write(state: StoredState) -> MoveRequest:
            current = check_decidable(state.requests.get(request_id), request_id, author, at, approving=approve)
            stored = prompt_of(state, current.prompt)
            if not approve:
                updated = current.model_copy(
                    update={"state": RequestState.REJECTED, "decided_by": author, "decided_at": at,
                            "decision_reason": reason}
                )  # fmt: skip
                audit(state, stored, "reject_request", current.prompt, at, current.label, current.version,
                      current.from_version, author, reason, request=request_id)  # fmt: skip
            else:
                # The request's count, raised to the protection's if an admin raised it since.
                required = max(current.approvals_required, stored.protected.get(current.label, 1))
                approvals = (*current.approvals, Approval(author=author, at=at))
                approved = current.model_copy(update={"approvals": approvals, "approvals_required": required})
                complete = len(approved.approvals) >= approved.approvals_required
                if complete and apply:
                    updated = apply_move(state, approved, author, at)
                else:
                    updated = approved.model_copy(update={"state": RequestState.APPROVED}) if complete else approved
                    audit(state, stored, "approve_request", current.prompt, at, current.label, current.version,
                          current.from_version, author, None, request=request_id)  # fmt: skip
            state.requests[request_id] = updated
            return updated

        result: MoveRequest = self._write(write)
        return result

    def _apply_request(self, request_id: str, author: str, at: datetime) -> MoveRequest:
        def write(state: StoredState) -> MoveRequest:
            current = check_applicable(state.requests.get(request_id), request_id, at)
            updated = apply_move(state, current, author, at)
            state.requests[request_id] = updated
            return updated

        result: MoveRequest = self._write(write)
        return result

    def _get_request(self, request_id: str) -> MoveRequest | None:
        return self._read().requests.get(request_id)

    def _list_requests(self, name: str | None) -> list[MoveRequest]:
        return [r for r in self._read().requests.values() if name is None or r.prompt == name]
