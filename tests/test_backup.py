"""``promptreg.registry.backup``: export/import validation, idempotence and conflicts (fakeredis and JSON file)."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from promptreg.registry import ImportConflictError
from promptreg.registry.backup import apply_import, export_registry, plan_import
from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import InvalidInputError, PromptTooLargeError
from tests.backends import Backend


@pytest.fixture
def make_registry(backend: Backend) -> Callable[[str], PromptRegistry]:
    """Registries on every backend (tests/conftest.py), each tag its own empty one: export from one,
    import into another."""
    return backend.other


def seed(registry: PromptRegistry) -> None:
    registry.create_prompt("movie-critic", description="Reviews", author="alice")
    registry.add_version("movie-critic", "v1 {{movie}}", author="alice", message="first", metadata={"t": 0.2})
    registry.add_version("movie-critic", "v2 {{movie}}", author="bob")
    registry.set_label("movie-critic", "production", 2)
    registry.set_label("movie-critic", "staging", 1)
    registry.create_prompt("empty")


def content(registry: PromptRegistry) -> list[Any]:
    out = []
    for name in registry.list_prompts():
        prompt = registry.get_prompt(name)
        assert prompt is not None
        versions = [(v.version, v.prompt_text, v.author, v.metadata, v.message) for v in prompt.versions]
        out.append((name, prompt.description, prompt.author, prompt.labels, versions))
    return out


def test_round_trip_and_reimport_is_a_no_op(make_registry: Any) -> None:
    source, target = make_registry("src"), make_registry("dst")
    seed(source)
    data = export_registry(source)

    apply_import(target, plan_import(target, data))

    assert content(target) == content(source)
    history = [e.model_dump() for e in target.history("movie-critic")]
    assert not plan_import(target, data).steps
    assert [e.model_dump() for e in target.history("movie-critic")] == history


def test_import_appends_missing_versions_and_moves_labels(make_registry: Any) -> None:
    source, target = make_registry("src"), make_registry("dst")
    seed(source)
    target.create_prompt("movie-critic")
    target.add_version("movie-critic", "v1 {{movie}}", author="alice", message="first", metadata={"t": 0.2})
    target.set_label("movie-critic", "production", 1)
    target.set_label("movie-critic", "canary", 1)

    plan = plan_import(target, export_registry(source))

    assert [s.describe() for s in plan.steps if s.prompt == "movie-critic"] == [
        "movie-critic: add version 2",
        "movie-critic: label production 1 -> 2",
        "movie-critic: label staging unset -> 1",
    ]
    apply_import(target, plan)
    prompt = target.get_prompt("movie-critic")
    assert prompt is not None
    assert prompt.labels == {"production": 2, "staging": 1, "canary": 1}  # labels the export lacks stay


@pytest.mark.parametrize("field", ["prompt_text", "author", "message", "metadata"])
def test_conflicting_version_refuses_before_writing(make_registry: Any, field: str) -> None:
    source, target = make_registry("src"), make_registry("dst")
    seed(source)
    data = export_registry(source)
    target.create_prompt("aaa-first")  # sorted before movie-critic: would be written first
    seed(target)
    target.delete_label("movie-critic", "staging")
    data["prompts"].insert(0, {"name": "aaa-new", "versions": [], "labels": {}})
    version = _critic(data)["versions"][1]
    version[field] = {"other": 1} if field == "metadata" else "changed"
    before = content(target)

    with pytest.raises(ImportConflictError, match="version 2 differs"):
        plan_import(target, data)

    assert content(target) == before


def _critic(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(p for p in data["prompts"] if p["name"] == "movie-critic")
    return found


def _broken(data: dict[str, Any], how: str) -> dict[str, Any]:
    data = copy.deepcopy(data)
    prompt = _critic(data)
    if how == "format":
        data["format"] = "something"
    elif how == "format_version":
        data["format_version"] = 99
    elif how == "gap":
        prompt["versions"][1]["version"] = 3
    elif how == "dangling-label":
        prompt["labels"]["production"] = 7
    elif how == "latest-label":
        prompt["labels"]["latest"] = 1
    elif how == "bad-name":
        prompt["name"] = "bad name"
    elif how == "duplicate":
        data["prompts"].append(copy.deepcopy(prompt))
    elif how == "unknown-field":
        prompt["versions"][0]["extra"] = 1
    elif how == "too-large":
        prompt["versions"][0]["prompt_text"] = "x" * 2_000_000
    elif how == "not-a-list":
        data["prompts"] = {}
    return data


@pytest.mark.parametrize(
    "how",
    ["format", "format_version", "gap", "dangling-label", "latest-label", "bad-name", "duplicate",
     "unknown-field", "too-large", "not-a-list"],
)  # fmt: skip
def test_invalid_export_is_refused_before_writing(make_registry: Any, how: str) -> None:
    source, target = make_registry("src"), make_registry("dst")
    seed(source)
    data = _broken(export_registry(source), how)

    with pytest.raises(InvalidInputError) as info:
        plan_import(target, data)

    assert str(info.value)
    if how == "too-large":
        assert isinstance(info.value, PromptTooLargeError)
    assert target.list_prompts() == []
