"""Hostile input to ``promptreg serve``: random bodies, paths, queries and headers, on a real server.

Whatever arrives, the answer is a status the API documents (never a 500), an error has the API's
shape, and a refused write changes nothing in the store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptreg.registry import JsonFilePromptRegistry
from tests.backends import dump
from tests.serve_helpers import ServeProcess, serve_process

pytestmark = pytest.mark.slow

DOCUMENTED = {200, 201, 304, 400, 401, 403, 404, 405, 409}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(
    ["name", "description", "compatibility", "prompt_text", "messages", "config", "metadata", "message", "labels",
     "version", "expect", "force", "reason", "label", "mode", "token", "author"]
)  # fmt: skip
bodies = st.one_of(
    st.dictionaries(fields, json_values, max_size=5).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
segments = st.lists(
    st.sampled_from([*"abc/._-~?# ", "%2F", "é", "..", "versions", "labels", "rollback", "%00", "%ff", "%", "0"]),
    max_size=12,
).map("".join)
routes = st.sampled_from(
    [("POST", "/api/v1/prompts"), ("POST", "/api/v1/prompts/critic/versions"),
     ("PUT", "/api/v1/prompts/critic/labels/production"), ("DELETE", "/api/v1/prompts/critic/labels/production"),
     ("POST", "/api/v1/prompts/critic/labels/production/rollback"), ("POST", "/api/v1/prompts/critic/check"),
     ("PUT", "/api/v1/prompts/critic/compatibility"), ("POST", "/api/v1/session")]
)  # fmt: skip


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServeProcess, JsonFilePromptRegistry]]:
    folder = tmp_path_factory.mktemp("hostile")
    path = folder / "registry.json"
    registry = JsonFilePromptRegistry(path)
    registry.create_prompt("critic", compatibility="backward")
    registry.add_version("critic", "Do you like {{movie}}?")
    registry.add_version("critic", "As a {{level}} critic, do you like {{movie}}?")
    registry.set_label("critic", "production", 1)
    with serve_process({"PROMPTREG_URL": f"file://{path}", "PROMPTREG_NAMESPACE": ""}, folder) as server:
        yield server, registry


def _check(reply: Any) -> None:
    assert reply.status in DOCUMENTED, reply
    if reply.status >= 400:
        error = json.loads(reply.body)["error"]
        assert isinstance(error["type"], str) and isinstance(error["message"], str), reply


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=routes, body=bodies, role=st.sampled_from(["reader", "writer", "admin", None]))
def test_random_bodies_get_a_documented_answer_and_refusals_change_nothing(
    hostile: tuple[ServeProcess, JsonFilePromptRegistry], route: tuple[str, str], body: bytes, role: str | None
) -> None:
    server, registry = hostile
    before = dump(registry)
    method, path = route
    reply = server.call(method, path, raw=body, role=role)
    _check(reply)
    if reply.status >= 400:
        assert dump(registry) == before, (route, body, reply)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    segment=segments,
    suffix=st.sampled_from(
        [
            "",
            "/versions",
            "/versions/1",
            "/resolve?label=",
            "/history",
            "/diff?from=x&to=",
            "/labels/production",
            "/labels/%2e%2e/rollback",
            "?limit=0",
            "/check",
        ]
    ),
    header=st.text(max_size=60),
)
def test_random_paths_queries_and_headers_get_a_documented_answer(
    hostile: tuple[ServeProcess, JsonFilePromptRegistry], method: str, segment: str, suffix: str, header: str
) -> None:
    server, registry = hostile
    before = dump(registry)
    path = "/api/v1/prompts/" + "".join(c if c.isascii() and c not in " #" else "%20" for c in segment) + suffix
    headers = {"Last-Event-ID": header} if header.isascii() and header.isprintable() else {}
    if method == "GET" and "events" in path:
        return
    reply = server.call(method, path, headers=headers, role="reader")
    _check(reply)
    assert dump(registry) == before


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "bearer " + "x" * 10_000, "Bearer \u00e9t\u00e9", "Token abc"],
)
def test_malformed_authorization_is_401(hostile: tuple[ServeProcess, JsonFilePromptRegistry], header: str) -> None:
    server, _ = hostile
    reply = server.call(
        "GET", "/api/v1/prompts", role=None, headers={"Authorization": header.encode().decode("latin-1")}
    )
    assert (reply.status, json.loads(reply.body)["error"]["type"]) == (401, "AuthenticationRequiredError")


def test_the_stream_refuses_a_garbage_last_event_id(hostile: tuple[ServeProcess, JsonFilePromptRegistry]) -> None:
    server, _ = hostile
    for value in ("-1", "abc", "1e9", "9" * 40):
        reply = server.call("GET", "/api/v1/events", role="reader", headers={"Last-Event-ID": value})
        assert (reply.status, json.loads(reply.body)["error"]["type"]) == (400, "InvalidInputError"), value


def test_token_file_errors_name_the_line_and_never_echo_a_secret(tmp_path: Path) -> None:
    from promptreg.registry.cli.serve.auth import TokenStore
    from promptreg.registry.errors import ConfigurationError

    secret = "prt_this-is-the-raw-token-by-mistake"
    for text, expected in (
        (f"ci writer {secret}", "line 1: expected 'NAME ROLE sha256:HEX'"),
        ("ci boss sha256:" + "a" * 64, "role 'boss'"),
        ("ci writer sha256:" + "A" * 64, "64 lowercase hex"),
        (
            "# ok\nci writer sha256:" + "a" * 64 + "\nci reader sha256:" + "b" * 64,
            "line 3: token name 'ci' appears twice",
        ),
        ("bad/name writer sha256:" + "a" * 64, "token name"),
    ):
        with pytest.raises(ConfigurationError) as caught:
            TokenStore.parse(text, "tokens.txt")
        assert expected in str(caught.value) and secret not in str(caught.value)
