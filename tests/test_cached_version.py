"""The client's cached version: the read API of the pydantic model, immutable, one copy of each text.

Every attribute, render result and render error of a :class:`~promptreg.CachedVersion` is compared
with the :class:`~promptreg.PromptVersion` of the same values; the batch template compiler is
compared with the one-text compiler on arbitrary texts (hypothesis).
"""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptreg import CachedVersion, PromptClient, PromptVersion, PromptVersionLike
from promptreg.client.cached_version import EMPTY, cached_batch, cached_from_model
from promptreg.registry.errors import InvalidInputError, MissingVariableError
from promptreg.registry.template import compile_batch, compile_template, untight_format
from tests.backends import Backend, kinds, open_backend

AT = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)

MODELS = [
    PromptVersion(version=1, prompt_text="Review {{movie}} as a {{level}} critic.", created_at=AT),
    PromptVersion(version=2, prompt_text="No variables, no braces.", created_at=AT, author="ann", message="m"),
    PromptVersion(
        version=3,
        prompt_text='Answer as JSON {"a": {{x}}} with {{ spaced }}',
        created_at=AT,
        metadata={"model": "gpt", "tags": ["a"]},
        config={"temperature": 0.2},
    ),
    PromptVersion(version=4, prompt_text="", created_at=AT),
    PromptVersion(
        version=5,
        created_at=AT,
        messages=(
            {"role": "system", "content": "Be {{tone}}."},
            {"placeholder": "history"},
            {"role": "user", "content": "{{question}}"},
        ),
        config={"model": "m"},
    ),
]
VALUES: list[dict[str, Any]] = [
    {},
    {"movie": "Alien", "level": "harsh"},
    {"x": 1, "spaced": "s", "tone": "kind", "question": "why?", "history": [{"role": "user", "content": "hi"}]},
    {"movie": "Alien"},
    {"tone": "kind", "question": "q", "history": "not a list"},
]
FIELDS = ("version", "prompt_text", "created_at", "author", "message", "metadata", "type", "messages", "config",
          "variables", "placeholders")  # fmt: skip


def _outcome(method: Any, values: dict[str, Any]) -> object:
    try:
        return method(**values)
    except (MissingVariableError, InvalidInputError) as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("model", MODELS, ids=lambda m: f"v{m.version}")
def test_every_attribute_and_render_outcome_equals_the_models(model: PromptVersion) -> None:
    row = (model.version, model.prompt_text, model.created_at, model.author, model.message, model.metadata,
           model.messages, model.config)  # fmt: skip
    for cached in (cached_from_model(model), cached_batch([row])[0]):
        assert isinstance(cached, CachedVersion)
        for field in FIELDS:
            assert getattr(cached, field) == getattr(model, field), field
        for values in VALUES:
            assert _outcome(cached.render, values) == _outcome(model.render, values)
            assert _outcome(cached.render_messages, values) == _outcome(model.render_messages, values)
        assert cached == model and cached.to_model() == model
        assert isinstance(cached.to_model(), PromptVersion)


def test_both_classes_satisfy_the_protocol_that_types_user_code() -> None:
    def words(version: PromptVersionLike) -> str:
        return f"{version.version}:{version.render(movie='Alien', level='harsh')}"

    assert words(MODELS[0]) == words(cached_from_model(MODELS[0])) == "1:Review Alien as a harsh critic."


def test_a_cached_version_cannot_be_changed() -> None:
    cached = cached_from_model(MODELS[1])
    with pytest.raises(AttributeError, match="immutable"):
        cached.version = 9
    with pytest.raises(AttributeError, match="immutable"):
        del cached.author
    assert cached.metadata is EMPTY and cached.config is EMPTY
    with pytest.raises(TypeError, match="read-only"):
        cached.metadata["x"] = 1
    with pytest.raises(TypeError, match="read-only"):
        cached.config.update({"x": 1})
    assert EMPTY == {} and cached.version == 2


def test_the_text_is_kept_once_and_rebuilt_exactly() -> None:
    # A template whose braces are all {{name}}: only its format string is kept; the text comes back exact.
    cached = cached_batch([(1, "Hi {{name}}, {{day}}!", AT, None, None, None, None, None)])[0]
    assert object.__getattribute__(cached, "_text") is None
    assert cached.prompt_text == "Hi {{name}}, {{day}}!"
    assert cached.prompt_text is cached.prompt_text  # rebuilt once, then kept
    plain = cached_batch([(1, "no braces", AT, None, None, None, None, None)])[0]
    assert object.__getattribute__(plain, "_text") is object.__getattribute__(plain, "_format")


def test_pickle_and_copy_give_an_equal_working_version() -> None:
    for model in MODELS:
        cached = cached_from_model(model)
        for clone in (pickle.loads(pickle.dumps(cached)), copy.copy(cached), copy.deepcopy(cached)):
            assert isinstance(clone, CachedVersion) and clone == cached
            for values in VALUES:
                assert _outcome(clone.render, values) == _outcome(cached.render, values)


def test_repr_names_the_version() -> None:
    assert repr(cached_from_model(MODELS[0])).startswith("CachedVersion(version=1, type='text'")


texts = st.text(alphabet=st.sampled_from(list("ab {}!s_x\x00é")), max_size=40) | st.builds(
    lambda parts: "".join(parts), st.lists(st.sampled_from(["{{x}}", "{{ y }}", "{", "}", "!s}", "a", " "]), max_size=8)
)


@settings(max_examples=300, deadline=None)
@given(st.lists(texts, max_size=12))
def test_the_batch_compiler_equals_the_one_text_compiler(batch: list[str]) -> None:
    formats, kept = compile_batch(batch)
    assert formats == [compile_template(text)[0] for text in batch]
    for text, format_string, keep in zip(batch, formats, kept, strict=True):
        assert (untight_format(format_string) if keep is None else keep) == text


@pytest.fixture(params=kinds("file", "redis", "cluster", "postgres"))
def backend(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """The backends a client follows (fakeredis has no URL a client opens)."""
    with open_backend(request.param, request, namespace, tmp_path) as opened:
        yield opened


def test_every_backends_client_serves_cached_versions_equal_to_the_registrys(backend: Backend) -> None:
    registry = backend.make()
    registry.create_prompt("critic")
    registry.add_version("critic", "Review {{movie}}.")
    registry.add_version("critic", 'As JSON {"a": 1}: {{ movie }}', author="ann", message="m", metadata={"k": [1]})
    registry.create_prompt("chat")
    registry.add_version("chat", messages=[{"role": "system", "content": "Be {{tone}}."}, {"placeholder": "h"}],
                         config={"temperature": 0.2})  # fmt: skip
    registry.set_label("critic", "production", 1)
    registry.set_label("critic", "staging", 2)
    registry.set_label("chat", "production", 1)
    with PromptClient(backend.url, namespace=backend.namespace, fleet_report=False) as client:
        assert client.wait_ready(10)
        for name, label, number in [("critic", "production", 1), ("critic", "staging", 2), ("chat", "production", 1)]:
            served = client.get(name, label)
            assert isinstance(served, CachedVersion)
            assert served == registry.get_version(name, version=number)
            assert client.get(name, version=number) is served
        assert client.render("critic", label="staging", movie="Up") == 'As JSON {"a": 1}: Up'
        assert client.render_chat("chat", tone="kind", h=[]) == [{"role": "system", "content": "Be kind."}]
