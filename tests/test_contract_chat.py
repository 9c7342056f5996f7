"""The contract suite, continued: chat versions, model config and compatibility checks, on every backend.

Same backends as :mod:`tests.test_contract` (fakeredis, a real redis-server, the JSON file, a Redis
Cluster, PostgreSQL): its ``backend`` and ``reg`` fixtures are used here as they are.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Any

import pytest

from promptreg.client import PromptClient
from promptreg.registry import (
    IncompatibleVersionError,
    InvalidInputError,
    JsonFilePromptRegistry,
    MissingVariableError,
    PostgresPromptRegistry,
    PromptRegistry,
    PromptTooLargeError,
    RedisPromptRegistry,
    RegistryCorruptError,
)
from promptreg.registry.backup import apply_import, export_registry, plan_import
from tests.backends import Backend, refused

NAME = "support-bot"
MESSAGES: list[dict[str, str]] = [
    {"role": "system", "content": "You are a {{tone}} support agent for {{product}}."},
    {"placeholder": "history"},
    {"role": "user", "content": "{{question}}"},
]
CONFIG: dict[str, Any] = {"model": "gpt-4o", "temperature": 0.2, "stop": ["###"], "tools": {"search": True}}
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]


def chat_seed(reg: PromptRegistry, compatibility: Any = "none") -> None:
    reg.create_prompt(NAME, compatibility=compatibility)
    reg.add_version(NAME, messages=MESSAGES, config=CONFIG, author="alice", metadata={"team": "cx"})


def client_for(reg: PromptRegistry, **options: Any) -> PromptClient:
    if isinstance(reg, RedisPromptRegistry):
        return PromptClient(reg.redis, namespace=reg.keys.namespace, start_timeout=10, **options)
    if isinstance(reg, PostgresPromptRegistry):
        return PromptClient(reg.url, namespace=reg.namespace, start_timeout=10, **options)
    assert isinstance(reg, JsonFilePromptRegistry)
    return PromptClient(f"file://{reg.path}", start_timeout=10, **options)


# -- chat versions and config ----------------------------------------------------------------------


def test_chat_version_round_trips_and_renders(reg: PromptRegistry) -> None:
    chat_seed(reg)
    version = reg.get_version(NAME)
    assert version.type == "chat" and version.prompt_text == ""
    assert version.messages == tuple(MESSAGES)
    assert version.config == CONFIG and version.metadata == {"team": "cx"}
    assert version.variables == {"tone", "product", "question"}
    assert version.placeholders == {"history"}
    rendered = version.render(tone="calm", product="Acme", question="Where is my order?", history=HISTORY)
    assert rendered == [
        {"role": "system", "content": "You are a calm support agent for Acme."},
        *HISTORY,
        {"role": "user", "content": "Where is my order?"},
    ]
    assert version.render_messages(tone="calm", product="Acme", question="?", history=[]) == [
        {"role": "system", "content": "You are a calm support agent for Acme."},
        {"role": "user", "content": "?"},
    ]
    with pytest.raises(MissingVariableError) as caught:
        version.render(tone="calm", product="Acme", question="?")
    assert caught.value.missing == ("history",)
    with pytest.raises(InvalidInputError, match="history"):
        version.render(tone="calm", product="Acme", question="?", history="not a list")
    prompt = reg.get_prompt(NAME)
    assert prompt is not None and prompt.versions[0] == version


def test_text_versions_render_as_one_user_message_and_keep_config(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME)
    version = reg.add_version(NAME, "Hello {{name}}", config={"model": "small", "max_tokens": 5})
    stored = reg.get_version(NAME, version=1)
    assert stored.type == "text" and stored.messages is None and stored.placeholders == frozenset()
    assert stored.config == {"model": "small", "max_tokens": 5} == version.config
    assert stored.render(name="Ann") == "Hello Ann"
    assert stored.render_messages(name="Ann") == [{"role": "user", "content": "Hello Ann"}]
    assert reg.add_version(NAME, "plain").config == {}


def test_export_import_is_lossless_for_chat_and_modes(reg: PromptRegistry, tmp_path: Path) -> None:
    chat_seed(reg, "backward")
    reg.set_label(NAME, "production", 1)
    target = JsonFilePromptRegistry(tmp_path / "copy.json")
    apply_import(target, plan_import(target, export_registry(reg)))
    copied, original = target.get_prompt(NAME), reg.get_prompt(NAME)
    assert copied is not None and original is not None
    assert copied.compatibility == "backward" and copied.labels == original.labels
    assert [(v.messages, v.config, v.metadata, v.prompt_text) for v in copied.versions] == [
        (v.messages, v.config, v.metadata, v.prompt_text) for v in original.versions
    ]
    assert not plan_import(target, export_registry(reg)).steps  # the same export again changes nothing


def test_client_cache_and_last_known_good_hold_chat_versions(reg: PromptRegistry, tmp_path: Path) -> None:
    chat_seed(reg)
    reg.set_label(NAME, "production", 1)
    snapshot = tmp_path / "lkg.bin"
    with client_for(reg, snapshot_path=snapshot) as client:
        served = client.get(NAME)
        assert served.messages == tuple(MESSAGES) and served.config == CONFIG
        assert client.render(NAME, tone="a", product="b", question="c", history=HISTORY)[1:3] == HISTORY
        reg.add_version(NAME, messages=[{"role": "system", "content": "v2 {{tone}}"}], config={"model": "m2"})
        reg.set_label(NAME, "production", 2)
        _wait(lambda: client.get(NAME).version == 2)
        assert client.get(NAME).config == {"model": "m2"}
        _wait(snapshot.exists)
    from promptreg.client.snapshot import load_snapshot

    namespace = reg.keys.namespace if isinstance(reg, RedisPromptRegistry) else getattr(reg, "namespace", "promptreg")
    _wait(lambda: (s := load_snapshot(snapshot, namespace)) is not None and (NAME, 2) in s.versions)
    loaded = load_snapshot(snapshot, namespace)
    assert loaded is not None
    assert loaded.versions[NAME, 2].messages == ({"role": "system", "content": "v2 {{tone}}"},)
    assert loaded.versions[NAME, 2].config == {"model": "m2"}


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


BAD_CHAT: list[tuple[str, type[Exception], dict[str, Any]]] = [
    ("both text and messages", InvalidInputError, {"prompt_text": "x", "messages": MESSAGES}),
    ("neither", InvalidInputError, {}),
    ("messages not a list", InvalidInputError, {"messages": "system: hi"}),
    ("empty messages", InvalidInputError, {"messages": []}),
    ("bad role", InvalidInputError, {"messages": [{"role": "Sys tem", "content": "x"}]}),
    ("content not text", InvalidInputError, {"messages": [{"role": "user", "content": 3}]}),
    ("extra key", InvalidInputError, {"messages": [{"role": "user", "content": "x", "name": "n"}]}),
    ("bad placeholder", InvalidInputError, {"messages": [{"placeholder": "a b"}]}),
    (
        "placeholder is a variable",
        InvalidInputError,
        {"messages": [{"role": "user", "content": "{{h}}"}, {"placeholder": "h"}]},
    ),
    ("lone surrogate", InvalidInputError, {"messages": [{"role": "user", "content": "\ud800"}]}),
    ("messages too big", PromptTooLargeError, {"messages": [{"role": "user", "content": "x" * 500}]}),
    ("config not a mapping", InvalidInputError, {"prompt_text": "x", "config": ["gpt"]}),
    ("config not JSON", InvalidInputError, {"prompt_text": "x", "config": {"t": float("nan")}}),
    ("config too big", PromptTooLargeError, {"prompt_text": "x", "config": {"k": "v" * 500}}),
]


@pytest.mark.parametrize(("error", "kwargs"), [c[1:] for c in BAD_CHAT], ids=[c[0] for c in BAD_CHAT])
def test_bad_chat_input_is_refused_naming_the_field_and_writes_nothing(
    backend: Backend, error: type[Exception], kwargs: dict[str, Any]
) -> None:
    reg = backend.make(max_text_bytes=400, max_metadata_bytes=128)
    chat_seed(reg)
    raised = refused(backend, reg, error, lambda: reg.add_version(NAME, **kwargs))
    assert any(word in str(raised) for word in ("messages", "config", "prompt_text"))


# -- compatibility modes ---------------------------------------------------------------------------


def _three(reg: PromptRegistry, mode: Any) -> None:
    """v1 takes a, b; v2 drops b; v3 adds c (and a history placeholder)."""
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, "{{a}} {{b}}")
    reg.add_version(NAME, "{{a}}")
    reg.add_version(NAME, messages=[{"role": "user", "content": "{{a}} {{c}}"}, {"placeholder": "history"}])
    reg.set_label(NAME, "production", 1)  # a first assignment is never checked


def test_mode_none_accepts_every_move(reg: PromptRegistry) -> None:
    _three(reg, "none")
    assert reg.get_prompt(NAME).compatibility == "none"  # type: ignore[union-attr]
    assert not reg.set_label(NAME, "production", 3).forced


def test_backward_accepts_dropping_inputs_and_refuses_new_ones(backend: Backend, reg: PromptRegistry) -> None:
    _three(reg, "backward")
    report = reg.check_compatibility(NAME, "production", 3)
    assert (report.compatible, report.mode, report.added, report.removed) == (
        False,
        "backward",
        ("c", "history"),
        ("b",),
    )
    raised = refused(backend, reg, IncompatibleVersionError, lambda: reg.set_label(NAME, "production", 3))
    assert isinstance(raised, IncompatibleVersionError)
    assert (raised.added, raised.removed, raised.current, raised.version) == (("c", "history"), ("b",), 1, 3)
    assert reg.check_compatibility(NAME, "production", 2).compatible
    event = reg.set_label(NAME, "production", 2)
    assert not event.forced and reg.get_prompt(NAME).labels["production"] == 2  # type: ignore[union-attr]
    assert reg.check_compatibility(NAME, "staging", 3).compatible  # no label yet: never checked


def test_full_refuses_any_change_of_inputs(backend: Backend, reg: PromptRegistry) -> None:
    _three(reg, "full")
    reg.add_version(NAME, "other words, same {{b}} and {{a}}")
    refused(backend, reg, IncompatibleVersionError, lambda: reg.set_label(NAME, "production", 2))
    assert reg.set_label(NAME, "production", 4).version == 4


def test_force_moves_anyway_and_is_recorded(reg: PromptRegistry) -> None:
    _three(reg, "backward")
    event = reg.set_label(NAME, "production", 3, force=True, author="ops", reason="hotfix")
    assert event.forced and event.version == 3
    history = reg.history(NAME)
    assert history[-1].forced and history[-1] == event
    assert not any(e.forced for e in history[:-1])
    assert not reg.set_label(NAME, "production", 3, force=True).forced  # nothing to override: not forced


def test_rollback_is_checked(backend: Backend, reg: PromptRegistry) -> None:
    _three(reg, "none")
    reg.set_label(NAME, "production", 2)  # from 1 (a, b) to 2 (a)
    reg.set_compatibility(NAME, "backward", author="lead", reason="callers depend on it")
    refused(backend, reg, IncompatibleVersionError, lambda: reg.rollback(NAME, "production"))  # back to a, b
    event = reg.rollback(NAME, "production", force=True)
    assert event.forced and event.version == 1


def test_set_compatibility_is_a_write_with_an_audit_entry(backend: Backend, reg: PromptRegistry) -> None:
    _three(reg, "none")
    event = reg.set_compatibility(NAME, "full", author="lead", reason="strict")
    assert event.action == "set_compatibility" and event.compatibility == "full" and event.author == "lead"
    assert reg.history(NAME)[-1] == event
    assert reg.get_prompt(NAME).compatibility == "full"  # type: ignore[union-attr]
    refused(backend, reg, InvalidInputError, lambda: reg.set_compatibility(NAME, "sideways"))  # type: ignore[arg-type]
    refused(backend, reg, InvalidInputError, lambda: reg.create_prompt("other", compatibility="loose"))  # type: ignore[arg-type]
    refused(backend, reg, InvalidInputError, lambda: reg.set_label(NAME, "production", 2, force="yes"))  # type: ignore[arg-type]


def test_a_concurrent_writer_cannot_slip_an_incompatible_move_through(backend: Backend, reg: PromptRegistry) -> None:
    reg.create_prompt(NAME, compatibility="backward")
    reg.add_version(NAME, "{{a}}")
    reg.set_label(NAME, "production", 1)
    other = backend.make()
    stop = threading.Event()

    def writer() -> None:  # alternates versions that keep {{a}} and versions that add {{b}}
        n = 0
        while not stop.is_set() and n < 40:
            other.add_version(NAME, "{{a}} {{b}}" if n % 2 else f"{{{{a}}}} {n}")
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(40):
            latest = reg.get_version(NAME).version
            with contextlib.suppress(IncompatibleVersionError):
                reg.set_label(NAME, "production", latest)
    finally:
        stop.set()
        thread.join()
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    moves = [e for e in reg.history(NAME) if e.action == "set_label"]
    for move in moves:  # every move that happened took a version needing nothing beyond {{a}}
        assert prompt.get_version_by_number(move.version or 0).variables == {"a"}  # type: ignore[union-attr]
        assert not move.forced


# Redis backends only: the JSON file and PostgreSQL check the versions' content inside the write.
@pytest.mark.parametrize(
    "backend",
    ["fakeredis", pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)],
    indirect=True,
)
def test_redis_versions_without_stored_inputs_are_never_passed_silently(backend: Backend, reg: PromptRegistry) -> None:
    assert isinstance(reg, RedisPromptRegistry)
    _three(reg, "backward")
    reg.redis.hdel(reg.keys.version(NAME, 1), "inputs")  # as written before this release
    refused(backend, reg, RegistryCorruptError, lambda: reg.set_label(NAME, "production", 2))
    result = reg.migrate()
    assert result.changed and "1 version" in result.message
    assert reg.set_label(NAME, "production", 2).version == 2
    assert not reg.migrate().changed or "variables" not in reg.migrate().message


# -- prompts as code: Dotprompt chat files ---------------------------------------------------------

DOTPROMPT = """---
model: googleai/gemini-1.5-pro
config: {temperature: 0.3, maxOutputTokens: 200}
labels: [production]
---
{{role "system"}}
You are a {{tone}} support agent.
{{history}}
{{role "user"}}
{{question}}
"""


def test_dotprompt_chat_files_sync_to_chat_versions_idempotently(reg: PromptRegistry, tmp_path: Path) -> None:
    from promptreg.registry.sync import apply_sync, plan_sync

    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.prompt").write_text(DOTPROMPT)
    apply_sync(reg, plan_sync(reg, folder))
    version = reg.get_version("support", label="production")
    assert version.type == "chat" and version.prompt_text == ""
    assert version.messages == (
        {"role": "system", "content": "You are a {{tone}} support agent."},
        {"placeholder": "history"},
        {"role": "user", "content": "{{question}}"},
    )
    assert version.config == {"model": "googleai/gemini-1.5-pro", "temperature": 0.3, "maxOutputTokens": 200}
    assert not plan_sync(reg, folder).steps  # the same files again: nothing to do
    (folder / "support.prompt").write_text(DOTPROMPT.replace("0.3", "0.5"))  # config is content too
    assert [s.action for s in plan_sync(reg, folder).steps] == ["add_version", "set_label"]


def test_sync_shows_incompatible_moves_and_refuses_them_without_force(
    backend: Backend, reg: PromptRegistry, tmp_path: Path
) -> None:
    from promptreg.registry.sync import apply_sync, plan_sync

    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "support.prompt").write_text(DOTPROMPT)
    apply_sync(reg, plan_sync(reg, folder))
    reg.set_compatibility("support", "backward")
    (folder / "support.prompt").write_text(DOTPROMPT + "Answer in {{language}}.\n")
    plan = plan_sync(reg, folder)
    move = plan.steps[-1]
    assert move.refusal is not None and move.refusal.added == ("language",)
    assert "INCOMPATIBLE" in move.describe()
    refused(backend, reg, IncompatibleVersionError, lambda: apply_sync(reg, plan))  # nothing written at all
    done = apply_sync(reg, plan, force=True)
    assert done[-1].version == 2 and reg.history("support")[-1].forced
