"""The change stream (``GET /api/v1/events``) and what it is built on, on real servers.

- ``PromptRegistry.changes_since`` on every backend: the writes after a revision, in order; ``None``
  when they cannot all be given (too many, or a revision the registry never reached);
- the stream: one ``change`` event per write (``id``: its revision, data: its audit entry), a resume
  with ``Last-Event-ID`` replays exactly what was missed, ``resync`` when the gap cannot be filled,
  heartbeats; a dead Redis makes writes 503 while lookups are still served from the cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from promptreg.registry import InvalidInputError, PromptRegistry, PromptRegistryFactory
from tests.backends import Backend
from tests.serve_helpers import (
    ServeProcess,
    Stream,
    prompt_path,
    registry_fixture,  # noqa: F401 (a fixture)
    serve_process,
    server_fixture,  # noqa: F401 (a fixture)
)

V1 = "Do you like {{movie}}?"


def test_changes_since_gives_the_writes_after_a_revision(backend: Backend, reg: PromptRegistry) -> None:
    reg.create_prompt("critic")
    reg.add_version("critic", V1)
    reg.set_label("critic", "production", 1, author="alice", reason="go")
    reg.create_prompt("other")
    everything = reg.changes_since(0)
    assert everything is not None
    assert [(e.rev, e.action, e.prompt) for e in everything] == [
        (1, "create_prompt", "critic"), (2, "add_version", "critic"), (3, "set_label", "critic"),
        (4, "create_prompt", "other"),
    ]  # fmt: skip
    assert everything[2].author == "alice" and everything[2].reason == "go"
    assert reg.revision() == 4
    assert [e.rev for e in reg.changes_since(2) or []] == [3, 4]
    assert reg.changes_since(4) == []
    assert reg.changes_since(9) is None  # a revision this registry never reached (a restore)
    assert reg.changes_since(0, limit=3) is None  # more than asked for: read the state instead
    for bad in (-1, True, "1"):
        with pytest.raises(InvalidInputError):
            reg.changes_since(bad)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_stream_sends_each_write_and_resumes_where_it_stopped(
    server: ServeProcess, registry: PromptRegistry
) -> None:
    stream = Stream(server)
    try:
        assert stream.status == 200
        ready = stream.next()
        assert ready.kind == "ready" and ready.data["rev"] == int(ready.id or -1) == registry.revision()
        registry.create_prompt("critic")
        registry.add_version("critic", V1)
        registry.set_label("critic", "production", 1, author="alice", reason="ship it")
        events = stream.changes(3)
        assert [(e.data["action"], int(e.id or 0)) for e in events] == [
            ("create_prompt", ready.data["rev"] + 1), ("add_version", ready.data["rev"] + 2),
            ("set_label", ready.data["rev"] + 3),
        ]  # fmt: skip
        assert events[2].data == json.loads(registry.history("critic")[-1].model_dump_json())
        last_seen = int(events[-1].id or 0)
    finally:
        stream.close()
    # Missed while disconnected: replayed from the log, in order, then the stream goes on live.
    registry.add_version("critic", V1 + "!")
    registry.set_label("critic", "production", 2)
    resumed = Stream(server, last_event_id=last_seen)
    try:
        replayed = resumed.changes(2)
        assert [(e.data["action"], e.data.get("version")) for e in replayed] == [("add_version", 2), ("set_label", 2)]
        assert [int(e.id or 0) for e in replayed] == [last_seen + 1, last_seen + 2]
        registry.set_label("critic", "staging", 1)
        live = resumed.changes(1)[0]
        assert live.data["label"] == "staging" and int(live.id or 0) == last_seen + 3
        # A write that moves no pointer (the client applies it silently) reaches the stream too.
        registry.set_compatibility("critic", "full", author="carol")
        mode = resumed.changes(1)[0]
        assert (mode.data["action"], mode.data["compatibility"], mode.data["author"]) == (
            "set_compatibility",
            "full",
            "carol",
        )
    finally:
        resumed.close()
    # A revision the log cannot continue from (here: never reached): resync at the current one.
    ahead = Stream(server, last_event_id=registry.revision() + 100)
    try:
        first = ahead.next()
        assert first.kind == "resync" and first.data["rev"] == registry.revision()
        registry.set_label("critic", "staging", 2)
        assert ahead.changes(1)[0].data["version"] == 2  # and it goes on from there
    finally:
        ahead.close()


@pytest.mark.slow
def test_a_quiet_stream_sends_heartbeats_and_needs_a_token(server: ServeProcess) -> None:
    stream = Stream(server)
    try:
        assert stream.next().kind == "ready"
        with pytest.raises(TimeoutError):  # nothing happens: no event, but heartbeats (every 0.5 s here)
            stream.changes(1, timeout=1.6)
        assert stream.heartbeats >= 2
    finally:
        stream.close()
    anonymous = Stream(server, role=None)
    try:
        assert anonymous.status == 401
    finally:
        anonymous.close()


@pytest.mark.redis
@pytest.mark.slow
def test_a_dead_redis_makes_writes_503_while_resolve_is_served_from_memory(
    private_redis_server: object, tmp_path: Path, namespace: str
) -> None:
    url = private_redis_server.url  # type: ignore[attr-defined]
    env = {"PROMPTREG_URL": url, "PROMPTREG_NAMESPACE": namespace}
    registry = PromptRegistryFactory.create_from_config(env)
    registry.create_prompt("critic")
    registry.add_version("critic", V1)
    registry.set_label("critic", "production", 1)
    registry.close()
    with serve_process(env, tmp_path) as server:
        resolve = prompt_path("critic", "resolve") + "?label=production"
        assert server.call("GET", resolve, role="reader").status == 200
        private_redis_server.stop()  # type: ignore[attr-defined]
        write = server.call("PUT", prompt_path("critic", "labels", "staging"), {"version": 1})
        assert (write.status, write.error_type) == (503, "RegistryUnavailableError")
        served = server.call("GET", resolve, role="reader")
        assert served.status == 200 and served.json()["prompt_text"] == V1
        deadline = time.monotonic() + 10  # and says how fresh it is
        while server.call("GET", resolve, role="reader").headers["x-promptreg-state"] != "stale":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = server.call("GET", "/api/v1/status", role="reader")
        assert status.status == 200
        # The stream's reader says so once per outage, not at every retry (every 0.5 s).
        warning = "cannot read the change log"
        deadline = time.monotonic() + 10
        while warning not in server.log_text():
            assert time.monotonic() < deadline, server.log_text()
            time.sleep(0.1)
        until = time.monotonic() + 1.6
        while time.monotonic() < until:
            assert server.log_text().count(warning) == 1, server.log_text()
            time.sleep(0.2)


NODE_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "follow-changes.mjs"


@pytest.mark.redis
@pytest.mark.slow
def test_a_node_service_follows_the_stream(redis_server: object, tmp_path: Path, namespace: str) -> None:
    """docs/serve.md's Node example, run with the machine's node: it prints each change it gets."""
    node = shutil.which("node")
    if node is None:
        if os.environ.get("PROMPTREG_REQUIRE_NODE") == "1":
            pytest.fail("PROMPTREG_REQUIRE_NODE=1 but node is not installed")
        pytest.skip("node is not installed (apt-get install nodejs); the Node stream example is not run")
    env = {"PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace}  # type: ignore[attr-defined]
    registry = PromptRegistryFactory.create_from_config(env)
    try:
        with serve_process(env, tmp_path) as server:
            follower = subprocess.Popen(
                [node, str(NODE_EXAMPLE), server.base, server.tokens["reader"], "3"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert follower.stdout is not None
                assert follower.stdout.readline().startswith("ready at rev")
                registry.create_prompt("critic")
                registry.add_version("critic", V1)
                registry.set_label("critic", "production", 1)
                out, err = follower.communicate(timeout=30)
            finally:
                if follower.poll() is None:
                    follower.kill()
                    follower.wait(timeout=5)
            assert follower.returncode == 0, err
            lines = out.strip().splitlines()
            assert [line.split()[1] for line in lines] == ["create_prompt", "add_version", "set_label"], out
            assert lines[-1].endswith("critic production -> 1"), out
    finally:
        registry.close()


@pytest.mark.slow
def test_streams_past_the_limit_are_refused_until_one_closes(tmp_path: Path) -> None:
    # The limit is the server's own, whatever the store: the JSON file shows it.
    env = {"PROMPTREG_URL": f"file://{tmp_path / 'registry.json'}", "PROMPTREG_NAMESPACE": ""}
    with serve_process(env, tmp_path, extra=("--max-streams", "2")) as server:
        first, second = Stream(server), Stream(server)
        try:
            assert first.next().kind == second.next().kind == "ready"  # both counted by now
            refused = server.call("GET", "/api/v1/events", role="reader")
            assert (refused.status, refused.error_type) == (503, "RegistryUnavailableError")
            assert "--max-streams" in refused.json()["error"]["message"]
        finally:
            first.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closed connection at its next write (a heartbeat, 0.5 s)
            again = Stream(server)
            if again.status == 200:
                assert again.next().kind == "ready"
                again.close()
                break
            again.close()
            assert time.monotonic() < deadline, "the closed stream was never released"
            time.sleep(0.2)
        second.close()
