"""The contract every backend keeps: one suite, run on every backend (``backend``, tests/conftest.py).

Every refused call is checked twice: through the public reads (every prompt, its history, the list)
and through the raw store (every Redis key of the namespace, or the file's bytes and directory).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from promptreg.registry import (
    InvalidInputError,
    InvalidNameError,
    LabelConflictError,
    LabelNotFoundError,
    MissingVariableError,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistry,
    PromptRegistryError,
    PromptTooLargeError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from tests.backends import METADATA_LIMIT, TEXT_LIMIT, Backend, dump, refused

NAME = "movie-critic"
TEXTS = (
    ("As a movie critic, do you like {{movie}}?", "alice"),
    ("As a {{criticlevel}} movie critic, do you like {{movie}}?", "bob"),
    ("You are a {{criticlevel}} movie critic. Write a review for {{movie}}.", "alice"),
)


def seed(reg: PromptRegistry) -> None:
    """The seed article's workflow: three versions by two authors, staging -> 2, production -> 3."""
    reg.create_prompt(NAME, description="reviews movies", author="alice")
    for text, author in TEXTS:
        reg.add_version(NAME, text, author=author)
    reg.set_label(NAME, "staging", 2)
    reg.set_label(NAME, "production", 3)


# -- the seed workflow -----------------------------------------------------------------------------


def test_movie_critic_workflow(reg: PromptRegistry) -> None:
    seed(reg)
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    assert [(v.version, v.prompt_text, v.author) for v in prompt.versions] == [
        (n, text, author) for n, (text, author) in enumerate(TEXTS, 1)
    ]
    assert prompt.description == "reviews movies"
    assert prompt.labels == {"staging": 2, "production": 3}
    production = prompt.get_version_by_label("production")
    assert production is not None and production.prompt_text == TEXTS[2][0]
    assert production.variables == {"criticlevel", "movie"}
    assert production.render(movie="Alien", criticlevel="harsh") == (
        "You are a harsh movie critic. Write a review for Alien."
    )
    assert prompt.get_version_by_label("development") is None
    assert prompt.get_version_by_number(4) is None

    reg.set_label(NAME, "production", 2)  # the seed's one-line rollback
    assert reg.get_version(NAME, label="production").prompt_text == TEXTS[1][0]
    rolled = reg.get_prompt(NAME)
    assert rolled is not None and rolled.labels == {"staging": 2, "production": 2}
    assert rolled.versions == prompt.versions  # versions never change


def test_versions_are_contiguous_and_keep_their_data(reg: PromptRegistry) -> None:
    reg.create_prompt("support/triage")
    metadata = {"model": "gpt", "temperature": 0.2, "tags": ["a", "b"], "nested": {"ok": True, "n": None}}
    first = reg.add_version("support/triage", "Triage: {{ ticket }} : ünïcødé ✓", metadata=metadata, message="init")
    second = reg.add_version("support/triage", "v2 {{ticket}}")
    assert (first.version, second.version) == (1, 2)
    stored = reg.get_version("support/triage", version=1)
    assert stored == first
    assert stored.metadata == metadata and stored.message == "init" and stored.author is None
    assert stored.render(ticket="T-1") == "Triage: T-1 : ünïcødé ✓"
    assert reg.get_version("support/triage", version=2).metadata == {}


def test_list_prompts_is_sorted(reg: PromptRegistry) -> None:
    assert reg.list_prompts() == []
    for name in ("zeta", "alpha", "support/triage", "Beta.v2"):
        reg.create_prompt(name)
    assert reg.list_prompts() == sorted(["zeta", "alpha", "support/triage", "Beta.v2"])
    assert reg.get_prompt("nope") is None


