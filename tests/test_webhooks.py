"""Signed webhooks on the JSON-file registry: signatures (checked from the specification), event
types, filters, retries, dead letters, resync, the Slack format, the CLI, and a worker killed with
SIGKILL mid-delivery. Real HTTP receivers on loopback; short backoff settings by parameter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from promptreg.registry import ConfigurationError, InvalidInputError, JsonFilePromptRegistry, RegistryCorruptError
from promptreg.registry.models import AuditEvent
from promptreg.registry.webhooks import (
    DeliverySettings,
    WebhookWorker,
    add_webhook,
    new_endpoint,
    parse_secret,
    webhook_store,
)
from promptreg.registry.webhooks.event_types import steps_of, validate_patterns
from promptreg.registry.webhooks.file_store import FileWebhookStore
from promptreg.registry.webhooks.transport import post
from tests.backends import PROMPTREG, Cli
from tests.redis_server import wait_until
from tests.serve_helpers import serve_process
from tests.webhook_receiver import SECRET, Receiver, verify

FAST = DeliverySettings(poll_interval=0.05, backoff_base=0.01, backoff_max=0.05, lease_ttl=2.0, fleet_timeout=1.0)
ENV = {"WH_SECRET": SECRET}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[JsonFilePromptRegistry]:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    yield reg
    reg.close()


def _worker(registry: JsonFilePromptRegistry, **settings: float) -> WebhookWorker:
    chosen = DeliverySettings(**{**FAST.__dict__, **settings})
    return WebhookWorker(registry, settings=chosen, environ=ENV)


def _add(registry: JsonFilePromptRegistry, url: str, **options: object) -> str:
    endpoint = new_endpoint(url, "WH_SECRET", **options)  # type: ignore[arg-type]
    add_webhook(registry, webhook_store(registry), endpoint)
    return endpoint.id


def _writes(registry: JsonFilePromptRegistry) -> None:
    """Revisions 1-6: create, two versions, production -> 1, -> 2, rollback (-> 1)."""
    registry.create_prompt("greeting", author="alice")
    registry.add_version("greeting", "hi {{name}}", author="alice")
    registry.add_version("greeting", "hello {{name}}", author="alice")
    registry.set_label("greeting", "production", 1, author="alice")
    registry.set_label("greeting", "production", 2, author="bob", reason="better")
    registry.rollback("greeting", "production", author="carol", reason="too formal")


def test_every_write_arrives_signed_in_revision_order(registry: JsonFilePromptRegistry) -> None:
    with Receiver() as receiver:
        _add(registry, receiver.url)
        _writes(registry)
        assert _worker(registry).run(once=True) == 6
        got = receiver.delivered()
    assert [r.type for r in got] == ["audit.create_prompt", "audit.add_version", "audit.add_version",
                                     "label.moved", "label.moved", "label.moved"]  # fmt: skip
    assert [r.rev for r in got] == [1, 2, 3, 4, 5, 6]
    assert all(verify(SECRET, r.headers, r.body) for r in got)
    assert not verify("whsec_" + "A" * 44, got[0].headers, got[0].body)  # another key does not verify
    assert len({r.id for r in got}) == 6
    last = got[-1].json
    assert last["data"]["action"] == "rollback"
    assert (last["data"]["version"], last["data"]["previous_version"], last["data"]["reason"]) == (1, 2, "too formal")
    assert got[-1].headers["content-type"] == "application/json"
    # No fleet event: nobody reports presence on the JSON file.


def test_an_endpoint_gets_the_events_from_when_it_was_added(registry: JsonFilePromptRegistry) -> None:
    _writes(registry)
    with Receiver() as receiver:
        _add(registry, receiver.url, events=["label.*", "audit.set_compatibility"])
        registry.add_version("greeting", "hey {{name}}")
        registry.set_label("greeting", "production", 3)
        registry.set_compatibility("greeting", "backward")
        _worker(registry).run(once=True)
        assert [(r.type, r.rev) for r in receiver.delivered()] == [("label.moved", 8), ("audit.set_compatibility", 9)]


def test_a_failing_receiver_gets_each_message_again_until_it_recovers(registry: JsonFilePromptRegistry) -> None:
    with Receiver(lambda request, index: 503 if index < 3 else 200) as receiver:
        _add(registry, receiver.url)
        _writes(registry)
        _worker(registry).run(once=True)
        attempts = receiver.requests
    assert [r.status for r in attempts[:4]] == [503, 503, 503, 200]
    assert len({r.id for r in attempts[:4]}) == 1  # the same webhook-id on every retry
    assert len({r.body for r in attempts[:4]}) == 1
    assert all(verify(SECRET, r.headers, r.body) for r in attempts)
    delivered = [r for r in attempts if r.status == 200]
    assert [r.rev for r in delivered] == [1, 2, 3, 4, 5, 6]  # in order, nothing lost


def test_after_max_attempts_a_message_is_a_dead_letter_and_the_endpoint_moves_on(
    registry: JsonFilePromptRegistry, tmp_path: Path
) -> None:
    def respond(request: object, index: int) -> int:
        return 500 if json.loads(request.body)["data"]["rev"] == 2 else 204  # type: ignore[attr-defined]

    with Receiver(respond) as receiver:
        endpoint_id = _add(registry, receiver.url, max_attempts=5)
        _writes(registry)
        _worker(registry).run(once=True)
        assert [r.rev for r in receiver.delivered()] == [1, 3, 4, 5, 6]
        assert sum(1 for r in receiver.requests if r.status == 500) == 5
    [letter] = webhook_store(registry).dead_letters(endpoint_id)
    assert (letter.rev, letter.type, letter.attempts) == (2, "audit.add_version", 5)
    assert letter.error.startswith("HTTP 500")
    cli = Cli({"PROMPTREG_URL": f"file://{registry.path}"}, tmp_path)
    shown = cli.ok("webhooks", "dead-letters", endpoint_id, "--json").json()
    assert [(x["rev"], x["id"]) for x in shown] == [(2, letter.id)]
    assert "HTTP 500" in cli.ok("webhooks", "dead-letters").stdout
    with pytest.raises(InvalidInputError):
        new_endpoint(receiver.url, "WH_SECRET", max_attempts=4)


def test_the_slack_format_is_a_signed_text(registry: JsonFilePromptRegistry) -> None:
    with Receiver() as receiver:
        _add(registry, receiver.url, format="slack", events=["label.moved"])
        _writes(registry)
        _worker(registry).run(once=True)
        got = receiver.delivered()
    assert [set(r.json) for r in got] == [{"text"}] * 3
    # Slack's escaping: it shows "&gt;" as ">" (and "<...>" in a reason would otherwise be a link).
    assert got[-1].json["text"] == "promptreg: greeting: production 2 -&gt; 1 (rollback by carol): too formal"
    assert all(verify(SECRET, r.headers, r.body) for r in got)


def test_a_restore_that_rewrote_the_history_is_a_resync(registry: JsonFilePromptRegistry, tmp_path: Path) -> None:
    registry.create_prompt("greeting")
    registry.add_version("greeting", "v1")
    saved = registry.path.read_bytes()  # a backup at rev 2
    with Receiver() as receiver:
        _add(registry, receiver.url)
        registry.add_version("greeting", "v2")
        registry.set_label("greeting", "production", 2)
        _worker(registry).run(once=True)
        assert [r.rev for r in receiver.delivered()] == [3, 4]
        registry.path.write_bytes(saved)  # restored: rev 2; then other writes reach rev 5
        for text in ("x", "y", "z"):
            registry.add_version("greeting", text)
        _worker(registry).run(once=True)
        resync = receiver.delivered()[2]
        assert resync.type == "registry.resync"
        assert resync.json["data"] == {"from_rev": 4, "to_rev": 5, "reason": "the history was rewritten (a restore)"}
        registry.path.write_bytes(saved)  # older than the cursor now
        _worker(registry).run(once=True)
        assert receiver.delivered()[3].json["data"]["to_rev"] == 2
        registry.add_version("greeting", "after")
        _worker(registry).run(once=True)
        assert [(r.type, r.rev) for r in receiver.delivered()[4:]] == [("audit.add_version", 3)]


def test_a_worker_killed_mid_delivery_resends_that_message_and_loses_nothing(
    registry: JsonFilePromptRegistry, tmp_path: Path
) -> None:
    release = threading.Event()
    held = threading.Event()

    def respond(request: object, index: int) -> int:
        if index == 2:  # the third message: hold it until the worker is dead
            held.set()
            release.wait(20)
        return 204

    with Receiver(respond) as receiver:
        _add(registry, receiver.url)
        _writes(registry)
        env = {**os.environ, "PROMPTREG_URL": f"file://{registry.path}", **ENV}
        args = [str(PROMPTREG), "webhooks", "run", "--poll-interval", "0.05", "--lease-ttl", "1",
                "--backoff-base", "0.01", "--fleet-timeout", "1"]  # fmt: skip
        first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert held.wait(20)
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        finally:
            release.set()
            first.kill()
        assert first.returncode == -signal.SIGKILL
        # The dead worker's lease expires (1 s); --once meanwhile would leave the work to its holder.
        assert wait_until(lambda: webhook_store(registry).lease() is None, 10)
        second = subprocess.run([*args, "--once"], env=env, capture_output=True, timeout=30)
        assert second.returncode == 0, second.stderr
        got = receiver.requests
    in_flight = got[2]
    assert [r.id for r in got].count(in_flight.id) == 2  # sent again, with the same webhook-id
    assert sorted({r.rev for r in got if r.status == 204}) == [1, 2, 3, 4, 5, 6]
    delivered_in_order = [r.rev for r in got if r.status == 204]
    assert delivered_in_order == sorted(delivered_in_order)


def test_one_worker_delivers_at_a_time_and_the_next_takes_over(registry: JsonFilePromptRegistry) -> None:
    store = webhook_store(registry)
    with Receiver() as receiver:
        _add(registry, receiver.url)
        first, second = _worker(registry), _worker(registry)
        first.start()
        assert wait_until(lambda: first.lease.held(), 10)
        second.start()
        registry.create_prompt("greeting")
        receiver.wait_delivered(1)
        assert first.lease.held() and not second.lease.held()
        lease = store.lease()
        assert lease is not None and lease.holder == first.holder
        first.stop()  # a clean stop gives the lease up: the other takes it at once
        registry.add_version("greeting", "hi")
        assert [r.rev for r in receiver.wait_delivered(2)] == [1, 2]
        assert second.lease.held()
        second.stop()
    assert store.lease() is None


def test_the_cli_never_prints_credentials_or_the_secret(registry: JsonFilePromptRegistry, tmp_path: Path) -> None:
    env = {"PROMPTREG_URL": f"file://{registry.path}", "WH_SECRET": SECRET}
    cli = Cli(env, tmp_path)
    added = cli.ok("webhooks", "add", "https://bot:hunter2@example.com/hook?token=t0ps3cret",
                   "--secret-env", "WH_SECRET", "--events", "label.moved,request.*", "--json").json()  # fmt: skip
    listed = cli.ok("webhooks", "list")
    as_json = cli.ok("webhooks", "list", "--json").json()
    stored = FileWebhookStore.beside(registry).path
    for text in (json.dumps(added), listed.stdout, json.dumps(as_json)):
        assert "hunter2" not in text and "t0ps3cret" not in text and SECRET not in text
    assert SECRET not in stored.read_text() and oct(stored.stat().st_mode & 0o777) == "0o600"
    assert as_json["endpoints"][0]["events"] == ["label.moved", "request.*"]
    assert as_json["endpoints"][0]["url"] == "https://bot:***@example.com/hook?token=***"
    assert as_json["worker"] is None
    assert "worker: none running" in listed.stdout
    assert "no webhook endpoint" in cli.fails("webhooks", "remove", "wh_000000000000")
    typo = cli.fails("webhooks", "add", "http://x/", "--secret-env", "V", "--events", "lable.*")
    assert "matches no event type" in typo
    assert "http:// or https://" in cli.fails("webhooks", "add", "file:///etc/passwd", "--secret-env", "V")
    assert "NAME of an environment variable" in cli.fails("webhooks", "add", "http://x/", "--secret-env", SECRET)
    missing = Cli({"PROMPTREG_URL": f"file://{registry.path}"}, tmp_path)("webhooks", "run", "--once")
    assert missing.code == 1 and "$WH_SECRET is not set" in missing.stderr and SECRET not in missing.stderr
    cli.ok("webhooks", "remove", added["id"])
    assert cli.ok("webhooks", "list", "--json").json()["endpoints"] == []


def test_event_types_of_the_audit_actions() -> None:
    def event(action: str, **fields: object) -> AuditEvent:
        return AuditEvent(rev=1, at=datetime.now(UTC), action=action, prompt="p", **fields)  # type: ignore[arg-type]

    for action in ("set_label", "rollback", "delete_label", "promote_rollout"):
        assert steps_of(event(action)) == ["label.moved", "fleet"]
    assert steps_of(event("set_label", request="ab" * 8)) == ["request.approved", "label.moved", "fleet"]
    assert steps_of(event("request_move")) == ["request.pending"]
    assert steps_of(event("approve_request")) == ["request.approved"]
    assert steps_of(event("reject_request")) == ["request.rejected"]
    assert steps_of(event("protect_label")) == ["audit.protect_label"]
    assert steps_of(event("start_rollout")) == ["audit.start_rollout"]
    assert validate_patterns(["request.*", "fleet.*", "request.*"]) == ("request.*", "fleet.*")
    for bad in (["nope"], [], "label.moved", ["x" * 65]):
        with pytest.raises(InvalidInputError):
            validate_patterns(bad)


def test_secrets_accepted_and_refused() -> None:
    assert parse_secret(SECRET, "V") == bytes(range(32))
    assert parse_secret("a plain secret of 16+ bytes", "V") == b"a plain secret of 16+ bytes"
    for bad in ("whsec_not base64!", "whsec_" + "QUFB", "short"):
        with pytest.raises(ConfigurationError) as caught:
            parse_secret(bad, "V")
        assert bad not in str(caught.value)


def test_the_transport_follows_no_redirect_and_bounds_waits() -> None:
    with Receiver(lambda request, index: 302) as receiver:
        attempt = post(receiver.url, b"{}", {})
        assert not attempt.ok and attempt.status == 302 and "redirects are not followed" in (attempt.error or "")
    gate = threading.Event()

    def answer_late(request: object, index: int) -> int:
        gate.wait(5)  # answers once the test is done with it
        return 204

    with Receiver(answer_late) as receiver:
        attempt = post(receiver.url, b"{}", {}, read_timeout=0.2)
        gate.set()
        assert not attempt.ok and attempt.error == "timed out" and attempt.elapsed < 3
    refused = post("http://user:pw@127.0.0.1:9/x", b"{}", {}, connect_timeout=1)
    assert not refused.ok and "connection failed" in (refused.error or "") and "pw" not in (refused.error or "")


def test_a_webhooks_file_someone_edited_is_refused(registry: JsonFilePromptRegistry) -> None:
    store = FileWebhookStore.beside(registry)
    _add(registry, "http://127.0.0.1:9/x")
    data = json.loads(store.path.read_text())
    [endpoint] = data["endpoints"].values()
    endpoint["url"] = "file:///etc/passwd"
    store.path.write_text(json.dumps(data))
    with pytest.raises(RegistryCorruptError):
        store.endpoints()
    store.path.write_text("[" * 100_000)
    with pytest.raises(RegistryCorruptError):
        store.endpoints()


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    settings = DeliverySettings(backoff_base=2, backoff_factor=4, backoff_max=600)
    assert [settings.backoff(n, lambda: 0.0) for n in (1, 2, 3, 4, 5, 6)] == [2, 8, 32, 128, 512, 600]
    assert [settings.backoff(n, lambda: 1.0) for n in (1, 2)] == [1, 4]  # jitter takes up to half off
    with pytest.raises(InvalidInputError):
        DeliverySettings(poll_interval=0)


def test_serve_runs_the_worker_with_webhooks(registry: JsonFilePromptRegistry, tmp_path: Path) -> None:
    with Receiver() as receiver:
        _add(registry, receiver.url, events=["label.moved"])
        env = {"PROMPTREG_URL": f"file://{registry.path}", **ENV}
        with serve_process(env, tmp_path, tokens=False, extra=("--webhooks",)) as server:
            _writes(registry)
            got = receiver.wait_delivered(3)
            assert webhook_store(registry).lease() is not None
        assert [r.rev for r in got] == [4, 5, 6] and all(verify(SECRET, r.headers, r.body) for r in got)
        assert "delivered label.moved" in server.log_text()
    assert webhook_store(registry).lease() is None  # stopped with the server: the lease is given up


def test_protected_label_requests_and_approvals_are_request_events(registry: JsonFilePromptRegistry) -> None:
    registry.create_prompt("greeting")
    registry.add_version("greeting", "hi")
    registry.add_version("greeting", "hello")
    registry.set_label("greeting", "production", 1)
    with Receiver() as receiver:
        _add(registry, receiver.url, events=["request.*", "label.moved"])
        registry.protect_label("greeting", "production", author="root")
        applied = registry.request_label_move("greeting", "production", 2, author="alice", reason="friendlier")
        registry.approve(applied.id, author="bob")
        refused = registry.request_label_move("greeting", "production", 1, author="alice", reason="back")
        registry.reject(refused.id, author="bob", reason="no")
        _worker(registry).run(once=True)
        got = receiver.delivered()
    assert [(r.type, r.json["data"]["request"]) for r in got] == [
        ("request.pending", applied.id), ("request.approved", applied.id), ("label.moved", applied.id),
        ("request.pending", refused.id), ("request.rejected", refused.id),
    ]  # fmt: skip
    assert got[1].json["data"] == got[2].json["data"]  # one audit entry: the approval that moved the label
    assert got[1].id != got[2].id and got[2].json["data"]["author"] == "bob"
