"""``promptreg serve`` during a rollout: ``resolve?key=`` picks the variant as ``PromptClient.get``
does, the prompt shows the rollout, and the change stream carries each rollout write."""

from __future__ import annotations

import time

import pytest

from promptreg.registry import PromptRegistry
from promptreg.registry.rollouts import picks_candidate
from tests.serve_helpers import (
    ServeProcess,
    Stream,
    prompt_path,
    registry_fixture,  # noqa: F401 (a fixture)
    server_fixture,  # noqa: F401 (a fixture)
)

pytestmark = pytest.mark.slow

NAME = "support-bot"


def test_resolve_with_a_key_during_a_rollout(server: ServeProcess, registry: PromptRegistry) -> None:
    registry.create_prompt(NAME)
    registry.add_version(NAME, "Help {{user}}.")
    registry.add_version(NAME, "Kindly help {{user}}.")
    registry.set_label(NAME, "production", 1)
    stream = Stream(server, last_event_id=registry.revision())
    try:
        started = registry.start_rollout(NAME, "production", 2, 30, author="ana")
        (event,) = stream.changes(1)
        assert (event.data["action"], event.data["version"], event.data["percent"]) == ("start_rollout", 2, 30.0)
        assert event.data["rev"] == started.rev
    finally:
        stream.conn.close()
    deadline = time.monotonic() + 10
    path = prompt_path(NAME, "resolve") + "?label=production&key="
    # Until the server's client has the prompt (a file is polled), resolve answers 404 without a version.
    while server.call("GET", path + "probe", role="reader").json().get("version") not in (1, 2):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    keys = [f"user-{i}" for i in range(60)]
    while True:  # once the server's client applied the rollout, every key gets its variant
        served = {key: server.call("GET", path + key, role="reader").json()["version"] for key in keys}
        expected = {key: 2 if picks_candidate(NAME, "production", 2, 30, key) else 1 for key in keys}
        if served == expected:
            break
        assert time.monotonic() < deadline, (served, expected)
        time.sleep(0.05)
    assert {1, 2} == set(served.values())
    shown = server.call("GET", prompt_path(NAME), role="reader").json()
    assert shown["labels"] == {"production": 1}
    assert shown["rollouts"]["production"]["version"] == 2 and shown["rollouts"]["production"]["percent"] == 30.0
    too_long = server.call("GET", path + "k" * 300, role="reader")
    assert too_long.status == 400 and "key" in too_long.json()["error"]["message"]


def test_resolve_serves_a_composition_and_follows_its_partial(server: ServeProcess, registry: PromptRegistry) -> None:
    registry.create_prompt("safety")
    registry.add_version("safety", "Be safe.")
    registry.add_version("safety", "Be very safe.")
    registry.set_label("safety", "production", 1)
    registry.create_prompt("bot")
    registry.add_version("bot", "{{> safety}} Help {{user}}.")
    registry.set_label("bot", "production", 1)
    path = prompt_path("bot", "resolve") + "?label=production"
    deadline = time.monotonic() + 10
    while server.call("GET", path, role="reader").status != 200:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first = server.call("GET", path, role="reader")
    assert first.json()["prompt_text"] == "Be safe. Help {{user}}."
    assert first.json()["partials"] == {"safety": 1} and first.json()["variables"] == ["user"]
    registry.set_label("safety", "production", 2)
    while (now := server.call("GET", path, role="reader")).json()["prompt_text"] != "Be very safe. Help {{user}}.":
        assert time.monotonic() < deadline, now.json()
        time.sleep(0.05)
    assert now.json()["partials"] == {"safety": 2}
    assert now.headers["etag"] != first.headers["etag"]  # the composed text changed, so does its tag
