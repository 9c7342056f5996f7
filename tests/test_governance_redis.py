"""Protected labels on a real Redis with the ACL roles as ``promptreg acl`` prints them: a writer
cannot move a protected label by any route (the CLI's Python API, the write functions called raw
with any keys, raw commands on every key), an approver cannot approve its own request, and what a
reader serves is always where the approvals put the label."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from promptreg import PromptClient
from promptreg.registry import (
    ApprovalError,
    ProtectedLabelError,
    RedisPromptRegistry,
    RegistryAuthError,
    RegistryCorruptError,
    RequestState,
    RequestStateError,
)
from promptreg.registry.cli.local_server import wait_until
from promptreg.registry.redis.acl import Role
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.scripts import write_library
from tests.test_acl import Users, users  # noqa: F401  (the fixture: the four users of a namespace)

pytestmark = pytest.mark.redis

NAME = "critic"


def _protected(made: Users) -> None:
    with RedisPromptRegistry(made.root, namespace=made.namespace) as root:
        root.create_prompt(NAME)
        root.add_version(NAME, "v1 {{movie}}")
        root.add_version(NAME, "v2 {{movie}}")
        root.add_version(NAME, "v3 {{movie}}")
        root.set_label(NAME, "production", 1)
    with made.registry(Role.ADMIN) as admin:
        admin.protect_label(NAME, "production", approvals=1, author="root", reason="two-person rule")


def _served(made: Users) -> int:
    """Where a fresh reader-role client serves production."""
    with PromptClient(made.url(Role.READER), namespace=made.namespace) as client:
        assert client.wait_ready(10)
        return client.get(NAME, "production").version


def test_a_writer_cannot_move_a_protected_label_by_any_route(users: Users) -> None:  # noqa: F811
    made = users
    _protected(made)
    keys = Keyspace(made.namespace)
    field = f"{NAME}:production"
    with made.registry(Role.WRITER) as writer:
        # 1. The Python API (what the CLI runs): every direct move is the typed refusal.
        calls: list[Callable[[], object]] = [
            lambda: writer.set_label(NAME, "production", 2),
            lambda: writer.set_label(NAME, "production", 2, force=True),
            lambda: writer.rollback(NAME, "production"),
            lambda: writer.delete_label(NAME, "production"),
            lambda: writer.start_rollout(NAME, "production", 2, 50),
        ]
        for call in calls:
            before = made.stored()
            with pytest.raises(ProtectedLabelError):
                call()
            assert made.stored() == before
        # 2. Its own request, approved by itself through the API: the store refuses the role.
        request = writer.request_label_move(NAME, "production", 2, author="mallory", reason="ship it")
        for decide in (
            lambda: writer.approve(request.id, author="somebody-else"),
            lambda: writer.reject(request.id, author="somebody-else"),
            lambda: writer.approve(request.id, author="somebody-else", apply=False),
            lambda: writer.protect_label(NAME, "staging"),
            lambda: writer.unprotect_label(NAME, "production"),
        ):
            before = made.stored()
            with pytest.raises(RegistryAuthError):
                decide()
            assert made.stored() == before
        assert writer.get_request(request.id).state is RequestState.PENDING

    raw = redis.Redis.from_url(made.url(Role.WRITER))
    try:
        # 3. The write functions called raw: the approver's move declares {ns}:gov:* keys, which the
        # writer may not write; FCALL refuses it before the function runs.
        function = write_library().function("set_label")
        declared = [keys.prompt(NAME), keys.version(NAME, 2), keys.label(NAME, "production"), keys.labels(NAME),
                    keys.previous(NAME, "production"), keys.rev, keys.log, keys.history(NAME),
                    keys.index_label("production"), keys.index_labels, keys.version(NAME, 1),
                    keys.rollout(NAME, "production"), keys.governed, keys.request(request.id),
                    keys.decision(request.id), keys.decisions, keys.graph, keys.revid]  # fmt: skip
        made.refused(lambda: raw.fcall(function, len(declared), *declared, *([""] * 20)))
        # 4. Raw commands on the keys that decide: refused.
        made.refused(lambda: raw.hset(keys.governed, field, 2))
        made.refused(lambda: raw.hdel(keys.protected, field))
        made.refused(lambda: raw.hset(keys.decision(request.id), "record", "{}"))
        made.refused(lambda: raw.delete(keys.governed))
        # 5. Raw commands on the keys it may write (the label's mirror, the index, a rollout entry):
        # accepted, and never served.
        raw.set(keys.label(NAME, "production"), 3)
        raw.hset(keys.index_label("production"), NAME, 3)
        raw.hset(keys.index_rollouts, field, "3:5000")
    finally:
        raw.close()
    assert _served(made) == 1
    with made.registry(Role.READER) as reader:
        prompt = reader.get_prompt(NAME)
        assert prompt is not None and prompt.labels["production"] == 1
        assert reader.get_version(NAME, label="production").version == 1


def test_the_approver_moves_it_and_cannot_approve_its_own_request(users: Users) -> None:  # noqa: F811
    made = users
    _protected(made)
    with made.registry(Role.APPROVER) as approver:
        own = approver.request_label_move(NAME, "production", 3, author="ana", reason="mine")
        before = made.stored()
        with pytest.raises(ApprovalError):
            approver.approve(own.id, author="ana")
        assert made.stored() == before
        with pytest.raises(RegistryAuthError):  # protecting is the admin's
            approver.protect_label(NAME, "staging")
    with made.registry(Role.WRITER) as writer:
        request = writer.request_label_move(NAME, "production", 2, author="wes", reason="kinder")
    with PromptClient(made.url(Role.READER), namespace=made.namespace) as client:
        assert client.wait_ready(10) and client.get(NAME, "production").version == 1
        with made.registry(Role.APPROVER) as approver:
            applied = approver.approve(request.id, author="ana")
            assert applied.state is RequestState.APPLIED
        assert wait_until(lambda: client.get(NAME, "production").version == 2, 10)
    with made.registry(Role.WRITER) as writer:
        event = writer.history(NAME)[-1]
        assert (event.action, event.request, event.author, event.version) == ("set_label", request.id, "ana", 2)
        # The mirror a writer can write was moved with it, and the label is still protected.
        with pytest.raises(ProtectedLabelError):
            writer.set_label(NAME, "production", 1)
    with made.registry(Role.ADMIN) as admin:
        admin.unprotect_label(NAME, "production")
    with made.registry(Role.WRITER) as writer:
        writer.set_label(NAME, "production", 1)  # a direct move works again
    assert _served(made) == 1


def test_unprotecting_restores_the_approved_position_over_a_tampered_mirror(users: Users) -> None:  # noqa: F811
    made = users
    _protected(made)
    keys = Keyspace(made.namespace)
    raw: Any = redis.Redis.from_url(made.url(Role.WRITER))
    try:
        raw.set(keys.label(NAME, "production"), 3)
        raw.hset(keys.index_label("production"), NAME, 3)
    finally:
        raw.close()
    with made.registry(Role.ADMIN) as admin:
        admin.unprotect_label(NAME, "production")
        prompt = admin.get_prompt(NAME)
        assert prompt is not None and prompt.labels["production"] == 1
    assert _served(made) == 1


def test_a_request_record_the_writer_rewrote_is_believed_for_nothing_it_decides(users: Users) -> None:  # noqa: F811
    """The writer role writes the requester's record: rewritten as already approved, or asking for
    one approval where the protection needs two, it still needs two approvers' writes."""
    made = users
    _protected(made)
    with made.registry(Role.ADMIN) as admin:
        admin.protect_label(NAME, "production", approvals=2)
    keys = Keyspace(made.namespace)
    with made.registry(Role.WRITER) as writer:
        request = writer.request_label_move(NAME, "production", 2, author="wes", reason="r")
    forged = request.model_copy(
        update={"approvals_required": 1, "state": RequestState.APPROVED, "decided_by": "ana"}
    ).model_dump_json()
    raw: Any = redis.Redis.from_url(made.url(Role.WRITER))
    try:
        raw.set(keys.request(request.id), forged)
    finally:
        raw.close()
    with made.registry(Role.APPROVER) as approver:
        read = approver.get_request(request.id)
        assert (read.state, read.approvals, read.decided_by) == (RequestState.PENDING, (), None)
        with pytest.raises(RequestStateError):  # not approved, whatever the record says
            approver.apply_request(request.id, author="ana")
        first = approver.approve(request.id, author="ana")
        assert (first.state, first.approvals_required) == (RequestState.PENDING, 2)
        assert approver.approve(request.id, author="bo").state is RequestState.APPLIED
    assert _served(made) == 2


