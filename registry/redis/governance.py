"""Protected labels and move requests on Redis (registry/governance.py), enforced by ACL roles.

Where each piece lives, and who may write it (``promptreg acl``; registry/redis/acl.py):

- ``{ns}:adm:protected`` (``<name>:<label> -> approvals``): only ``admin`` writes it
  (``protect_label.lua``).
- ``{ns}:gov:ix`` (``<name>:<label> -> version``): where each protected label points. Only
  ``approver`` and ``admin`` write ``{ns}:gov:*``. Every reader lays it over the label's ``p:`` and
  ``ix:`` keys (:func:`overlay`, the client's state read, ``get_prompt``), which the writer role can
  still write, so what a writer writes there is never what a protected label serves.
- ``{ns}:rq:<id>`` / ``{ns}:rq``: a request as its requester wrote it (the writer role's
  ``request_move.lua``). It is trusted for what was asked, never for a decision: read from there, a
  request is always pending, without approvals.
- ``{ns}:gov:rq:<id>`` / ``{ns}:gov:rq``: the request as approvers decided it (``decide_request.lua``,
  or ``set_label.lua`` given the request: the approval that moves the label, in the same script).

Each decision is a compare-and-set on the record the approver read, so two approvers deciding at
once never lose one another's approval: the second one reads again and decides again.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from promptreg.registry.composition import WriteGraph
from promptreg.registry.composition_checks import check_move as check_graph
from promptreg.registry.errors import RegistryCorruptError, RegistryUnavailableError
from promptreg.registry.governance import (
    Approval,
    LabelProtection,
    MoveRequest,
    RequestState,
    check_applicable,
    check_decidable,
)
from promptreg.registry.models import AuditAction, AuditEvent
from promptreg.registry.redis.calls import RequestRecord, ScriptCall, SetLabel
from promptreg.registry.redis.governance_calls import DecideRequest, ProtectLabel, RequestMove
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.partials import Guard, result_of
from promptreg.registry.redis.records import refusal
from promptreg.registry.validation import validate_label, validate_name

ATTEMPTS = 8
"""Reads-and-decides of one request before giving up: each retry means another decision landed."""
MAX_RECORD_BYTES = 64 * 1024
"""A request record larger than this is not read (every field of a request is bounded far below)."""
LOAD_CHUNK = 200
"""Requests read per pipelined round trip when listing."""
MAX_REQUESTS_READ = 5000
"""The newest requests :meth:`RedisGovernance._list_requests` reads from each index."""
_PENDING = {"state": RequestState.PENDING, "approvals": (), "decided_by": None, "decided_at": None,
            "decision_reason": None, "applied_rev": None}  # fmt: skip


def protected_of(raw: dict[bytes, bytes], name: str) -> set[str]:
    """The protected labels of ``name`` in an ``HGETALL`` of ``{ns}:adm:protected``."""
    prefix = f"{name}:".encode()
    return {field[len(prefix) :].decode("utf-8") for field in raw if field.startswith(prefix)}


def overlay(
    pointers: dict[str, dict[str, int]], protected: dict[bytes, bytes], governed: dict[bytes, bytes]
) -> dict[str, dict[str, int]]:
    """Lay where protected labels point (``{ns}:gov:ix``) over ``pointers`` (name -> label -> version)
    read from the ``ix:`` keys, in place: a protected label is where ``governed`` says, or unset.
    Only prompts already in ``pointers`` are touched (a subset client's). Fields that do not parse are
    skipped: the writer role cannot write these keys, but a protection must never crash a reader."""
    for raw_field in protected:
        name, _, label = raw_field.decode("utf-8", "replace").partition(":")
        labels = pointers.get(name)
        if labels is None or not label:
            continue
        value = governed.get(raw_field)
        if value is None:
            labels.pop(label, None)
        else:
            try:
                labels[label] = int(value)
            except ValueError:
                labels.pop(label, None)
    return pointers


def parse_record(raw: bytes | str, request_id: str, *, decided: bool) -> MoveRequest:
    """A stored request record; a requester's (``decided`` false) is always read as pending.
    Raises :class:`~promptreg.RegistryCorruptError` for a record that is not one."""
    if len(raw) > MAX_RECORD_BYTES:
        raise RegistryCorruptError(f"move request {request_id!r}: its record is over {MAX_RECORD_BYTES} bytes")
    try:
        request = MoveRequest.model_validate_json(raw)
        validate_name(request.prompt)
        validate_label(request.label, settable=True)
    except (ValidationError, ValueError) as exc:
        raise RegistryCorruptError(f"move request {request_id!r} is not readable: {exc}") from exc
    if request.id != request_id:
        raise RegistryCorruptError(f"move request {request_id!r} holds the record of {request.id!r:.40}")
    return request if decided else request.model_copy(update=_PENDING)


class _ChangedError(Exception):
    """The request's record changed between the read and the write: read and decide again."""


class RedisGovernance:
    """The governance primitives of :class:`~promptreg.RedisPromptRegistry`."""

    keys: Keyspace
    redis: Any
    _translate: Callable[[], AbstractContextManager[None]]
    _head: Callable[..., bytes]
    _run: Callable[..., list[Any]]
    _run_placed: Callable[..., tuple[Any, list[Any]]]
    _guarded: Callable[..., Any]
    _pipeline: Callable[..., Any]

    def _refuse(self, name: str, label: str, result: list[Any], *, expected: int = 0, version: int = 0) -> None:
        if result[0] != b"OK":
            raise refusal(name, label, result, expected, version)

    def _protect_label(
        self, name: str, label: str, approvals: int | None, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        action: AuditAction = "protect_label" if approvals is not None else "unprotect_label"
        call = ProtectLabel(self.keys, name, label, approvals, at.isoformat(), author, reason,
                            self._head(action, name, label, author, at))  # fmt: skip
        result = self._run(call)
        self._refuse(name, label, result)
        reply = call.reply(result)
        return AuditEvent(
            rev=reply.rev, at=at, action=action, prompt=name, label=label, author=author, reason=reason,
            approvals=approvals,
        )  # fmt: skip

    def _protections(self, name: str | None) -> list[LabelProtection]:
        with self._translate():
            raw = self.redis.hgetall(self.keys.protected)
        found = []
        for field, count in raw.items():
            prompt, _, label = field.decode("utf-8", "replace").partition(":")
            if (name is None or prompt == name) and label:
                try:
                    found.append(LabelProtection(prompt=prompt, label=label, approvals=int(count)))
                except (ValidationError, ValueError) as exc:
                    raise RegistryCorruptError(f"unreadable protection {field!r:.80}: {exc}") from exc
        return found

    def _request_move(self, request: MoveRequest) -> MoveRequest:
        field = f"{request.prompt}:{request.label}"
        score = int(request.created_at.timestamp() * 1000)
        for _attempt in range(ATTEMPTS):
            with self._translate():
                required_raw, current_raw = (
                    self._pipeline(transaction=True).hget(self.keys.protected, field)
                    .hget(self.keys.governed, field).execute()
                )  # fmt: skip
            required = int(required_raw) if required_raw is not None else 0
            current = int(current_raw) if current_raw is not None else None
            full = request.model_copy(update={"from_version": current, "approvals_required": max(required, 1)})
            head = self._head("request_move", request.prompt, request.label, request.author, request.created_at)
            call = RequestMove(
                self.keys, request.prompt, request.label, request.version, request.id, full.model_dump_json(), score,
                request.created_at.isoformat(), request.author, request.reason, head, current, required,
            )  # fmt: skip
            result = self._run(call)
            if result[0] == b"OK":
                return full
            if result[1] != b"RETRY":
                self._refuse(request.prompt, request.label, result, version=request.version)
        raise RegistryUnavailableError(f"prompt {request.prompt!r}: its protection kept changing; nothing written")

    def _load(self, request_id: str) -> tuple[MoveRequest | None, str]:
        """The request and its record as stored (what a decision compares-and-sets), decided first."""
        with self._translate():
            pipe = self._queue_load(self._pipeline(transaction=True), request_id)
            decision, requested = pipe.execute(raise_on_error=False)
        return self._loaded(request_id, decision, requested)

    def _queue_load(self, pipe: Any, request_id: str) -> Any:
        # The requester's record is read up to its bound plus one byte: the writer role can store a
        # value of any size there, and a reader must not fetch it whole to find that out.
        return pipe.hgetall(self.keys.decision(request_id)).getrange(self.keys.request(request_id), 0, MAX_RECORD_BYTES)

    @staticmethod
    def _loaded(request_id: str, decision: Any, requested: Any) -> tuple[MoveRequest | None, str]:
        for reply in (decision, requested):  # a key of another type (the writer role may write {ns}:rq:*)
            if isinstance(reply, Exception):
                raise RegistryCorruptError(f"move request {request_id!r} is not readable: {reply}")
        requested = requested or None  # GETRANGE of a missing key: b""
        record = decision.get(b"record")
        if record is not None:
            request = parse_record(record, request_id, decided=True)
            applied = decision.get(b"applied_rev")
            if applied is not None:
                request = request.model_copy(update={"applied_rev": int(applied)})
            return request, record.decode("utf-8")
        if requested is None:
            return None, ""
        return parse_record(requested, request_id, decided=False), requested.decode("utf-8")

    def _get_request(self, request_id: str) -> MoveRequest | None:
        return self._load(request_id)[0]

    def _list_requests(self, name: str | None) -> list[MoveRequest]:
        with self._translate():
            asked, decided = (
                self._pipeline(transaction=False).zrevrange(self.keys.requests, 0, MAX_REQUESTS_READ - 1)
                .zrevrange(self.keys.decisions, 0, MAX_REQUESTS_READ - 1).execute()
            )  # fmt: skip
        ids = [raw.decode("utf-8", "replace") for raw in dict.fromkeys([*decided, *asked])]
        found = []
        for start in range(0, len(ids), LOAD_CHUNK):
            chunk = ids[start : start + LOAD_CHUNK]
            pipe = self._pipeline(transaction=False)
            for request_id in chunk:
                self._queue_load(pipe, request_id)
            with self._translate():
                replies = pipe.execute(raise_on_error=False)
            for index, request_id in enumerate(chunk):
                try:
                    request = self._loaded(request_id, replies[2 * index], replies[2 * index + 1])[0]
                except RegistryCorruptError:
                    continue  # a requester's record the writer role may have written anything into
                if request is not None and (name is None or request.prompt == name):
                    found.append(request)
        return found

    def _decide(
        self, request_id: str, author: str, at: datetime, *, approve: bool, apply: bool, reason: str | None
    ) -> MoveRequest:
        for _attempt in range(ATTEMPTS):
            stored, seen = self._load(request_id)
            current = check_decidable(stored, request_id, author, at, approving=approve)
            try:
                if not approve:
                    updated = current.model_copy(
                        update={"state": RequestState.REJECTED, "decided_by": author, "decided_at": at,
                                "decision_reason": reason}
                    )  # fmt: skip
                    return self._record(current, seen, updated, "reject_request", author, reason, at)
                approved = self._approved(current, author, at)
                complete = len(approved.approvals) >= approved.approvals_required
                if complete and apply:
                    return self._move(approved, seen, author, at)
                if complete:
                    approved = approved.model_copy(update={"state": RequestState.APPROVED})
                return self._record(current, seen, approved, "approve_request", author, None, at)
            except _ChangedError:
                continue
        raise RegistryUnavailableError(f"move request {request_id!r} kept changing while it was decided")

    def _apply_request(self, request_id: str, author: str, at: datetime) -> MoveRequest:
        for _attempt in range(ATTEMPTS):
            stored, seen = self._load(request_id)
            current = check_applicable(stored, request_id, at)
            try:
                return self._move(current, seen, author, at)
            except _ChangedError:
                continue
        raise RegistryUnavailableError(f"move request {request_id!r} kept changing while it was applied")

    # -- the two decisions' writes ------------------------------------------------------------------

    def _approved(self, request: MoveRequest, author: str, at: datetime) -> MoveRequest:
        """``request`` with ``author``'s approval. The count is the request's, raised to the
        protection's if an admin raised it since, as on every backend (here it also means a count the
        writer role lowered in the requester's record is not believed)."""
        with self._translate():
            raw = self.redis.hget(self.keys.protected, f"{request.prompt}:{request.label}")
        required = max(request.approvals_required, int(raw) if raw is not None else 1)
        return request.model_copy(
            update={"approvals": (*request.approvals, Approval(author=author, at=at)), "approvals_required": required}
        )

    def _record(
        self, before: MoveRequest, seen: str, updated: MoveRequest, action: str, author: str, reason: str | None,
        at: datetime,
    ) -> MoveRequest:  # fmt: skip
        call = DecideRequest(
            self.keys, before.prompt, before.label, before.id, seen, updated.model_dump_json(),
            int(before.created_at.timestamp() * 1000), action, at.isoformat(), author, reason,
            self._head(action, before.prompt, before.label, author, at), before.version, before.from_version,
        )  # fmt: skip
        self._settle(before, self._run(call))
        return updated

    def _move(self, request: MoveRequest, seen: str, author: str, at: datetime) -> MoveRequest:
        """The approved move: ``set_label.lua`` given the request, so the move, the decision, the
        audit entry and the change message are one write."""
        name, label, version = request.prompt, request.label, request.version
        applied = request.model_copy(update={"state": RequestState.APPLIED, "decided_by": author, "decided_at": at})
        expected = 0 if request.from_version is None else request.from_version
        record = RequestRecord(request.id, seen, applied.model_dump_json(), int(request.created_at.timestamp() * 1000))
        call = SetLabel(self.keys, name, label, version, expected, at.isoformat(), author, request.reason,
                        self._head("set_label", name, label, author, at), False, expected, request=record)  # fmt: skip

        def run(guard: Guard) -> tuple[ScriptCall, list[Any]]:
            placed: tuple[ScriptCall, list[Any]] = self._run_placed(call, guard)
            return placed

        def check(graph: WriteGraph) -> bool:
            return check_graph(graph, name, label, version, force=False)

        (_, result), _forced = self._guarded(run, result_of, check)
        self._settle(request, result, expected=expected)
        return applied.model_copy(update={"applied_rev": int(result[1])})

    def _settle(self, request: MoveRequest, result: list[Any], *, expected: int = 0) -> None:
        if result[0] == b"OK":
            return
        if result[1] == b"REQUEST":
            raise _ChangedError
        self._refuse(request.prompt, request.label, result, expected=expected, version=request.version)
