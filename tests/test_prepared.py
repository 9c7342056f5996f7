"""``prepare(client, name, ...)``: a prompt rendered into chat messages, with the version's model
settings and the attributes that identify it, and an OpenAI-style call traced with the real SDK."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from promptreg import InvalidInputError, MissingVariableError, PromptClient, PromptRegistryFactory
from promptreg.client.prepared import OPENAI_CONFIG_KEYS, PreparedPrompt, prepare

TEXT = "critic"
V1 = "v1: review {{movie}}"
V2 = "v2: review {{movie}} as a {{level}} critic"
CHAT = "support-bot"
MESSAGES = [
    {"role": "system", "content": "You are a {{tone}} agent for {{label}}."},
    {"placeholder": "history"},
    {"role": "user", "content": "{{question}}"},
]
CONFIG = {"model": "gpt-4o", "temperature": 0.2, "max_tokens": 300, "stream": True, "provider": "openai"}


@pytest.fixture
def prompts(tmp_path: Path) -> Iterator[PromptClient]:
    url = f"file://{tmp_path}/r.json"
    registry = PromptRegistryFactory.from_url(url)
    registry.create_prompt(TEXT)
    registry.add_version(TEXT, V1)
    registry.add_version(TEXT, V2)
    registry.set_label(TEXT, "production", 2)
    registry.create_prompt(CHAT)
    registry.add_version(CHAT, messages=MESSAGES, config=CONFIG)
    registry.set_label(CHAT, "production", 1)
    registry.close()
    with PromptClient(url, start_timeout=10) as client:
        yield client


def test_a_text_version_becomes_one_user_message(prompts: PromptClient) -> None:
    prepared = prepare(prompts, TEXT, movie="Alien", level="harsh")
    assert prepared.text == "v2: review Alien as a harsh critic"
    assert prepared.messages == [{"role": "user", "content": prepared.text}]
    assert prepared.version is prompts.get(TEXT)
    assert dict(prepared.config) == {}
    assert prepared.attributes == {
        "gen_ai.prompt.name": TEXT,
        "gen_ai.prompt.version": "2",
        "promptreg.prompt.version": 2,
        "promptreg.prompt.label": "production",
        "promptreg.prompt.sha256": hashlib.sha256(V2.encode()).hexdigest(),
    }
    assert prepared.openai_kwargs() == {"messages": prepared.messages}


def test_a_chat_version_gives_its_messages_and_the_settings_openai_accepts(prompts: PromptClient) -> None:
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    prepared = prepare(
        prompts, CHAT, {"label": "billing", "tone": "dry"}, tone="calm", question="Where?", history=history
    )
    assert prepared.text is None
    assert prepared.messages == [
        {"role": "system", "content": "You are a calm agent for billing."},  # the keyword wins; "label" a variable
        *history,
        {"role": "user", "content": "Where?"},
    ]
    assert dict(prepared.config) == CONFIG
    kwargs = prepared.openai_kwargs()
    assert kwargs == {"model": "gpt-4o", "temperature": 0.2, "max_tokens": 300, "messages": prepared.messages}
    assert "stream" not in OPENAI_CONFIG_KEYS and "provider" not in OPENAI_CONFIG_KEYS
    kwargs["messages"].append({"role": "user", "content": "more"})  # a new list each call
    assert len(prepared.messages) == 4
    assert prepared.attributes["promptreg.prompt.label"] == "production"


def test_a_pinned_version_and_a_given_label(prompts: PromptClient) -> None:
    pinned = prepare(prompts, TEXT, version=1, movie="Alien")
    assert pinned.text == "v1: review Alien" and "promptreg.prompt.label" not in pinned.attributes
    assert pinned.attributes["promptreg.prompt.version"] == 1
    latest = prepare(prompts, TEXT, label="latest", movie="Alien", level="mild")
    assert latest.attributes["promptreg.prompt.label"] == "latest" and latest.version.version == 2


def test_the_prepared_prompt_is_frozen_slotted_and_its_config_read_only(prompts: PromptClient) -> None:
    prepared = prepare(prompts, CHAT, {"label": "x"}, tone="calm", question="Where?", history=[])
    with pytest.raises(dataclasses.FrozenInstanceError):
        prepared.text = "other"  # type: ignore[misc]
    assert not hasattr(prepared, "__dict__") and PreparedPrompt.__slots__
    with pytest.raises(TypeError):
        prepared.config["model"] = "other"  # type: ignore[index]
    assert prepared.__doc__ and prepare.__doc__ and PreparedPrompt.openai_kwargs.__doc__


def test_errors_are_those_of_get_and_render(prompts: PromptClient) -> None:
    with pytest.raises(MissingVariableError):
        prepare(prompts, TEXT, movie="Alien")
    with pytest.raises(InvalidInputError):
        prepare(prompts, TEXT, ["movie"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        prepare(prompts, TEXT, {1: "x"})  # type: ignore[dict-item]


def test_the_client_method_delegates(prompts: PromptClient) -> None:
    assert prompts.prepare(TEXT, movie="Alien", level="harsh") == prepare(prompts, TEXT, movie="Alien", level="harsh")


def fake_chat_completion(**kwargs: Any) -> dict[str, Any]:
    """Stands for ``openai_client.chat.completions.create``: no network in the tests."""
    return {"model": kwargs["model"], "choices": [{"message": {"role": "assistant", "content": "Shipped."}}]}


def test_an_openai_style_call_carries_the_prompt_version_on_its_span(tmp_path: Path) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests.test_prepared")
    url = f"file://{tmp_path}/r.json"
    registry = PromptRegistryFactory.from_url(url)
    registry.create_prompt(CHAT)
    registry.add_version(CHAT, messages=MESSAGES, config=CONFIG)
    registry.set_label(CHAT, "production", 1)
    registry.close()
    try:
        with PromptClient(url, tracing=True, start_timeout=10) as traced, tracer.start_as_current_span("chat gpt-4o"):
            prepared = traced.prepare(CHAT, {"label": "acme"}, tone="calm", question="Where is my order?", history=[])
            reply = fake_chat_completion(**prepared.openai_kwargs())
        (span,) = exporter.get_finished_spans()
        assert reply["model"] == "gpt-4o"
        assert dict(span.attributes or {}) == prepared.attributes  # tracing=True sets what prepare returns
        assert span.attributes is not None and span.attributes["gen_ai.prompt.version"] == "1"
    finally:
        provider.shutdown()