def test_garbage_request_records_are_skipped_by_the_list_and_refused_by_a_read(users: Users) -> None:  # noqa: F811
    """What the writer role can put under {ns}:rq: (another type, a huge value, not JSON, another
    request's record) never breaks the list, and reading it is a typed error."""
    made = users
    _protected(made)
    keys = Keyspace(made.namespace)
    with made.registry(Role.WRITER) as writer:
        good = writer.request_label_move(NAME, "production", 2, author="wes", reason="r")
        other = writer.request_label_move(NAME, "production", 3, author="wes", reason="r")
    bad_ids = ["0" * 16, "1" * 16, "2" * 16, "3" * 16]
    raw: Any = redis.Redis.from_url(made.url(Role.WRITER))
    try:
        raw.hset(keys.request(bad_ids[0]), "x", "y")  # another type
        raw.set(keys.request(bad_ids[1]), "x" * (1 << 20))  # far over the record's bound
        raw.set(keys.request(bad_ids[2]), "{not json")
        raw.set(keys.request(bad_ids[3]), raw.get(keys.request(good.id)))  # another request's record
        raw.zadd(keys.requests, {request_id: 1 for request_id in bad_ids})
    finally:
        raw.close()
    with made.registry(Role.APPROVER) as approver:
        assert sorted(r.id for r in approver.list_requests()) == sorted([good.id, other.id])
        for request_id in bad_ids:
            with pytest.raises(RegistryCorruptError):
                approver.get_request(request_id)
            with pytest.raises(RegistryCorruptError):
                approver.approve(request_id, author="ana")
        assert approver.approve(good.id, author="ana").state is RequestState.APPLIED
