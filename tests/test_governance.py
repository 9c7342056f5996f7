"""Protected labels and move requests on every backend: the life cycle of a request, every refusal
(typed, nothing stored changes), the audit trail, and a client that follows an approved move.

Enforcement against a writer that goes around the API is tested per store: test_governance_redis.py
(ACL roles) and test_governance_postgres.py (roles and grants)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from promptreg import PromptClient
from promptreg.registry import (
    ApprovalError,
    IncompatibleVersionError,
    InvalidInputError,
    LabelConflictError,
    MoveRequest,
    PromptNotFoundError,
    PromptRegistry,
    ProtectedLabelError,
    RequestNotFoundError,
    RequestState,
    RequestStateError,
    RolloutActiveError,
    VersionNotFoundError,
)
from promptreg.registry.backup import apply_import, export_registry, plan_import
from promptreg.registry.cli.local_server import wait_until
from promptreg.registry.sync import apply_sync, plan_sync
from tests.backends import Backend, kinds, open_backend, refused

NAME = "support-bot"
TEXTS = ("Help {{user}}.", "Kindly help {{user}}.", "Answer {{question}} for {{user}}.")


def seed(reg: PromptRegistry, *, approvals: int = 1) -> None:
    reg.create_prompt(NAME, compatibility="backward")
    for text in TEXTS:
        reg.add_version(NAME, text)
    reg.set_label(NAME, "production", 1)
    reg.set_label(NAME, "staging", 2)
    reg.protect_label(NAME, "production", approvals=approvals, author="root", reason="two-person rule")


def label_of(reg: PromptRegistry, label: str = "production") -> int | None:
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    return prompt.labels.get(label)


# -- protection ---------------------------------------------------------------------------------------


def test_protect_is_audited_and_listed(reg: PromptRegistry) -> None:
    seed(reg, approvals=2)
    event = reg.history(NAME)[-1]
    assert (event.action, event.label, event.approvals, event.author) == ("protect_label", "production", 2, "root")
    assert [(p.prompt, p.label, p.approvals) for p in reg.protected_labels()] == [(NAME, "production", 2)]
    assert [(p.prompt, p.label) for p in reg.protected_labels(NAME)] == [(NAME, "production")]
    assert reg.protected_labels("other") == []
    unprotected = reg.unprotect_label(NAME, "production", author="root")
    assert (unprotected.action, unprotected.label) == ("unprotect_label", "production")
    assert reg.protected_labels() == []
    reg.set_label(NAME, "production", 2)  # a direct move works again
    assert label_of(reg) == 2


def test_every_direct_move_of_a_protected_label_is_refused(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    for call in (
        lambda: reg.set_label(NAME, "production", 2),
        lambda: reg.set_label(NAME, "production", 2, force=True),
        lambda: reg.rollback(NAME, "production"),
        lambda: reg.delete_label(NAME, "production"),
        lambda: reg.start_rollout(NAME, "production", 2, 10),
    ):
        error = refused(backend, reg, ProtectedLabelError, call)
        assert isinstance(error, ProtectedLabelError) and (error.name, error.label) == (NAME, "production")
    reg.set_label(NAME, "staging", 1)  # other labels are not protected
    assert label_of(reg, "staging") == 1


def test_protecting_a_label_not_set_yet_guards_its_first_move(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    reg.protect_label(NAME, "canary", author="root")
    refused(backend, reg, ProtectedLabelError, lambda: reg.set_label(NAME, "canary", 1))
    request = reg.request_label_move(NAME, "canary", 1, author="ana", reason="first canary")
    assert request.from_version is None
    applied = reg.approve(request.id, author="bo")
    assert applied.state is RequestState.APPLIED and label_of(reg, "canary") == 1


def test_protection_refusals(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    refused(backend, reg, PromptNotFoundError, lambda: reg.protect_label("nope", "production"))
    bad_counts: tuple[Any, ...] = (0, 11, True, 1.5, "2")
    for bad in bad_counts:
        refused(backend, reg, InvalidInputError, partial(reg.protect_label, NAME, "staging", approvals=bad))
    refused(backend, reg, InvalidInputError, lambda: reg.unprotect_label(NAME, "staging"))
    reg.start_rollout(NAME, "staging", 1, 10)
    refused(backend, reg, RolloutActiveError, lambda: reg.protect_label(NAME, "staging"))


# -- the life cycle of a request ---------------------------------------------------------------------


def test_request_approve_applies_the_move(reg: PromptRegistry) -> None:
    seed(reg)
    rev = reg.revision()
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="kinder wording")
    assert isinstance(request, MoveRequest)
    assert (request.state, request.from_version, request.version, request.approvals_required) == (
        RequestState.PENDING, 1, 2, 1,
    )  # fmt: skip
    assert request.expires_at - request.created_at == timedelta(hours=24)
    assert reg.revision() == rev + 1 and label_of(reg) == 1  # a request moves nothing
    assert reg.get_request(request.id) == request
    applied = reg.approve(request.id, author="bo")
    assert (applied.state, applied.decided_by, applied.applied_rev) == (RequestState.APPLIED, "bo", rev + 2)
    assert [a.author for a in applied.approvals] == ["bo"]
    assert label_of(reg) == 2 and reg.revision() == rev + 2
    moves = [e for e in reg.history(NAME) if e.rev > rev]
    assert [(e.action, e.request, e.author) for e in moves] == [
        ("request_move", request.id, "ana"),
        ("set_label", request.id, "bo"),
    ]
    assert (moves[1].version, moves[1].previous_version, moves[1].reason) == (2, 1, "kinder wording")
    assert reg.get_request(request.id) == applied
    # A rollback is one more request, to the version the label came from.
    back = reg.request_label_move(NAME, "production", 1, author="ana", reason="roll back")
    assert back.from_version == 2
    reg.approve(back.id, author="cy")
    assert label_of(reg) == 1


def test_two_approvals(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg, approvals=2)
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    first = reg.approve(request.id, author="bo")
    assert (first.state, len(first.approvals)) == (RequestState.PENDING, 1) and label_of(reg) == 1
    assert reg.history(NAME)[-1].action == "approve_request"
    refused(backend, reg, ApprovalError, lambda: reg.approve(request.id, author="bo"))  # not twice
    done = reg.approve(request.id, author="cy")
    assert done.state is RequestState.APPLIED and label_of(reg) == 2
    assert [a.author for a in done.approvals] == ["bo", "cy"]


def test_the_requester_cannot_approve_or_reject(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    error = refused(backend, reg, ApprovalError, lambda: reg.approve(request.id, author="ana"))
    assert "another identity" in str(error)
    refused(backend, reg, ApprovalError, lambda: reg.reject(request.id, author="ana"))
    refused(backend, reg, InvalidInputError, lambda: reg.approve(request.id, author=""))
    refused(backend, reg, InvalidInputError, lambda: reg.approve(request.id, author="  "))


def test_reject(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    rejected = reg.reject(request.id, author="bo", reason="not on a Friday")
    assert (rejected.state, rejected.decided_by, rejected.decision_reason) == (
        RequestState.REJECTED, "bo", "not on a Friday",
    )  # fmt: skip
    assert reg.history(NAME)[-1].action == "reject_request" and label_of(reg) == 1
    for call in (lambda: reg.approve(request.id, author="cy"), lambda: reg.reject(request.id, author="cy")):
        error = refused(backend, reg, RequestStateError, call)
        assert isinstance(error, RequestStateError) and error.state == "rejected"


def test_approve_without_apply_then_apply(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    refused(backend, reg, RequestStateError, lambda: reg.apply_request(request.id, author="bo"))  # pending
    approved = reg.approve(request.id, author="bo", apply=False)
    assert approved.state is RequestState.APPROVED and label_of(reg) == 1
    applied = reg.apply_request(request.id, author="cy")
    assert (applied.state, applied.decided_by) == (RequestState.APPLIED, "cy") and label_of(reg) == 2
    refused(backend, reg, RequestStateError, lambda: reg.apply_request(request.id, author="cy"))


def test_a_label_moved_since_the_request_refuses_the_approval(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    stale = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    other = reg.request_label_move(NAME, "production", 3, author="ana", reason="r")
    with pytest.raises(IncompatibleVersionError):  # 3 adds {{question}}: backward refuses it
        reg.approve(other.id, author="bo")
    assert reg.get_request(other.id).approvals == ()  # the refused move recorded no approval
    reg.set_compatibility(NAME, "none")
    reg.approve(other.id, author="bo")
    assert label_of(reg) == 3
    error = refused(backend, reg, LabelConflictError, lambda: reg.approve(stale.id, author="bo"))
    assert isinstance(error, LabelConflictError) and (error.expected, error.actual) == (1, 3)
    assert reg.get_request(stale.id).state is RequestState.PENDING


def test_expiry(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r", expires_in=1)
    time.sleep(max(0.0, (request.expires_at - request.created_at).total_seconds()) + 0.05)
    assert reg.get_request(request.id).state is RequestState.EXPIRED
    error = refused(backend, reg, RequestStateError, lambda: reg.approve(request.id, author="bo"))
    assert isinstance(error, RequestStateError) and error.state == "expired"
    assert reg.list_requests(state="pending") == []
    assert [r.id for r in reg.list_requests(state="expired")] == [request.id]


def test_request_refusals(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    cases = [
        (PromptNotFoundError, lambda: reg.request_label_move("nope", "production", 1, author="a", reason="r")),
        (VersionNotFoundError, lambda: reg.request_label_move(NAME, "production", 9, author="a", reason="r")),
        (InvalidInputError, lambda: reg.request_label_move(NAME, "staging", 1, author="a", reason="r")),  # unprotected
        (InvalidInputError, lambda: reg.request_label_move(NAME, "production", 2, author="", reason="r")),
        (InvalidInputError, lambda: reg.request_label_move(NAME, "production", 2, author="a", reason=" ")),
        (InvalidInputError, lambda: reg.request_label_move(NAME, "production", 2, author="a", reason="r",
                                                           expires_in=0)),
        (InvalidInputError, lambda: reg.request_label_move(NAME, "production", 2, author="a", reason="r",
                                                           expires_in=True)),
        (InvalidInputError, lambda: reg.request_label_move(NAME, "latest", 2, author="a", reason="r")),
        (RequestNotFoundError, lambda: reg.approve("0123456789abcdef", author="b")),
        (RequestNotFoundError, lambda: reg.reject("0123456789abcdef", author="b")),
        (RequestNotFoundError, lambda: reg.apply_request("0123456789abcdef", author="b")),
        (InvalidInputError, lambda: reg.approve("../../etc/passwd", author="b")),
        (InvalidInputError, lambda: reg.get_request("X" * 10_000)),
        (InvalidInputError, lambda: reg.list_requests(state="maybe")),
        (InvalidInputError, lambda: reg.list_requests(limit=0)),
    ]  # fmt: skip
    for error, call in cases:
        refused(backend, reg, error, call)
    with pytest.raises(RequestNotFoundError):
        reg.get_request("0123456789abcdef")


def test_list_requests(reg: PromptRegistry) -> None:
    seed(reg)
    reg.protect_label(NAME, "staging", author="root")
    first = reg.request_label_move(NAME, "production", 2, author="ana", reason="r1")
    second = reg.request_label_move(NAME, "staging", 3, author="ana", reason="r2")
    third = reg.request_label_move(NAME, "production", 3, author="ana", reason="r3")
    reg.reject(third.id, author="bo")
    assert [r.id for r in reg.list_requests()] == [third.id, second.id, first.id]  # newest first
    assert [r.id for r in reg.list_requests(state="pending")] == [second.id, first.id]
    assert [r.id for r in reg.list_requests(label="staging")] == [second.id]
    assert [r.id for r in reg.list_requests(name=NAME, state=RequestState.REJECTED)] == [third.id]
    assert [r.id for r in reg.list_requests(limit=1)] == [third.id]


# -- a client follows an approved move ---------------------------------------------------------------


@pytest.fixture(params=kinds("file", "redis", "postgres"))
def live(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """The backends a :class:`PromptClient` follows by URL (fakeredis has none)."""
    with open_backend(request.param, request, namespace, tmp_path) as backend:
        yield backend


def test_a_client_follows_requests_and_the_approved_move(live: Backend) -> None:
    reg = live.make()
    seed(reg)
    options: dict[str, Any] = {"poll_interval": 0.05} if live.kind == "file" else {}
    namespace = None if live.kind == "file" else live.namespace
    with PromptClient(live.url, namespace=namespace, **options) as client:
        assert client.wait_ready(10)
        assert client.get(NAME, "production").version == 1
        request = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
        assert wait_until(lambda: client.status().rev == reg.revision(), 10)  # a request: no move
        assert client.get(NAME, "production").version == 1
        reg.approve(request.id, author="bo")
        assert wait_until(lambda: client.get(NAME, "production").version == 2, 10)
        assert client.status().state.value == "live"


# -- prompts as code: sync asks for the moves of protected labels ------------------------------------


def test_sync_requests_the_move_of_a_protected_label(reg: PromptRegistry, tmp_path: Path) -> None:
    seed(reg)
    (tmp_path / f"{NAME}.prompt").write_text(f"---\nlabels: [production, staging]\n---\n{TEXTS[1]}")
    plan = plan_sync(reg, tmp_path)
    assert [(s.action, s.label) for s in plan.steps] == [("request_move", "production")]  # staging is at 2
    assert "request label production 1 -> 2 (protected)" in plan.steps[0].describe()
    apply_sync(reg, plan, author="ci")
    [request] = reg.list_requests(state="pending")
    assert (request.version, request.author, label_of(reg)) == (2, "ci", 1)
    assert plan_sync(reg, tmp_path).steps == ()  # re-running asks nothing more
    reg.approve(request.id, author="bo")
    assert label_of(reg) == 2 and plan_sync(reg, tmp_path).steps == ()


# -- concurrent decisions ------------------------------------------------------------------------------


@pytest.fixture(params=kinds("file", "redis", "cluster", "postgres"))
def shared(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """The backends several connections share for real (fakeredis is one in-process server)."""
    with open_backend(request.param, request, namespace, tmp_path) as backend:
        yield backend


def test_concurrent_approvals_are_all_counted_once(shared: Backend) -> None:
    """Approvers deciding at once, each on its own connection: with 3 approvals required and 3
    approvers, the label moves exactly once, with all three approvals; a second round where 4 race
    for 1 approval applies once and refuses the others as already applied."""
    backend = shared
    setup = backend.make()
    seed(setup, approvals=3)
    request = setup.request_label_move(NAME, "production", 2, author="ana", reason="r")
    rev = setup.revision()
    outcomes: list[object] = []

    def decide(author: str, request_id: str) -> None:
        with backend.make() as mine:
            try:
                outcomes.append(mine.approve(request_id, author=author).state)
            except RequestStateError as exc:
                outcomes.append(exc.state)

    threads = [threading.Thread(target=decide, args=(name, request.id)) for name in ("bo", "cy", "di")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(map(str, outcomes)) == ["applied", "pending", "pending"]
    done = setup.get_request(request.id)
    assert done.state is RequestState.APPLIED and sorted(a.author for a in done.approvals) == ["bo", "cy", "di"]
    assert label_of(setup) == 2 and setup.revision() == rev + 3
    assert [e.action for e in setup.history(NAME) if e.rev > rev] == ["approve_request", "approve_request", "set_label"]

    setup.protect_label(NAME, "production", approvals=1)
    back = setup.request_label_move(NAME, "production", 1, author="ana", reason="back")
    outcomes.clear()
    threads = [threading.Thread(target=decide, args=(name, back.id)) for name in ("bo", "cy", "di", "ed")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(map(str, outcomes)) == ["applied", "applied", "applied", "applied"]  # 1 write, 3 refusals
    assert [e.action for e in setup.history(NAME)].count("set_label") == 4  # seed's 2, the 3-approval move, this one
    assert label_of(setup) == 1


def test_an_import_that_would_move_a_protected_label_is_refused_before_any_write(
    backend: Backend, reg: PromptRegistry
) -> None:
    seed(reg)
    source = backend.other("source")
    seed(source)
    source.unprotect_label(NAME, "production")
    source.set_label(NAME, "production", 2)
    source.create_prompt("another")  # written before the protected move if the plan did not refuse it
    source.add_version("another", "Hi")
    export = export_registry(source)
    error = refused(backend, reg, ProtectedLabelError, lambda: plan_import(reg, export))
    assert isinstance(error, ProtectedLabelError) and (error.name, error.label) == (NAME, "production")
    reg.unprotect_label(NAME, "production")
    apply_import(reg, plan_import(reg, export))
    assert label_of(reg) == 2


def test_raising_the_count_applies_to_open_requests_lowering_it_does_not(reg: PromptRegistry) -> None:
    seed(reg, approvals=2)
    lowered = reg.request_label_move(NAME, "production", 2, author="ana", reason="r")
    reg.protect_label(NAME, "production", approvals=1)
    first = reg.approve(lowered.id, author="bo")
    assert (first.state, first.approvals_required) == (RequestState.PENDING, 2)  # the request's count holds
    assert reg.approve(lowered.id, author="cy").state is RequestState.APPLIED
    raised = reg.request_label_move(NAME, "production", 1, author="ana", reason="r")
    assert raised.approvals_required == 1
    reg.protect_label(NAME, "production", approvals=2)
    first = reg.approve(raised.id, author="bo")
    assert (first.state, first.approvals_required) == (RequestState.PENDING, 2)  # raised since: 2 now
    assert reg.get_request(raised.id).approvals_required == 2
    assert reg.approve(raised.id, author="cy").state is RequestState.APPLIED and label_of(reg) == 1
