"""A compatibility mode cannot be bypassed, on every backend of the contract suite:
fakeredis, a real redis-server, the JSON file, a Redis Cluster and PostgreSQL.

- A label is checked against the version it last pointed at, also after a delete: delete + set is
  the same move, refused unless forced, and audited as forced when forced.
- A change of version type (text <-> chat), or of an input from a ``{{variable}}`` into a
  placeholder (or back), is incompatible under ``backward`` and ``full``: every caller's ``render``
  would break.

Every refusal is typed and leaves the store byte for byte as it was (``refused`` compares the raw
store, every prompt, every audit trail); the label stays where it was and the audit trail as long.
The command line (``label``, ``check``) is tried on the JSON file, real Redis and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import pytest

from promptreg.registry import (
    IncompatibleVersionError,
    PromptRegistry,
    RedisPromptRegistry,
    RegistryCorruptError,
)
from tests.backends import Backend, Cli, refused

NAME = "support-bot"
MODES = ["backward", "full"]


def _labels(reg: PromptRegistry) -> dict[str, int]:
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    return prompt.labels


def _refused_unchanged(backend: Backend, reg: PromptRegistry, call: Any) -> IncompatibleVersionError:
    """``call`` raises IncompatibleVersionError; labels, audit trail and the raw store are unchanged."""
    labels, audit = _labels(reg), len(reg.history(NAME))
    error = refused(backend, reg, IncompatibleVersionError, call)
    assert isinstance(error, IncompatibleVersionError)
    assert _labels(reg) == labels and len(reg.history(NAME)) == audit
    return error


# -- delete + set is the same move ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_delete_then_set_is_checked_against_where_the_label_pointed(
    backend: Backend, reg: PromptRegistry, mode: Any
) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, "Hello {{name}}")
    reg.add_version(NAME, "Hello {{name}}, about {{topic}}")  # needs topic: refused by both modes
    reg.set_label(NAME, "production", 1)
    reg.delete_label(NAME, "production", author="ops")

    error = _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2))
    assert (error.current, error.version, error.added, error.mode) == (1, 2, ("topic",), mode)
    # The compare-and-set sync uses ("the label must not exist") does not open a way round it either.
    _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2, expected_version=0))
    assert "production" not in _labels(reg)
    report = reg.check_compatibility(NAME, "production", 2)
    assert (report.compatible, report.current_version, report.added) == (False, 1, ("topic",))

    event = reg.set_label(NAME, "production", 2, force=True, author="ops", reason="hotfix")
    assert event.forced and (event.version, event.previous_version) == (2, None)
    assert reg.history(NAME)[-1] == event and _labels(reg) == {"production": 2}


@pytest.mark.parametrize("mode", MODES)
def test_a_compatible_move_after_a_delete_passes_unforced(reg: PromptRegistry, mode: Any) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, "Hello {{name}}")
    reg.add_version(NAME, "Hi {{name}}!")  # the same inputs: fine under both modes
    reg.set_label(NAME, "production", 1)
    reg.delete_label(NAME, "production")
    assert reg.check_compatibility(NAME, "production", 2).compatible
    event = reg.set_label(NAME, "production", 2)
    assert not event.forced and event.version == 2
    # Back to where it pointed when deleted: the same version is never refused.
    reg.delete_label(NAME, "production")
    assert not reg.set_label(NAME, "production", 2).forced


@pytest.mark.parametrize("mode", MODES)
def test_only_a_label_never_set_is_unchecked(reg: PromptRegistry, mode: Any) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, "Hello {{name}}")
    reg.add_version(NAME, messages=[{"role": "user", "content": "{{question}}"}, {"placeholder": "history"}])
    assert reg.check_compatibility(NAME, "canary", 2).compatible
    assert not reg.set_label(NAME, "canary", 2).forced  # a first assignment
    # A deleted label comes back by rollback to where it pointed: nothing to check.
    reg.delete_label(NAME, "canary")
    assert reg.rollback(NAME, "canary").version == 2


def test_mode_none_still_accepts_delete_then_set(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME)
    reg.add_version(NAME, "Hello {{name}}")
    reg.add_version(NAME, messages=[{"role": "user", "content": "{{question}}"}])
    reg.set_label(NAME, "production", 1)
    reg.delete_label(NAME, "production")
    assert not reg.set_label(NAME, "production", 2).forced


@pytest.mark.parametrize("mode", MODES)
def test_a_mode_set_after_the_delete_still_checks_the_next_move(
    backend: Backend, reg: PromptRegistry, mode: Any
) -> None:
    reg.create_prompt(NAME)
    reg.add_version(NAME, "Hello {{name}}")
    reg.add_version(NAME, "Hello {{name}}, about {{topic}}")
    reg.set_label(NAME, "production", 1)
    reg.delete_label(NAME, "production")
    reg.set_compatibility(NAME, mode)
    _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2))


# -- a change of type or of an input's kind ------------------------------------------------------------

TEXT_WITH_HISTORY = "Conversation so far: {{history}}\nAnswer: {{question}}"
CHAT_WITH_HISTORY: list[dict[str, str]] = [
    {"role": "system", "content": "Answer the question."},
    {"placeholder": "history"},
    {"role": "user", "content": "{{question}}"},
]


@pytest.mark.parametrize("mode", MODES)
def test_text_variable_into_chat_placeholder_is_incompatible(backend: Backend, reg: PromptRegistry, mode: Any) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    text = reg.add_version(NAME, TEXT_WITH_HISTORY)
    chat = reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    assert text.variables | text.placeholders == chat.variables | chat.placeholders  # same names...
    assert isinstance(text.render(history="user: hi", question="?"), str)  # ...but callers pass a string
    reg.set_label(NAME, "production", 1)

    report = reg.check_compatibility(NAME, "production", 2)
    assert not report.compatible and (report.added, report.removed) == ((), ())
    assert report.type_change == ("text", "chat") and report.kind_changes == ("history",)
    error = _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2))
    assert (error.current, error.version, error.mode) == (1, 2, mode)
    assert "chat" in str(error) and "history" in str(error) and "force" in str(error)

    event = reg.set_label(NAME, "production", 2, force=True)
    assert event.forced and reg.history(NAME)[-1] == event


@pytest.mark.parametrize("mode", MODES)
def test_chat_back_to_text_is_incompatible(backend: Backend, reg: PromptRegistry, mode: Any) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, messages=[{"role": "user", "content": "{{question}}"}])
    reg.add_version(NAME, "{{question}}")  # the same variable; render returns a string now
    reg.set_label(NAME, "production", 1)
    error = _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2))
    assert error.added == () and error.removed == ()
    assert reg.check_compatibility(NAME, "production", 2).type_change == ("chat", "text")
    assert reg.set_label(NAME, "production", 2, force=True).forced


@pytest.mark.parametrize("mode", MODES)
def test_a_chat_variable_turned_placeholder_is_incompatible(backend: Backend, reg: PromptRegistry, mode: Any) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, messages=[{"role": "user", "content": "Earlier: {{history}}. Now: {{question}}"}])
    reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    reg.set_label(NAME, "production", 1)
    report = reg.check_compatibility(NAME, "production", 2)
    assert (report.compatible, report.type_change, report.kind_changes) == (False, None, ("history",))
    _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2))
    # ... and the way back (placeholder into variable), by rollback after a forced move.
    assert reg.set_label(NAME, "production", 2, force=True).forced
    _refused_unchanged(backend, reg, lambda: reg.rollback(NAME, "production"))
    assert reg.rollback(NAME, "production", force=True).forced


def test_same_type_and_kinds_still_pass_full(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME, compatibility="full")
    reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    reg.add_version(NAME, messages=[{"placeholder": "history"}, {"role": "user", "content": "Q: {{question}}"}])
    reg.set_label(NAME, "production", 1)
    assert not reg.set_label(NAME, "production", 2).forced


def test_mode_none_accepts_a_change_of_type(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME)
    reg.add_version(NAME, TEXT_WITH_HISTORY)
    reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    reg.set_label(NAME, "production", 1)
    report = reg.check_compatibility(NAME, "production", 2)
    assert report.compatible and report.type_change == ("text", "chat")
    assert not reg.set_label(NAME, "production", 2).forced


@pytest.mark.parametrize("mode", MODES)
def test_a_deleted_text_label_set_to_a_chat_version_is_refused(
    backend: Backend, reg: PromptRegistry, mode: Any
) -> None:
    reg.create_prompt(NAME, compatibility=mode)
    reg.add_version(NAME, TEXT_WITH_HISTORY)
    reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    reg.set_label(NAME, "production", 1)
    reg.delete_label(NAME, "production")
    _refused_unchanged(backend, reg, lambda: reg.set_label(NAME, "production", 2, expected_version=0))
    assert reg.set_label(NAME, "production", 2, expected_version=0, force=True).forced


# Redis only: the scripts compare stored fields, which versions written before them lack.
@pytest.mark.parametrize(
    "backend",
    ["fakeredis", pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)],
    indirect=True,
)
def test_redis_chat_versions_without_stored_placeholders_are_never_passed_silently(
    backend: Backend, reg: PromptRegistry
) -> None:
    assert isinstance(reg, RedisPromptRegistry)
    reg.create_prompt(NAME, compatibility="backward")
    reg.add_version(NAME, messages=[{"role": "user", "content": "Earlier: {{history}}. Now: {{question}}"}])
    reg.add_version(NAME, messages=CHAT_WITH_HISTORY)
    reg.add_version(NAME, messages=[{"role": "user", "content": "Earlier: {{history}}. Q: {{question}}"}])
    reg.set_label(NAME, "production", 1)
    for number in (1, 2, 3):  # as written before placeholders were stored
        reg.redis.hdel(reg.keys.version(NAME, number), "placeholders")
    refused(backend, reg, RegistryCorruptError, lambda: reg.set_label(NAME, "production", 3))
    result = reg.migrate()
    assert result.changed and "3 version" in result.message
    assert reg.redis.hget(reg.keys.version(NAME, 2), "placeholders") == b"history"
    assert not reg.set_label(NAME, "production", 3).forced
    refused(backend, reg, IncompatibleVersionError, lambda: reg.set_label(NAME, "production", 2))


# -- the command line: file, real Redis, PostgreSQL ------------------------------------------------------


def test_cli_delete_then_label_is_refused_and_check_says_why(run: Cli) -> None:
    run.ok("create", "critic", "--compatibility", "backward")
    run.ok("push", "critic", "--label", "production", input="Do you like {{movie}}?\n")
    run.ok("push", "critic", input="As a {{level}} critic, do you like {{movie}}?\n")
    run.ok("label", "critic", "production", "--delete")
    before = run.state()

    checked = run("check", "critic", "production", "2")
    refusal = run.fails("label", "critic", "production", "2")

    assert checked.code == 1 and checked.stdout.splitlines() == [
        "critic: label production deleted (was 1) -> 2: INCOMPATIBLE (mode backward)",
        "  needs: level",
    ]
    assert "refused under backward compatibility" in refusal and "force" in refusal
    assert run.state() == before
    run.ok("label", "critic", "production", "2", "--force")
    history = run.ok("history", "critic", "--json").json()
    assert history[-1]["forced"] is True and history[-1]["version"] == 2
