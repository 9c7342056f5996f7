"""``promptreg serve`` and protected labels: a real server process with a token of each role (two
approvers), against the JSON file, a real redis-server and a real PostgreSQL (``backend_env``).

The identity of every step is the token's name; ``writer`` requests, ``approver`` decides, ``admin``
protects; a direct move of a protected label answers 409 ``protected_label``; no token approves its
own request; every refusal leaves the store unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptreg.registry import PromptRegistry
from tests.backends import Cli
from tests.serve_helpers import ServeProcess, Stream, prompt_path, registry_fixture, serve_process  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

NAME = "team/critic"
TOKENS = {"reader": "reader", "writer": "writer", "approver": "approver", "approver-2": "approver", "admin": "admin"}
"""Token name -> role (each token's name is ``<name>-bot``; ``call(role=...)`` takes the name)."""


@pytest.fixture
def server(backend_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """``promptreg serve`` with a token of each role, and a second approver."""
    with serve_process(backend_env, tmp_path, roles=TOKENS, extra=("--no-console",)) as running:
        yield running


@pytest.fixture
def seeded(registry: PromptRegistry) -> PromptRegistry:
    """team/critic with three versions, production -> 1 (not protected yet)."""
    registry.create_prompt(NAME)
    for n in range(1, 4):
        registry.add_version(NAME, f"v{n}: review {{{{movie}}}}")
    registry.set_label(NAME, "production", 1)
    return registry


def _labels(path: str = "production") -> str:
    return prompt_path(NAME, "labels", path)


def _stored(registry: PromptRegistry) -> Any:
    """What a refusal must leave as it was: labels, protections, requests, revision."""
    prompt = registry.get_prompt(NAME)
    assert prompt is not None
    return (dict(prompt.labels), registry.protected_labels(), registry.list_requests(), registry.revision())


def _protect(server: ServeProcess, approvals: int = 1) -> None:
    protected = server.call(
        "PUT", _labels() + "/protection", {"approvals": approvals, "reason": "reviewed"}, role="admin"
    )
    assert protected.status == 200, protected
    event = protected.json()["event"]
    assert (event["action"], event["author"], event["approvals"]) == ("protect_label", "admin-bot", approvals)


def _request(server: ServeProcess, version: int, role: str = "writer") -> dict[str, Any]:
    made = server.call("POST", _labels() + "/requests", {"version": version, "reason": f"ship v{version}"}, role=role)
    assert made.status == 201, made
    body: dict[str, Any] = made.json()
    return body


def _resolved(server: ServeProcess) -> int:
    version: int = server.call("GET", prompt_path(NAME, "resolve") + "?label=production", role="reader").json()[
        "version"
    ]
    return version


def test_protect_request_approve_through_the_api(server: ServeProcess, seeded: PromptRegistry) -> None:
    registry = seeded
    _protect(server)
    assert server.call("GET", prompt_path(NAME), role="reader").json()["protected"] == {"production": 1}

    # A direct move through the existing routes: 409 protected_label, nothing written.
    before = _stored(registry)
    for method, path, body in (
        ("PUT", _labels(), {"version": 2}),
        ("PUT", _labels(), {"version": 2, "force": True}),
        ("DELETE", _labels(), None),
        ("POST", _labels() + "/rollback", None),
    ):
        refused = server.call(method, path, body, role="admin")
        assert (refused.status, refused.error_type) == (409, "ProtectedLabelError"), (method, path, refused)
        error = refused.json()["error"]
        assert (error["code"], error["prompt"], error["label"]) == ("protected_label", NAME, "production")
    added = server.call("POST", prompt_path(NAME, "versions"), {"prompt_text": "v4", "labels": ["production"]})
    assert (added.status, added.json()["error"]["code"], added.json()["error"]["created_version"]) == (
        409, "protected_label", 4
    )  # fmt: skip
    after = _stored(registry)
    assert after[:3] == before[:3] and after[3] == before[3] + 1  # only the version was added

    stream = Stream(server, last_event_id=registry.revision())
    try:
        made = _request(server, 3)
        assert (made["author"], made["state"], made["from_version"], made["version"]) == ("writer-bot", "pending", 1, 3)
        assert registry.get_request(made["id"]).author == "writer-bot"  # the token's name, nothing else
        listed = server.call("GET", "/api/v1/requests?state=pending", role="reader").json()["requests"]
        assert [r["id"] for r in listed] == [made["id"]]
        one = server.call("GET", "/api/v1/requests/" + made["id"], role="reader").json()
        assert one == made

        # The writer cannot decide: 403, nothing recorded.
        for action in ("approve", "reject", "apply"):
            refused = server.call("POST", f"/api/v1/requests/{made['id']}/{action}", {})
            assert (refused.status, refused.error_type) == (403, "PermissionDeniedError"), refused
        assert registry.get_request(made["id"]).approvals == ()

        approved = server.call("POST", f"/api/v1/requests/{made['id']}/approve?wait=5", None, role="approver")
        assert approved.status == 200, approved
        done = approved.json()
        assert done["fleet"]["rev"] == done["applied_rev"]  # ?wait: the fleet's confirmation, as a label move's
        assert (done["state"], done["decided_by"], [a["author"] for a in done["approvals"]]) == (
            "applied", "approver-bot", ["approver-bot"]
        )  # fmt: skip
        assert registry.get_prompt(NAME).labels["production"] == 3  # type: ignore[union-attr]
        assert _resolved(server) == 3  # read-your-writes: the server's client serves the move already
        changes = [event.data for event in stream.changes(2)]
        assert [(c["action"], c["author"], c["request"]) for c in changes] == [
            ("request_move", "writer-bot", made["id"]), ("set_label", "approver-bot", made["id"])
        ]  # fmt: skip
    finally:
        stream.close()


def test_an_approver_cannot_approve_its_own_request(server: ServeProcess, seeded: PromptRegistry) -> None:
    registry = seeded
    _protect(server, approvals=2)
    made = _request(server, 2, role="approver")  # an approver may request too
    assert made["author"] == "approver-bot" and made["approvals_required"] == 2
    before = _stored(registry)
    for action in ("approve", "reject"):
        own = server.call("POST", f"/api/v1/requests/{made['id']}/{action}", {}, role="approver")
        assert (own.status, own.error_type) == (403, "ApprovalError"), own
        assert "made this request" in own.json()["error"]["message"]
    # No body field names who decides: the token does.
    forged = server.call("POST", f"/api/v1/requests/{made['id']}/approve", {"author": "someone"}, role="approver")
    assert (forged.status, forged.error_type) == (400, "InvalidInputError")
    assert _stored(registry) == before

    first = server.call("POST", f"/api/v1/requests/{made['id']}/approve", {}, role="approver-2")
    assert first.status == 200 and first.json()["state"] == "pending" and len(first.json()["approvals"]) == 1
    twice = server.call("POST", f"/api/v1/requests/{made['id']}/approve", {}, role="approver-2")
    assert (twice.status, twice.error_type) == (403, "ApprovalError") and "already" in twice.json()["error"]["message"]
    second = server.call("POST", f"/api/v1/requests/{made['id']}/approve", {}, role="admin")  # admin: an approver too
    assert second.status == 200 and second.json()["state"] == "applied"
    assert [a["author"] for a in second.json()["approvals"]] == ["approver-2-bot", "admin-bot"]
    assert _resolved(server) == 2


def test_reject_apply_later_and_the_refusals(server: ServeProcess, seeded: PromptRegistry) -> None:
    registry = seeded
    _protect(server)
    rejected = _request(server, 2)
    reply = server.call("POST", f"/api/v1/requests/{rejected['id']}/reject", {"reason": "not now"}, role="approver")
    assert reply.status == 200
    assert (reply.json()["state"], reply.json()["decision_reason"], reply.json()["decided_by"]) == (
        "rejected", "not now", "approver-bot"
    )  # fmt: skip
    late = server.call("POST", f"/api/v1/requests/{rejected['id']}/approve", {}, role="approver-2")
    assert (late.status, late.error_type) == (409, "RequestStateError")

    held = _request(server, 3)
    reply = server.call("POST", f"/api/v1/requests/{held['id']}/approve", {"apply": False}, role="approver")
    assert reply.status == 200 and reply.json()["state"] == "approved"
    assert registry.get_prompt(NAME).labels["production"] == 1  # type: ignore[union-attr]
    applied = server.call("POST", f"/api/v1/requests/{held['id']}/apply", None, role="approver-2")
    assert applied.status == 200 and applied.json()["state"] == "applied", applied
    assert applied.json()["decided_by"] == "approver-2-bot" and _resolved(server) == 3
    again = server.call("POST", f"/api/v1/requests/{held['id']}/apply", None, role="approver")
    assert (again.status, again.error_type) == (409, "RequestStateError")

    by_state = server.call("GET", "/api/v1/requests?state=rejected&prompt=" + NAME, role="reader").json()["requests"]
    assert [r["id"] for r in by_state] == [rejected["id"]]
    both = server.call("GET", "/api/v1/requests?label=production&limit=5", role="reader").json()["requests"]
    assert [r["id"] for r in both] == [held["id"], rejected["id"]]

    before = _stored(registry)
    for method, path, body, role, status, kind in (
        ("GET", "/api/v1/requests?state=maybe", None, "reader", 400, "InvalidInputError"),
        ("GET", "/api/v1/requests?limit=0", None, "reader", 400, "InvalidInputError"),
        ("GET", "/api/v1/requests/xyz", None, "reader", 400, "InvalidInputError"),
        ("GET", "/api/v1/requests/0123456789abcdef", None, "reader", 404, "RequestNotFoundError"),
        ("POST", "/api/v1/requests/0123456789abcdef/approve", {}, "approver", 404, "RequestNotFoundError"),
        ("POST", "/api/v1/requests/0123456789abcdef/merge", {}, "approver", 404, "NotFound"),
        ("POST", f"/api/v1/requests/{held['id']}/approve", {"apply": "yes"}, "approver", 400, "InvalidInputError"),
        ("POST", _labels() + "/requests", {"version": 2, "reason": "r"}, "reader", 403, "PermissionDeniedError"),
        ("POST", _labels() + "/requests", {"version": 2}, "writer", 400, "InvalidInputError"),
        ("POST", _labels() + "/requests", {"version": 9, "reason": "r"}, "writer", 404, "VersionNotFoundError"),
        ("POST", _labels("staging") + "/requests", {"version": 2, "reason": "r"}, "writer", 400, "InvalidInputError"),
        ("POST", _labels() + "/requests", {"version": 2, "reason": "r", "author": "x"}, "writer", 400,
         "InvalidInputError"),
        ("PUT", _labels() + "/protection", {"approvals": 2}, "approver", 403, "PermissionDeniedError"),
        ("PUT", _labels() + "/protection", {"approvals": 11}, "admin", 400, "InvalidInputError"),
        ("DELETE", _labels("staging") + "/protection", None, "admin", 400, "InvalidInputError"),
        ("DELETE", _labels() + "/protection", None, "writer", 403, "PermissionDeniedError"),
        ("GET", "/api/v1/requests", None, None, 401, "AuthenticationRequiredError"),
    ):  # fmt: skip
        reply = server.call(method, path, body, role=role)
        assert (reply.status, reply.error_type) == (status, kind), (method, path, body, role, reply)
    assert _stored(registry) == before


def test_unprotect_lets_direct_moves_through(server: ServeProcess, seeded: PromptRegistry) -> None:
    _protect(server)
    removed = server.call("DELETE", _labels() + "/protection", {"reason": "freeze over"}, role="admin")
    assert removed.status == 200 and removed.json()["event"]["action"] == "unprotect_label"
    assert server.call("GET", prompt_path(NAME), role="reader").json()["protected"] == {}
    moved = server.call("PUT", _labels(), {"version": 2})
    assert moved.status == 200 and moved.json()["event"]["version"] == 2
    assert seeded.get_prompt(NAME).labels["production"] == 2  # type: ignore[union-attr]


def test_the_approver_role_is_a_token_role(tmp_path: Path) -> None:
    made = Cli({}, tmp_path)("token", "ana", "--role", "approver", "--file", str(tmp_path / "t.txt"))
    assert made.code == 0, made
    assert (tmp_path / "t.txt").read_text().startswith("ana approver sha256:")
