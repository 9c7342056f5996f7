"""Unit tests of the pure parts: templates, the models, and input validation."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from promptreg.registry import (
    AuditEvent,
    InvalidInputError,
    InvalidNameError,
    MissingVariableError,
    Prompt,
    PromptTooLargeError,
    PromptVersion,
)
from promptreg.registry import template as template_module
from promptreg.registry.template import Template, variables
from promptreg.registry.validation import (
    LATEST,
    MAX_FIELD_LENGTH,
    MAX_LABEL_LENGTH,
    MAX_NAME_LENGTH,
    validate_field,
    validate_label,
    validate_metadata,
    validate_name,
    validate_namespace,
    validate_text,
    validate_version_number,
)

# -- templates -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Do you like {{movie}}?", "Do you like Alien?"),
        ("Do you like {{ movie }}?", "Do you like Alien?"),
        ("Do you like {{\tmovie  }}?", "Do you like Alien?"),
        ("{{movie}} and {{ movie }} again", "Alien and Alien again"),
        ("A {{level}} critic on {{movie}}", "A harsh critic on Alien"),
    ],
)
def test_placeholders_with_and_without_spaces(text: str, expected: str) -> None:
    assert Template(text).render({"movie": "Alien", "level": "harsh", "unused": 1}) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('JSON: {"a": 1}', 'JSON: {"a": 1}'),
        ("set {x} and {{ }}", "set {x} and {{ }}"),
        ("a lone {{ stays, so does }}", "a lone {{ stays, so does }}"),
        ("{{ not valid }} {{1x}} {{a-b}}", "{{ not valid }} {{1x}} {{a-b}}"),
        ("{{{movie}}}", "{Alien}"),
        ("no placeholders at all", "no placeholders at all"),
    ],
)
def test_other_braces_are_literal_text(text: str, expected: str) -> None:
    assert Template(text).render({"movie": "Alien"}) == expected


def test_variables_are_every_placeholder_name() -> None:
    text = "{{a}} {{ b }} {{a}} {c} {{ not valid }}"
    assert Template(text).variables == frozenset({"a", "b"}) == variables(text)
    assert Template("plain").variables == frozenset()


def test_missing_variables_are_all_named() -> None:
    with pytest.raises(MissingVariableError) as caught:
        Template("{{zeta}} {{alpha}} {{ given }} {{alpha}}").render({"given": "x"})
    assert caught.value.missing == ("alpha", "zeta")
    assert str(caught.value) == "missing template variables: alpha, zeta"
    assert isinstance(caught.value, KeyError)


def test_values_are_inserted_once_not_expanded_again() -> None:
    assert Template("{{a}}-{{b}}").render({"a": "{{b}}", "b": 2}) == "{{b}}-2"
    assert Template("{{n}} {{none}}").render({"n": 3.5, "none": None}) == "3.5 None"


def test_render_does_not_parse_again(monkeypatch: pytest.MonkeyPatch) -> None:
    version = PromptVersion(version=1, prompt_text="Review {{ movie }}")

    class NoParsing:
        def finditer(self, text: str) -> Any:
            raise AssertionError("render parsed the template again")

        findall = finditer

    monkeypatch.setattr(template_module, "_PLACEHOLDER", NoParsing())
    assert version.render(movie="Alien") == "Review Alien"
    assert version.variables == {"movie"}


def _reference_compile(text: str) -> tuple[str, frozenset[str]]:
    """The one-split compile (every literal escaped, every placeholder a field): the fast paths must agree."""
    pieces = template_module._PLACEHOLDER.split(text)
    names = pieces[1::2]
    pieces[0::2] = [literal.replace("{", "{{").replace("}", "}}") for literal in pieces[0::2]]
    pieces[1::2] = ["{" + name + "!s}" for name in names]
    return "".join(pieces), frozenset(names)


def test_every_compile_path_equals_the_one_split_compile_on_random_texts() -> None:
    rng = random.Random(12)
    alphabet = ["{", "}", "{{", "}}", " ", "a", "b1", "_", "x y", "{{a}}", "{{ b }}", "{{b1}}", "{{1}}", "é"]
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10)))
        parsed = Template(text)
        assert (parsed.format_string, parsed.variables) == _reference_compile(text), text


def test_compiling_a_chunk_at_once_equals_compiling_each_text() -> None:
    # What the client's reader does for every 1,000 versions: the same strings, each text kept only
    # when its format string cannot give it back.
    rng = random.Random(13)
    alphabet = ["{", "}", "{{", "}}", " ", "a", "b1", "_", "x y", "{{a}}", "{{ b }}", "{{b1}}", "{{1}}", "é", "\x00"]
    derived = 0
    for _ in range(3_000):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 4))]
        formats, kept = template_module.compile_batch(texts)
        assert formats == [Template(text).format_string for text in texts], texts
        for text, format_string, keep in zip(texts, formats, kept, strict=True):
            assert (template_module.untight_format(format_string) if keep is None else keep) == text
            derived += keep is None
            assert template_module.text_variables(text) == Template(text).variables, text
    assert derived > 100  # the one-copy path is taken, not only the fallback
    plain = ["no brace", "{{tight}} only"]
    formats, kept = template_module.compile_batch(plain)
    assert formats[0] is plain[0] and kept == [plain[0], None]  # a text without braces is its own format string
    assert template_module.compile_batch(["{{ spaced }}"]) == (["{spaced!s}"], ["{{ spaced }}"])
    assert template_module.compile_batch(["a\x00b", "{{x}}"]) == (["a\x00b", "{x!s}"], ["a\x00b", "{{x}}"])


def test_templates_share_what_they_can() -> None:
    plain = "no placeholder, no brace"
    assert Template(plain).format_string is plain  # nothing to escape: the text itself
    assert Template("{{a}} and {{b}}").variables is Template("{{a}} or {{b}}!").variables
    assert Template("x").variables is Template("y").variables


def test_trusted_versions_equal_validated_ones_and_share_one_fields_set() -> None:
    at = datetime(2024, 5, 1, tzinfo=UTC)
    one = PromptVersion.trusted(1, "Hi {{who}}", at, "ann", None, {"k": 1})
    two = PromptVersion.trusted(2, "{x} {{ who }}", at, None, "m", {})
    assert one == PromptVersion(version=1, prompt_text="Hi {{who}}", created_at=at, author="ann", metadata={"k": 1})
    assert two.render(who="A") == "{x} A" and one.render(who="B") == "Hi B"
    assert one.model_fields_set == set(PromptVersion.model_fields)
    copy = one.model_copy(update={"author": "bob"})  # pydantic copies the set before it adds to it
    assert copy.author == "bob" and one.author == "ann"
    assert two.model_fields_set == set(PromptVersion.model_fields)


def test_equal_texts_make_equal_templates() -> None:
    assert Template("a {{x}}") == Template("a {{ x }}")  # same parts, same names
    assert Template("a {{x}}") != Template("b {{x}}")
    assert hash(Template("a {{x}}")) == hash(Template("a {{x}}"))


# -- models ------------------------------------------------------------------------------------------


def _version(number: int = 1, **fields: Any) -> PromptVersion:
    return PromptVersion(version=number, prompt_text=fields.pop("prompt_text", f"text {number} {{{{x}}}}"), **fields)


def test_versions_are_frozen_and_strict() -> None:
    version = _version(metadata={"k": 1})
    with pytest.raises(ValidationError):
        version.prompt_text = "changed"
    with pytest.raises(ValidationError):
        PromptVersion(version=1, prompt_text="t", unknown="x")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PromptVersion(version=0, prompt_text="t")


def test_version_render_and_variables() -> None:
    version = _version(prompt_text="You are a {{criticlevel}} critic. Review {{ movie }}.")
    assert version.variables == {"criticlevel", "movie"}
    assert version.render(criticlevel="kind", movie="Up") == "You are a kind critic. Review Up."
    with pytest.raises(MissingVariableError) as caught:
        version.render()
    assert caught.value.missing == ("criticlevel", "movie")


def test_equal_fields_make_equal_versions_and_json_round_trips() -> None:
    at = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    first = _version(created_at=at, author="alice", message="m", metadata={"a": [1, 2]})
    second = _version(created_at=at, author="alice", message="m", metadata={"a": [1, 2]})
    assert first == second
    assert PromptVersion.model_validate_json(first.model_dump_json()) == first
    assert first != _version(created_at=at, author="bob", message="m", metadata={"a": [1, 2]})


def test_times_are_utc() -> None:
    assert _version().created_at.tzinfo is not None and _version().created_at.utcoffset() == timedelta(0)
    naive = datetime(2024, 5, 1, 12, 0)
    assert _version(created_at=naive).created_at == naive.replace(tzinfo=UTC)
    paris = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    converted = _version(created_at=paris).created_at
    assert converted == paris and converted.utcoffset() == timedelta(0) and converted.hour == 12
    event = AuditEvent(rev=1, at=paris, action="set_label", prompt="p")
    assert event.at.tzinfo is not None and event.at.utcoffset() == timedelta(0)
    assert Prompt(name="p", created_at=naive).created_at.tzinfo is not None


def test_prompt_lookups_return_none_when_absent() -> None:
    versions = [_version(n) for n in (1, 2, 3)]
    prompt = Prompt(name="movie-critic", versions=versions, labels={"staging": 2, "production": 3})
    assert prompt.get_version_by_number(2) == versions[1]
    assert prompt.get_version_by_number(0) is None
    assert prompt.get_version_by_number(4) is None
    assert prompt.get_version_by_label("staging") == versions[1]
    assert prompt.get_version_by_label("development") is None
    assert prompt.get_version_by_label(LATEST) == prompt.latest == versions[2]
    empty = Prompt(name="empty")
    assert empty.latest is None and empty.get_version_by_label(LATEST) is None
    with pytest.raises(ValidationError):
        prompt.labels = {}


def test_audit_event_actions_are_a_closed_set() -> None:
    at = datetime.now(UTC)
    for action in ("create_prompt", "add_version", "set_label", "delete_label", "rollback"):
        assert AuditEvent(rev=1, at=at, action=action, prompt="p").action == action
    with pytest.raises(ValidationError):
        AuditEvent(rev=1, at=at, action="drop_table", prompt="p")  # type: ignore[arg-type]


# -- validation --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a", "7", "movie-critic", "support/triage", "A.b_c-1/x", "n" * MAX_NAME_LENGTH])
def test_valid_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["", "-a", ".a", "/a", "_a", "a b", "a:b", "a{b", "a}b", "a\n", "é", "a//b", "a/", "n" * (MAX_NAME_LENGTH + 1),
     5, None, b"bytes"],
)  # fmt: skip
def test_invalid_names(name: Any) -> None:
    with pytest.raises(InvalidNameError):
        validate_name(name)


@pytest.mark.parametrize("label", ["production", "v1.2_rc-1", "7", "l" * MAX_LABEL_LENGTH])
def test_valid_labels(label: str) -> None:
    assert validate_label(label, settable=True) == label


@pytest.mark.parametrize("label", ["", "a/b", "_x", "a b", "a:b", "l" * (MAX_LABEL_LENGTH + 1), None, 3])
def test_invalid_labels(label: Any) -> None:
    with pytest.raises(InvalidNameError):
        validate_label(label)


def test_latest_can_be_read_but_not_set() -> None:
    assert validate_label(LATEST) == LATEST
    with pytest.raises(InvalidNameError, match="reserved"):
        validate_label(LATEST, settable=True)


def test_namespaces() -> None:
    assert validate_namespace("promptreg") == "promptreg"
    for bad in ("", "a:b", "{x}", "a/b", "n" * 65, None):
        with pytest.raises(InvalidNameError):
            validate_namespace(bad)


def test_version_numbers() -> None:
    assert validate_version_number(1) == 1
    assert validate_version_number(0, allow_zero=True) == 0
    for bad in (0, -1, True, False, "1", 1.0, None):
        with pytest.raises(InvalidInputError):
            validate_version_number(bad)
    with pytest.raises(InvalidInputError):
        validate_version_number(-1, allow_zero=True)


def test_text_size_is_counted_in_utf8_bytes() -> None:
    assert validate_text("ab", max_bytes=2) == "ab"
    assert validate_text("é", max_bytes=2) == "é"
    with pytest.raises(PromptTooLargeError, match="3 bytes"):
        validate_text("éa", max_bytes=2)
    with pytest.raises(InvalidInputError):
        validate_text(b"bytes")
    with pytest.raises(InvalidInputError, match="Unicode"):
        validate_text("lone surrogate \ud800")


def test_short_fields() -> None:
    assert validate_field(None, "author") is None
    assert validate_field("", "author") is None
    assert validate_field("alice", "author") == "alice"
    assert validate_field("a" * MAX_FIELD_LENGTH, "author") == "a" * MAX_FIELD_LENGTH
    with pytest.raises(PromptTooLargeError, match="author"):
        validate_field("a" * (MAX_FIELD_LENGTH + 1), "author")
    with pytest.raises(InvalidInputError, match="reason"):
        validate_field(42, "reason")


def test_metadata_is_copied_as_json() -> None:
    original: dict[str, Any] = {"tags": ("a", "b"), "nested": {"n": None, "ok": True, "x": 1.5}}
    clean = validate_metadata(original)
    assert clean == {"tags": ["a", "b"], "nested": {"n": None, "ok": True, "x": 1.5}}
    original["nested"]["n"] = "changed"
    assert clean["nested"]["n"] is None
    assert validate_metadata(None) == {}


def test_metadata_limit_is_the_compact_json_size() -> None:
    metadata = {"k": "é" * 10}
    size = len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False).encode())
    assert validate_metadata(metadata, max_bytes=size) == metadata
    with pytest.raises(PromptTooLargeError, match=f"{size} bytes"):
        validate_metadata(metadata, max_bytes=size - 1)


@pytest.mark.parametrize(
    "metadata",
    [[1, 2], "text", {"k": object()}, {"k": {1, 2}}, {"k": float("nan")}, {"k": float("inf")}, {1: "v"},
     {"k": b"bytes"}],
)  # fmt: skip
def test_metadata_must_be_json_compatible(metadata: Any) -> None:
    with pytest.raises(InvalidInputError):
        validate_metadata(metadata)


def test_metadata_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(40):
        cursor["d"] = {}
        cursor = cursor["d"]
    with pytest.raises(InvalidInputError, match="nested deeper"):
        validate_metadata(deep)
