"""``promptreg serve``'s HTTP API on every production store: a real server process on a loopback
port, against the JSON file, a real redis-server and a real PostgreSQL (``backend_env``).

Every write goes through the registry's own audited write with the token's name as author; every
refusal is a typed error in the API's shape with the right status, and leaves the store unchanged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from promptreg.registry import PromptRegistry, PromptRegistryFactory
from promptreg.registry.cli.serve.auth import Identity
from tests.backends import dump
from tests.serve_helpers import (
    ServeProcess,
    prompt_path,
    registry_fixture,  # noqa: F401 (a fixture)
    serve_process,
    server_fixture,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.slow

V1 = "Do you like {{movie}}?"
V2 = "As a {{level}} critic, do you like {{movie}}?"  # needs level: backward refuses 1 -> 2


def _wait_for(predicate: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_write_read_and_resolve_through_the_api(server: ServeProcess, registry: PromptRegistry) -> None:
    name = "team/critic"
    created = server.call("POST", "/api/v1/prompts", {"name": name, "description": "d", "compatibility": "backward"})
    assert created.status == 201, created
    assert created.json()["name"] == name and created.json()["compatibility"] == "backward"
    v1 = server.call("POST", prompt_path(name, "versions"), {"prompt_text": V1, "labels": ["production"]})
    assert v1.status == 201, v1
    assert v1.json()["version"] == 1 and v1.json()["variables"] == ["movie"]
    assert [e["label"] for e in v1.json()["label_events"]] == ["production"]
    chat = [{"role": "system", "content": "You review {{movie}}."}, {"placeholder": "history"}]
    v2 = server.call("POST", prompt_path(name, "versions"), {"messages": chat, "config": {"t": 0.2}, "message": "chat"})
    assert v2.status == 201 and v2.json()["type"] == "chat" and v2.json()["placeholders"] == ["history"]

    # The registry holds exactly that, audited under the writer token's name.
    assert registry.get_version(name, label="production").prompt_text == V1
    assert {e.author for e in registry.history(name)} == {"writer-bot"}

    got = server.call("GET", prompt_path(name), role="reader").json()
    assert got["labels"] == {"production": 1} and got["latest"] == 2 and len(got["versions"]) == 2
    assert got["fleet"]["labels"]["production"]["rev"] > 0
    one = server.call("GET", prompt_path(name, "versions", "2"), role="reader").json()
    assert one["messages"] == chat and one["config"] == {"t": 0.2} and one["prompt_text"] is None
    assert len(one["sha256"]) == 64

    # resolve: from the server's cache, with an ETag; If-None-Match -> 304.
    resolved = server.call("GET", prompt_path(name, "resolve") + "?label=production", role="reader")
    assert resolved.status == 200 and resolved.json()["prompt_text"] == V1
    etag = resolved.headers["etag"]
    assert resolved.headers["x-promptreg-state"] == "live" and int(resolved.headers["x-promptreg-rev"]) >= 4
    again = server.call("GET", prompt_path(name, "resolve") + "?label=production", role="reader",
                        headers={"If-None-Match": etag})  # fmt: skip
    assert again.status == 304 and again.body == b""

    # A move made elsewhere (the registry API) is served by resolve once pushed: a new ETag.
    registry.set_label(name, "production", 2, author="elsewhere", force=True)

    def moved() -> bool:
        reply = server.call("GET", prompt_path(name, "resolve") + "?label=production", role="reader",
                            headers={"If-None-Match": etag})  # fmt: skip
        return reply.status == 200 and reply.json()["version"] == 2

    _wait_for(moved)

    # Labels: compare-and-set, rollback, delete; each returns its audit entry.
    put = server.call("PUT", prompt_path(name, "labels", "staging"), {"version": 1, "expect": 0, "reason": "try"})
    assert put.status == 200
    assert (put.json()["event"]["author"], put.json()["event"]["reason"]) == ("writer-bot", "try")
    stale = server.call("POST", prompt_path(name, "labels", "production", "rollback"), {"expect": 1, "force": True})
    assert (stale.status, stale.error_type, stale.json()["error"]["actual"]) == (409, "LabelConflictError", 2)
    back = server.call(
        "POST", prompt_path(name, "labels", "production", "rollback"), {"reason": "bad", "force": True, "expect": 2}
    )
    assert back.status == 200 and back.json()["event"]["version"] == 1
    gone = server.call("DELETE", prompt_path(name, "labels", "staging"), {"expect": 1})
    assert gone.status == 200 and gone.json()["event"]["version"] is None
    assert registry.get_prompt(name).labels == {"production": 1}  # type: ignore[union-attr]

    history = server.call("GET", prompt_path(name, "history"), role="reader").json()["events"]
    assert [e["action"] for e in history][-3:] == ["set_label", "rollback", "delete_label"]
    diff = server.call("GET", prompt_path(name, "diff") + "?from=1&to=2", role="reader").json()
    assert "-Do you like {{movie}}?" in diff["diff"] and diff["config"] == {"from": {}, "to": {"t": 0.2}}


def test_listing_pages_by_prefix_and_cursor(server: ServeProcess, registry: PromptRegistry) -> None:
    for name in ("a/one", "a/two", "a/three", "b/one"):
        registry.create_prompt(name, description=f"about {name}")
        registry.add_version(name, V1)
    registry.set_label("a/two", "production", 1)

    def page(query: str) -> dict[str, object]:
        reply = server.call("GET", "/api/v1/prompts" + query, role="reader")
        assert reply.status == 200, reply
        return reply.json()  # type: ignore[no-any-return]

    _wait_for(lambda: page("?prefix=a/")["total"] == 3 and page("?prefix=a/two")["prompts"][0]["labels"])  # type: ignore[index]
    first = page("?prefix=a/&limit=2")
    assert [p["name"] for p in first["prompts"]] == ["a/one", "a/three"]  # type: ignore[attr-defined]
    assert first["prompts"][0] == {"name": "a/one", "description": "about a/one", "labels": {}, "latest": 1}  # type: ignore[index]
    second = page(f"?prefix=a/&limit=2&cursor={first['next_cursor']}")
    assert [p["name"] for p in second["prompts"]] == ["a/two"] and second["next_cursor"] is None  # type: ignore[attr-defined]
    assert second["prompts"][0]["labels"] == {"production": 1}  # type: ignore[index]


def test_a_name_whose_segment_is_a_route_word_is_reached_encoded(
    server: ServeProcess, registry: PromptRegistry
) -> None:
    registry.create_prompt("x/history")
    registry.add_version("x/history", V1)
    registry.create_prompt("x")
    encoded = server.call("GET", "/api/v1/prompts/x%2Fhistory", role="reader")
    assert encoded.status == 200 and encoded.json()["name"] == "x/history"
    plain = server.call("GET", "/api/v1/prompts/x/history", role="reader")  # the history of "x"
    assert plain.status == 200 and plain.json()["name"] == "x"
    assert server.call("GET", "/api/v1/prompts/x%2Fhistory/versions/1", role="reader").json()["prompt_text"] == V1


def test_refusals_are_typed_and_change_nothing(server: ServeProcess, registry: PromptRegistry) -> None:
    registry.create_prompt("critic", compatibility="backward")
    registry.add_version("critic", V1)
    registry.add_version("critic", V2)
    registry.set_label("critic", "production", 1)
    resolve = prompt_path("critic", "resolve") + "?label=production"
    _wait_for(lambda: server.call("GET", resolve, role="reader").status == 200)  # the server's cache has it
    before = dump(registry)
    path = prompt_path("critic", "labels", "production")
    cases = [
        ("POST", "/api/v1/prompts", None, b"{not json", 400, "InvalidInputError"),
        ("POST", "/api/v1/prompts", None, b"[1, 2]", 400, "InvalidInputError"),
        ("POST", "/api/v1/prompts", {"name": "ok", "colour": "red"}, None, 400, "InvalidInputError"),
        ("POST", "/api/v1/prompts", {"name": 7}, None, 400, "InvalidInputError"),
        ("POST", "/api/v1/prompts", {"name": "bad name!"}, None, 400, "InvalidNameError"),
        ("POST", "/api/v1/prompts", {"name": "critic"}, None, 409, "PromptExistsError"),
        ("PUT", path, {"version": "2"}, None, 400, "InvalidInputError"),
        ("PUT", path, {"version": True}, None, 400, "InvalidInputError"),
        ("PUT", path, {"version": 9}, None, 404, "VersionNotFoundError"),
        ("PUT", path, {"version": 2}, None, 409, "IncompatibleVersionError"),
        ("PUT", path, {"version": 1, "expect": 2}, None, 409, "LabelConflictError"),
        ("PUT", prompt_path("critic", "labels", "latest"), {"version": 1}, None, 400, "InvalidNameError"),
        ("PUT", prompt_path("nope", "labels", "production"), {"version": 1}, None, 404, "PromptNotFoundError"),
        ("DELETE", prompt_path("critic", "labels", "staging"), None, None, 404, "LabelNotFoundError"),
        ("POST", prompt_path("critic", "versions"), {"prompt_text": "x" * (1024 * 1024 + 1)}, None, 400,
         "PromptTooLargeError"),
        ("POST", prompt_path("critic", "versions"), None, b"x" * (9 * 1024 * 1024), 400, "InvalidInputError"),
        ("GET", prompt_path("critic", "versions", "0"), None, None, 400, "InvalidInputError"),
        ("GET", prompt_path("critic", "diff") + "?from=1&to=5", None, None, 404, "VersionNotFoundError"),
        ("GET", prompt_path("critic", "resolve") + "?label=staging", None, None, 404, "LabelNotFoundError"),
        ("GET", prompt_path("critic", "nonsense", "x", "y"), None, None, 404, "PromptNotFoundError"),
        ("PATCH", prompt_path("critic"), None, None, 405, "MethodNotAllowed"),
        ("GET", "/api/v1/nothing-here", None, None, 404, "NotFound"),
    ]  # fmt: skip
    for method, path_, body, raw, status, kind in cases:
        reply = server.call(method, path_, body, raw=raw)
        assert (reply.status, reply.error_type) == (status, kind), (method, path_, reply)
        assert reply.json()["error"]["message"], reply
    refused = server.call("PUT", path, {"version": 2}).json()["error"]
    assert refused["added"] == ["level"] and refused["mode"] == "backward"
    conflict = server.call("PUT", path, {"version": 1, "expect": 2}).json()["error"]
    assert (conflict["expected"], conflict["actual"]) == (2, 1)
    assert dump(registry) == before
    # The compatibility preview says the same, writing nothing; force moves anyway.
    check = server.call("POST", prompt_path("critic", "check"), {"label": "production", "version": 2}, role="reader")
    assert check.status == 200 and check.json()["compatible"] is False and check.json()["added"] == ["level"]
    assert dump(registry) == before
    forced = server.call("PUT", path, {"version": 2, "force": True, "reason": "on purpose"})
    assert forced.status == 200 and forced.json()["event"]["forced"] is True
    # A version added with a label its mode refuses: the version stays (versions are never removed), the
    # answer says which one, and the label does not move.
    new_version: dict[str, object] = {"prompt_text": V2 + " {{extra}}", "labels": ["production"]}
    added = server.call("POST", prompt_path("critic", "versions"), new_version)
    assert (added.status, added.error_type, added.json()["error"]["created_version"]) == (
        409, "IncompatibleVersionError", 3
    )  # fmt: skip
    assert registry.get_version("critic", label="latest").version == 3
    assert registry.get_version("critic", label="production").version == 2


def test_auth_roles_and_tokens_never_logged(server: ServeProcess, registry: PromptRegistry) -> None:
    registry.create_prompt("critic")
    registry.add_version("critic", V1)
    before = dump(registry)
    label = prompt_path("critic", "labels", "production")
    assert server.call("PUT", label, {"version": 1}, role="reader").error_type == "PermissionDeniedError"
    assert server.call("PUT", label, {"version": 1}, role="reader").status == 403
    none = server.call("PUT", label, {"version": 1}, role=None)
    assert none.status == 401 and none.headers["www-authenticate"] == "Bearer"
    wrong = server.call("GET", "/api/v1/prompts", role=None, headers={"Authorization": "Bearer prt_not-a-token"})
    assert (wrong.status, wrong.error_type) == (401, "AuthenticationRequiredError")
    assert server.call("GET", "/api/v1/prompts", role=None).status == 401  # tokens configured: reads need one
    mode = prompt_path("critic", "compatibility")
    assert server.call("PUT", mode, {"mode": "full"}).status == 403  # a writer may not, an admin may
    assert dump(registry) == before
    assert server.call("PUT", mode, {"mode": "full"}, role="admin").status == 200
    who = server.call("GET", "/api/v1/whoami", role="admin").json()
    assert who == {"name": "admin-bot", "role": "admin", "session": False, "tokens": True}
    # A console session: a cookie for the token; its writes need the console header.
    session = server.call("POST", "/api/v1/session", {"token": server.tokens["writer"]}, role=None)
    cookie = session.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    jar = {"Cookie": cookie.split(";", 1)[0]}
    assert server.call("GET", "/api/v1/whoami", role=None, headers=jar).json()["name"] == "writer-bot"
    assert server.call("PUT", label, {"version": 1}, role=None, headers=jar).status == 403
    ok = server.call("PUT", label, {"version": 1}, role=None, headers={**jar, "X-Promptreg-Console": "1"})
    assert ok.status == 200 and ok.json()["event"]["author"] == "writer-bot"
    bad = server.call("POST", "/api/v1/session", {"token": "prt_wrong"}, role=None)
    assert bad.status == 401
    log = server.log_text()
    assert "PUT /api/v1/prompts/critic/labels/production" in log  # the log is there, and holds no token
    for secret in server.tokens.values():
        assert secret not in log


def test_label_write_waits_for_the_fleet(
    server: ServeProcess, registry: PromptRegistry, backend_env: dict[str, str]
) -> None:
    registry.create_prompt("critic")
    registry.add_version("critic", V1)
    reply = server.call("PUT", prompt_path("critic", "labels", "production") + "?wait=5", {"version": 1})
    fleet = reply.json()["fleet"]
    assert fleet["complete"] is True and fleet["rev"] == reply.json()["event"]["rev"]
    members = server.call("GET", "/api/v1/fleet", role="reader").json()["members"]
    if backend_env["PROMPTREG_URL"].startswith("redis"):  # only Redis keeps presence: the server's own client
        assert any(m["client_name"] == "promptreg-serve" for m in members)
        assert fleet["clients"] >= 1 and fleet["reached"]
    else:
        assert members == [] and fleet["clients"] == 0
    assert server.call("PUT", prompt_path("critic", "labels", "x") + "?wait=99", {"version": 1}).status == 400


def test_openapi_describes_every_route_and_every_described_route_answers(server: ServeProcess) -> None:
    document = server.call("GET", "/openapi.json", role=None).json()
    assert document["openapi"].startswith("3.1")
    assert "AuditEvent" in document["components"]["schemas"]
    expected = {
        "/api/v1/prompts", "/api/v1/prompts/{name}", "/api/v1/prompts/{name}/versions",
        "/api/v1/prompts/{name}/versions/{n}", "/api/v1/prompts/{name}/resolve",
        "/api/v1/prompts/{name}/labels/{label}", "/api/v1/prompts/{name}/labels/{label}/rollback",
        "/api/v1/prompts/{name}/history", "/api/v1/prompts/{name}/diff", "/api/v1/prompts/{name}/check",
        "/api/v1/prompts/{name}/compatibility", "/api/v1/fleet", "/api/v1/events", "/api/v1/session",
        "/api/v1/whoami", "/api/v1/status", "/api/v1/prompts/{name}/labels/{label}/requests",
        "/api/v1/prompts/{name}/labels/{label}/protection", "/api/v1/requests", "/api/v1/requests/{id}",
        "/api/v1/requests/{id}/approve", "/api/v1/requests/{id}/reject", "/api/v1/requests/{id}/apply",
    }  # fmt: skip
    assert set(document["paths"]) == expected
    for path, operations in document["paths"].items():
        concrete = path.replace("{name}", "nobody/here").replace("{n}", "1").replace("{label}", "production")
        for method in operations:
            if path == "/api/v1/events":
                continue  # a stream: tested in test_serve_stream
            reply = server.call(method.upper(), concrete, {} if method in ("post", "put") else None, role="admin")
            assert reply.status not in (405, 500), (method, path, reply)
            if reply.status == 404:
                assert reply.error_type == "PromptNotFoundError", (method, path, reply)


def test_no_tokens_means_read_only_on_loopback(backend_env: dict[str, str], tmp_path: Path) -> None:
    registry = PromptRegistryFactory.create_from_config(backend_env)
    try:
        registry.create_prompt("critic")
        registry.add_version("critic", V1)
        with serve_process(backend_env, tmp_path, tokens=False) as server:
            assert server.call("GET", prompt_path("critic"), role=None).status == 200
            write = server.call("PUT", prompt_path("critic", "labels", "production"), {"version": 1}, role=None)
            assert (write.status, write.error_type) == (401, "AuthenticationRequiredError")
            assert "no tokens configured" in write.json()["error"]["message"]
            assert registry.get_prompt("critic").labels == {}  # type: ignore[union-attr]
    finally:
        registry.close()


def test_a_public_address_without_tokens_is_refused(run: object) -> None:
    message = run.fails("serve", "--host", "0.0.0.0", "--port", "1")  # type: ignore[attr-defined]
    assert "loopback only" in message


def test_token_command_prints_a_token_and_its_hash_line(run: object) -> None:
    outcome = run("token", "ci-bot", "--role", "writer")  # type: ignore[operator]
    token = outcome.stdout.strip()
    line = outcome.stderr.strip().splitlines()[-1]
    name, role, digest = line.split()
    assert (name, role) == ("ci-bot", "writer") and token not in line
    from promptreg.registry.cli.serve.auth import TokenStore

    identity = TokenStore.parse(line, "test").authenticate(token)
    assert identity is not None and identity.name == "ci-bot" and json.dumps(digest)


def test_token_file_option_appends_the_hash_line_readable_by_its_owner_only(run: object, tmp_path: Path) -> None:
    from promptreg.registry.cli.serve.auth import TokenStore

    path = tmp_path / "tokens.txt"
    first = run("token", "alice", "--role", "admin", "--file", str(path))  # type: ignore[operator]
    second = run("token", "ci-bot", "--role", "writer", "--file", str(path))  # type: ignore[operator]
    assert first.code == second.code == 0
    tokens = [first.stdout.strip(), second.stdout.strip()]
    assert (path.stat().st_mode & 0o777) == 0o600
    text = path.read_text()
    assert all(token not in text for token in tokens) and len(text.splitlines()) == 2
    store = TokenStore.load(str(path), environ={})
    assert [store.authenticate(t) for t in tokens] == [Identity("alice", "admin"), Identity("ci-bot", "writer")]
    again = run.fails("token", "alice", "--file", str(path))  # type: ignore[attr-defined]
    assert "already" in again and path.read_text() == text