def test_another_registry_on_the_same_store_sees_every_write(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    other = backend.make()
    assert dump(other) == dump(reg)


def test_times_are_timezone_aware_utc(reg: PromptRegistry) -> None:
    before = datetime.now(UTC)
    seed(reg)
    after = datetime.now(UTC)
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    created = [prompt.created_at, *(v.created_at for v in prompt.versions)]
    audited = [e.at for e in reg.history(NAME)]
    for stamp in created + audited:
        assert stamp.tzinfo is not None and stamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= stamp <= after + timedelta(seconds=1)
    assert created == sorted(created) and audited == sorted(audited)
    assert audited[: len(created)] == created  # each write's audit entry carries its own time


# -- latest --------------------------------------------------------------------------------------


def test_latest_always_resolves_to_the_newest_version(backend: Backend, reg: PromptRegistry) -> None:
    reg.create_prompt(NAME)
    with pytest.raises(LabelNotFoundError):
        reg.get_version(NAME)
    for n, (text, author) in enumerate(TEXTS, 1):
        reg.add_version(NAME, text, author=author)
        assert reg.get_version(NAME).version == n
        assert reg.get_version(NAME, label="latest").prompt_text == text
        prompt = reg.get_prompt(NAME)
        assert prompt is not None and prompt.latest is not None and prompt.latest.version == n
        assert prompt.get_version_by_label("latest") == prompt.latest
    for call in (
        lambda: reg.set_label(NAME, "latest", 1),
        lambda: reg.delete_label(NAME, "latest"),
        lambda: reg.rollback(NAME, "latest"),
    ):
        refused(backend, reg, InvalidNameError, call)


# -- labels: compare-and-set, rollback, history --------------------------------------------------


def test_compare_and_set(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    reg.set_label(NAME, "canary", 1, expected_version=0)
    error = refused(backend, reg, LabelConflictError, lambda: reg.set_label(NAME, "canary", 2, expected_version=0))
    assert isinstance(error, LabelConflictError) and (error.expected, error.actual) == (0, 1)
    error = refused(backend, reg, LabelConflictError, lambda: reg.set_label(NAME, "canary", 3, expected_version=2))
    assert isinstance(error, LabelConflictError) and (error.expected, error.actual) == (2, 1)
    error = refused(backend, reg, LabelConflictError, lambda: reg.set_label(NAME, "ghost", 3, expected_version=2))
    assert isinstance(error, LabelConflictError) and error.actual is None
    event = reg.set_label(NAME, "canary", 3, expected_version=1)
    assert (event.version, event.previous_version) == (3, 1)
    refused(backend, reg, LabelConflictError, lambda: reg.delete_label(NAME, "canary", expected_version=1))
    reg.delete_label(NAME, "canary", expected_version=3)
    assert "canary" not in (reg.get_prompt(NAME) or pytest.fail()).labels
    reg.set_label(NAME, "canary", 2, expected_version=0)  # gone again, so 0 matches
    assert reg.get_version(NAME, label="canary").version == 2


def test_rollback_goes_back_and_forth(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    refused(backend, reg, RollbackUnavailableError, lambda: reg.rollback(NAME, "production"))
    # A label that does not exist and never did says so, rather than "nothing to roll back to".
    refused(backend, reg, LabelNotFoundError, lambda: reg.rollback(NAME, "never-set"))
    reg.set_label(NAME, "production", 1)
    event = reg.rollback(NAME, "production", author="carol", reason="v1 hallucinates")
    assert (event.action, event.version, event.previous_version) == ("rollback", 3, 1)
    assert (event.author, event.reason) == ("carol", "v1 hallucinates")
    assert reg.get_version(NAME, label="production").version == 3
    assert reg.rollback(NAME, "production").version == 1  # twice: back where it was
    assert reg.rollback(NAME, "production").version == 3


def test_describe_reads_the_descriptions_of_the_prompts_that_exist(reg: PromptRegistry) -> None:
    reg.create_prompt("a/one", description="the first")
    reg.create_prompt("b", description=None)
    reg.create_prompt("c", description="ünïcode & <markup>")
    assert reg.describe(["c", "a/one", "missing", "b", "a/one"]) == {
        "a/one": "the first",
        "b": None,
        "c": "ünïcode & <markup>",
    }
    assert reg.describe([]) == {}
    with pytest.raises(InvalidNameError):
        reg.describe(["bad name"])


def test_rollback_with_compare_and_set(backend: Backend, reg: PromptRegistry) -> None:
    # A rollback previewed against one position never undoes a move made since.
    seed(reg)
    reg.set_label(NAME, "production", 1)  # 3 -> 1: rolling back would go to 3
    error = refused(backend, reg, LabelConflictError, lambda: reg.rollback(NAME, "production", expected_version=3))
    assert isinstance(error, LabelConflictError) and (error.expected, error.actual) == (3, 1)
    refused(backend, reg, LabelConflictError, lambda: reg.rollback(NAME, "production", expected_version=0))
    event = reg.rollback(NAME, "production", expected_version=1)
    assert (event.version, event.previous_version) == (3, 1)
    reg.delete_label(NAME, "production")
    refused(backend, reg, LabelConflictError, lambda: reg.rollback(NAME, "production", expected_version=3))
    assert reg.rollback(NAME, "production", expected_version=0).version == 3  # deleted: 0 matches
    with pytest.raises(InvalidInputError):
        reg.rollback(NAME, "production", expected_version=-1)


def test_setting_a_label_to_where_it_points_keeps_the_rollback_target(reg: PromptRegistry) -> None:
    seed(reg)
    reg.set_label(NAME, "production", 1)
    before = len(reg.history(NAME))
    event = reg.set_label(NAME, "production", 1, reason="re-confirm")
    assert (event.version, event.previous_version) == (1, 1)
    assert len(reg.history(NAME)) == before + 1  # still audited
    assert reg.rollback(NAME, "production").version == 3


def test_delete_then_rollback_recreates_the_label(backend: Backend, reg: PromptRegistry) -> None:
    seed(reg)
    event = reg.delete_label(NAME, "staging", author="bob", reason="unused")
    assert (event.action, event.version, event.previous_version) == ("delete_label", None, 2)
    assert "staging" not in (reg.get_prompt(NAME) or pytest.fail()).labels
    with pytest.raises(LabelNotFoundError):
        reg.get_version(NAME, label="staging")
    event = reg.rollback(NAME, "staging")
    assert (event.version, event.previous_version) == (2, None)
    assert (reg.get_prompt(NAME) or pytest.fail()).labels["staging"] == 2
    refused(backend, reg, RollbackUnavailableError, lambda: reg.rollback(NAME, "staging"))
    # A label set afresh (it did not exist) has nothing to go back to.
    reg.delete_label(NAME, "staging")
    reg.set_label(NAME, "staging", 1)
    refused(backend, reg, RollbackUnavailableError, lambda: reg.rollback(NAME, "staging"))


def test_history_is_oldest_first_with_author_and_reason(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME, author="alice")
    for text, author in TEXTS:
        reg.add_version(NAME, text, author=author, message=f"by {author}")
    moved = reg.set_label(NAME, "production", 3, author="alice", reason="ship v3")
    reg.set_label(NAME, "production", 2, author="bob", reason="v3 is too long")
    reg.rollback(NAME, "production", author="alice", reason="fixed upstream")
    reg.delete_label(NAME, "production", author="carol", reason="retire")
    history = reg.history(NAME)
    assert [(e.action, e.label, e.version, e.previous_version, e.author, e.reason) for e in history] == [
        ("create_prompt", None, None, None, "alice", None),
        ("add_version", None, 1, None, "alice", "by alice"),
        ("add_version", None, 2, None, "bob", "by bob"),
        ("add_version", None, 3, None, "alice", "by alice"),
        ("set_label", "production", 3, None, "alice", "ship v3"),
        ("set_label", "production", 2, 3, "bob", "v3 is too long"),
        ("rollback", "production", 3, 2, "alice", "fixed upstream"),
        ("delete_label", "production", None, 3, "carol", "retire"),
    ]
    assert all(e.prompt == NAME for e in history)
    revs = [e.rev for e in history]
    assert revs == sorted(set(revs))
    assert history[4] == moved
    reg.create_prompt("other")
    assert [e.action for e in reg.history("other")] == ["create_prompt"]
    assert reg.history("other")[0].rev > revs[-1]  # one registry-wide revision


# -- every error leaves the store untouched ------------------------------------------------------

TOO_LONG_NAME = "n" * 129
ERROR_CASES: list[tuple[str, type[Exception], Callable[[PromptRegistry], object]]] = [
    ("create bad name", InvalidNameError, lambda r: r.create_prompt("bad name")),
    ("create leading dash", InvalidNameError, lambda r: r.create_prompt("-x")),
    ("create colon", InvalidNameError, lambda r: r.create_prompt("a:b")),
    ("create braces", InvalidNameError, lambda r: r.create_prompt("{ns}")),
    ("create empty", InvalidNameError, lambda r: r.create_prompt("")),
    ("create 129 chars", InvalidNameError, lambda r: r.create_prompt(TOO_LONG_NAME)),
    ("create empty segment", InvalidNameError, lambda r: r.create_prompt("a//b")),
    ("add to bad name", InvalidNameError, lambda r: r.add_version("a b", "text")),
    ("label latest", InvalidNameError, lambda r: r.set_label(NAME, "latest", 1)),
    ("label slash", InvalidNameError, lambda r: r.set_label(NAME, "a/b", 1)),
    ("label 65 chars", InvalidNameError, lambda r: r.set_label(NAME, "l" * 65, 1)),
    ("label empty", InvalidNameError, lambda r: r.set_label(NAME, "", 1)),
    ("delete bad label", InvalidNameError, lambda r: r.delete_label(NAME, "bad label")),
    ("text too large", PromptTooLargeError, lambda r: r.add_version(NAME, "x" * (TEXT_LIMIT + 1))),
    ("text too large in bytes", PromptTooLargeError, lambda r: r.add_version(NAME, "é" * (TEXT_LIMIT // 2 + 1))),
    ("metadata too large", PromptTooLargeError, lambda r: r.add_version(NAME, "t", metadata={"k": "v" * 40})),
    ("author too long", PromptTooLargeError, lambda r: r.add_version(NAME, "t", author="a" * 5000)),
    ("metadata object", InvalidInputError, lambda r: r.add_version(NAME, "t", metadata={"k": object()})),
    ("metadata nan", InvalidInputError, lambda r: r.add_version(NAME, "t", metadata={"k": float("nan")})),
    ("metadata int key", InvalidInputError, lambda r: r.add_version(NAME, "t", metadata={1: "v"})),  # type: ignore[dict-item]
    ("metadata list", InvalidInputError, lambda r: r.add_version(NAME, "t", metadata=[1])),  # type: ignore[arg-type]
    ("text not str", InvalidInputError, lambda r: r.add_version(NAME, b"bytes")),  # type: ignore[arg-type]
    ("version zero", InvalidInputError, lambda r: r.set_label(NAME, "qa", 0)),
    ("version str", InvalidInputError, lambda r: r.set_label(NAME, "qa", "2")),  # type: ignore[arg-type]
    ("version bool", InvalidInputError, lambda r: r.set_label(NAME, "qa", True)),
    ("expected negative", InvalidInputError, lambda r: r.set_label(NAME, "qa", 1, expected_version=-1)),
    ("label and version", InvalidInputError, lambda r: r.get_version(NAME, label="staging", version=1)),
    ("add to missing", PromptNotFoundError, lambda r: r.add_version("nope", "text")),
    ("label on missing", PromptNotFoundError, lambda r: r.set_label("nope", "staging", 1)),
    ("delete on missing", PromptNotFoundError, lambda r: r.delete_label("nope", "staging")),
    ("rollback on missing", PromptNotFoundError, lambda r: r.rollback("nope", "staging")),
    ("history of missing", PromptNotFoundError, lambda r: r.history("nope")),
    ("version of missing", PromptNotFoundError, lambda r: r.get_version("nope")),
    ("label of missing", PromptNotFoundError, lambda r: r.get_version("nope", label="staging")),
    ("number of missing", PromptNotFoundError, lambda r: r.get_version("nope", version=1)),
    ("label to missing version", VersionNotFoundError, lambda r: r.set_label(NAME, "qa", 4)),
    ("missing version", VersionNotFoundError, lambda r: r.get_version(NAME, version=4)),
    ("delete missing label", LabelNotFoundError, lambda r: r.delete_label(NAME, "qa")),
    ("missing label", LabelNotFoundError, lambda r: r.get_version(NAME, label="qa")),
    ("create existing", PromptExistsError, lambda r: r.create_prompt(NAME)),
    ("cas expected unset", LabelConflictError, lambda r: r.set_label(NAME, "staging", 1, expected_version=0)),
    ("cas wrong version", LabelConflictError, lambda r: r.set_label(NAME, "staging", 1, expected_version=3)),
    ("cas delete", LabelConflictError, lambda r: r.delete_label(NAME, "staging", expected_version=1)),
    ("rollback never moved", RollbackUnavailableError, lambda r: r.rollback(NAME, "staging")),
    ("rollback never set", LabelNotFoundError, lambda r: r.rollback(NAME, "qa")),
    # PostgreSQL text cannot hold U+0000, so no backend takes it in a text field.
    ("NUL in text", InvalidInputError, lambda r: r.add_version(NAME, "a\x00b")),
    ("NUL in author", InvalidInputError, lambda r: r.add_version(NAME, "t", author="a\x00")),
    ("NUL in message", InvalidInputError, lambda r: r.add_version(NAME, "t", message="\x00")),
    ("NUL in description", InvalidInputError, lambda r: r.create_prompt("other", description="d\x00")),
    ("NUL in reason", InvalidInputError, lambda r: r.set_label(NAME, "staging", 1, reason="r\x00")),
    ("NUL in delete author", InvalidInputError, lambda r: r.delete_label(NAME, "staging", author="\x00")),
    ("NUL in rollback reason", InvalidInputError, lambda r: r.rollback(NAME, "staging", reason="\x00")),
    ("NUL in mode reason", InvalidInputError, lambda r: r.set_compatibility(NAME, "full", reason="\x00")),
]


@pytest.mark.parametrize(("error", "call"), [case[1:] for case in ERROR_CASES], ids=[c[0] for c in ERROR_CASES])
def test_refused_calls_raise_typed_errors_and_change_nothing(
    backend: Backend, error: type[Exception], call: Callable[[PromptRegistry], object]
) -> None:
    reg = backend.make(max_text_bytes=TEXT_LIMIT, max_metadata_bytes=METADATA_LIMIT)
    seed(reg)
    raised = refused(backend, reg, error, lambda: call(reg))
    assert isinstance(raised, PromptRegistryError)
    assert str(raised)  # every error says what went wrong


def test_errors_are_builtin_compatible(reg: PromptRegistry) -> None:
    seed(reg)
    calls: tuple[Callable[[], object], ...] = (
        lambda: reg.add_version("nope", "t"),
        lambda: reg.get_version(NAME, version=9),
        lambda: reg.get_version(NAME, label="qa"),
    )
    for call in calls:
        with pytest.raises(KeyError) as caught:
            call()
        assert NAME in str(caught.value) or "nope" in str(caught.value)
        assert not str(caught.value).startswith(("'", '"'))  # the message, not a repr
    with pytest.raises(ValueError, match="invalid prompt name"):
        reg.create_prompt("no spaces")
    with pytest.raises(ValueError, match="reserved"):
        reg.set_label(NAME, "latest", 1)
    version = reg.get_version(NAME, label="production")
    with pytest.raises(KeyError) as caught:
        version.render(movie="Alien")
    assert isinstance(caught.value, MissingVariableError) and caught.value.missing == ("criticlevel",)


def test_json_fields_may_hold_nul(reg: PromptRegistry) -> None:
    """Only text fields refuse U+0000 (PostgreSQL text cannot hold it); metadata, config and chat
    messages are JSON on every backend and keep it."""
    reg.create_prompt(NAME)
    reg.add_version(NAME, "t", metadata={"k\x00": "v\x00"}, config={"stop": ["\x00"]})
    reg.add_version(NAME, messages=[{"role": "user", "content": "a\x00b {{x}}"}])
    first, second = reg.get_version(NAME, version=1), reg.get_version(NAME, version=2)
    assert first.metadata == {"k\x00": "v\x00"} and first.config == {"stop": ["\x00"]}
    assert second.messages == ({"role": "user", "content": "a\x00b {{x}}"},)
