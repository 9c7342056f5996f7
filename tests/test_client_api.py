"""``PromptClient``'s call surface: the registry from the environment, any template variable name in
``render``, and the typed ``render_text`` / ``render_chat``; on the JSON file and a real redis-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import (
    InvalidInputError,
    InvalidNameError,
    JsonFilePromptRegistry,
    MissingVariableError,
    PromptNotFoundError,
    PromptRegistry,
    PromptRegistryError,
    PromptRegistryFactory,
    PromptTypeError,
    RedisPromptRegistry,
)
from promptreg.registry.factory import DEFAULT_URL
from tests.redis_server import RedisServer, free_port, wait_until

LABEL = "production"
TEXT = "reviews"
CHAT = "support-bot"
# A template whose variables are named like render()'s own arguments (and like get()'s).
TAKEN = "taken-names"
MESSAGES = [
    {"role": "system", "content": "You are a {{tone}} agent; label {{label}}."},
    {"placeholder": "history"},
    {"role": "user", "content": "{{question}}"},
]
HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]
ENV_NAMES = ("PROMPTREG_URL", "PROMPTREG_NAMESPACE", "PROMPTREG_LABEL")


def seed(registry: PromptRegistry) -> None:
    """A text prompt (two versions), a chat prompt and the prompt with taken names, ``production`` on each."""
    registry.create_prompt(TEXT)
    registry.add_version(TEXT, "v1: review {{movie}}")
    registry.add_version(TEXT, "v2: review {{movie}} as a {{level}} critic")
    registry.set_label(TEXT, LABEL, 1)
    registry.create_prompt(CHAT)
    registry.add_version(CHAT, messages=MESSAGES)
    registry.set_label(CHAT, LABEL, 1)
    registry.create_prompt(TAKEN)
    registry.add_version(TAKEN, "label={{label}} version={{version}} fallback={{fallback}} name={{name}}")
    registry.add_version(TAKEN, "v2 label={{label}} variables={{variables}}")
    registry.set_label(TAKEN, LABEL, 1)


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def prompts(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Iterator[PromptClient]:
    """A live client on a seeded registry: the JSON file, or a real redis-server."""
    if request.param == "file":
        registry: PromptRegistry = JsonFilePromptRegistry(tmp_path / "registry.json")
        url = f"file://{tmp_path / 'registry.json'}"
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        registry = RedisPromptRegistry.from_url(server.url, namespace=namespace)
        url = server.url
    seed(registry)
    try:
        with PromptClient(url, namespace=namespace, start_timeout=10) as client:
            assert client.status().state is ClientState.LIVE
            yield client
    finally:
        registry.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# -- 1. no URL: the environment names the registry, as for create_from_config ---------------------------


def test_no_url_follows_the_default_file_as_create_from_config_does(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.chdir(tmp_path)
    # The factory ignores the namespace for a file (even a malformed one): so must the client.
    clean_env.setenv("PROMPTREG_NAMESPACE", "not a namespace!")
    registry = PromptRegistryFactory.create_from_config()
    seed(registry)
    assert DEFAULT_URL.endswith(".promptreg/registry.json")
    assert (tmp_path / ".promptreg" / "registry.json").is_file()
    with PromptClient(start_timeout=10) as prompts:
        assert prompts.status().state is ClientState.LIVE
        assert prompts.get(TEXT).version == 1
        registry.set_label(TEXT, LABEL, 2)  # the same file: the move reaches the client
        assert wait_until(lambda: prompts.get(TEXT).version == 2, 5)


@pytest.mark.redis
def test_no_url_reads_promptreg_url_and_namespace(
    redis_server: RedisServer, namespace: str, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("PROMPTREG_URL", redis_server.url)
    clean_env.setenv("PROMPTREG_NAMESPACE", namespace)
    registry = PromptRegistryFactory.create_from_config()
    assert isinstance(registry, RedisPromptRegistry) and registry.keys.namespace == namespace
    seed(registry)
    try:
        with PromptClient(start_timeout=10) as prompts:
            assert prompts.status().state is ClientState.LIVE
            assert "127.0.0.1" in repr(prompts)
            assert prompts.render(TEXT, movie="Alien") == "v1: review Alien"
            registry.set_label(TEXT, LABEL, 2)
            assert wait_until(lambda: prompts.get(TEXT).version == 2, 5)
        # An explicit namespace still wins over $PROMPTREG_NAMESPACE (here: an empty one).
        with PromptClient(namespace=namespace + "x", start_timeout=10) as other:
            assert other.status().state is ClientState.LIVE
            with pytest.raises(PromptNotFoundError):
                other.get(TEXT)
        # And an explicit URL still wins over $PROMPTREG_URL.
        clean_env.setenv("PROMPTREG_URL", f"file://{tmp_path / 'elsewhere.json'}")
        with PromptClient(redis_server.url, start_timeout=10) as explicit:
            assert explicit.get(TEXT).version == 2
    finally:
        registry.close()


def test_a_malformed_namespace_from_the_environment_is_refused_for_redis(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PROMPTREG_URL", f"redis://127.0.0.1:{free_port()}/0")
    clean_env.setenv("PROMPTREG_NAMESPACE", "not a namespace!")
    with pytest.raises(InvalidNameError):
        PromptRegistryFactory.create_from_config()
    with pytest.raises(InvalidNameError):
        PromptClient(start_timeout=0.1)


# -- 2. any template variable name ------------------------------------------------------------------------


def test_render_takes_variables_named_like_its_own_arguments(prompts: PromptClient) -> None:
    values = {"label": "L", "version": 3, "fallback": "F", "name": "N"}
    assert prompts.render(TAKEN, values, label=LABEL) == "label=L version=3 fallback=F name=N"
    assert prompts.render(TAKEN, values) == "label=L version=3 fallback=F name=N"  # the default label
    # The mapping does not resolve anything: version=2 pins the version, "version" fills the template.
    assert prompts.render(TAKEN, {"label": "L", "variables": "V"}, version=2) == "v2 label=L variables=V"
    # "variables" is positional-only, so it is also an ordinary keyword variable.
    assert prompts.render(TAKEN, {"label": "x"}, label="latest", variables="kw") == "v2 label=x variables=kw"


def test_render_keyword_form_works_as_before(prompts: PromptClient) -> None:
    assert prompts.render(TEXT, movie="Alien") == "v1: review Alien"
    assert prompts.render(TEXT, label="latest", movie="Up", level="kind") == "v2: review Up as a kind critic"
    assert prompts.render(TEXT, version=2, movie="Up", level="fair") == "v2: review Up as a fair critic"
    assert prompts.render(TEXT, label=LABEL, movie="Heat") == "v1: review Heat"
    with pytest.raises(InvalidInputError, match="not both"):
        prompts.render(TEXT, label=LABEL, version=2, movie="Heat")
    with pytest.raises(MissingVariableError):
        prompts.render(TEXT)


def test_mapping_and_keywords_merge_with_the_keyword_winning(prompts: PromptClient) -> None:
    assert prompts.render(TEXT, {"movie": "Alien", "level": "harsh"}, label="latest", level="kind") == (
        "v2: review Alien as a kind critic"
    )
    values = {"movie": "Alien"}
    prompts.render(TEXT, values, movie="Up")
    assert values == {"movie": "Alien"}  # the caller's mapping is not changed
    with pytest.raises(MissingVariableError) as missing:
        prompts.render(TAKEN, {"label": "L"})
    assert missing.value.missing == ("fallback", "name", "version")


@pytest.mark.parametrize("bad", [["movie"], "movie", {1: "x"}])
def test_variables_that_are_not_a_mapping_of_names_are_typed_errors(prompts: PromptClient, bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        prompts.render(TEXT, bad)
    with pytest.raises(InvalidInputError):
        prompts.render_text(TEXT, bad)


# -- 3. render_text and render_chat ------------------------------------------------------------------------


def test_render_text_returns_the_text_and_refuses_a_chat_version(prompts: PromptClient) -> None:
    text: str = prompts.render_text(TEXT, movie="Alien")
    assert text == "v1: review Alien"
    kind = prompts.render_text(TEXT, {"movie": "Up", "level": "kind"}, label="latest")
    assert kind == "v2: review Up as a kind critic"
    assert prompts.render_text(TAKEN, {"label": "L", "version": 1, "fallback": "F", "name": "N"}, version=1) == (
        "label=L version=1 fallback=F name=N"
    )
    with pytest.raises(PromptTypeError) as refused:
        prompts.render_text(CHAT, {"label": "L"}, tone="calm", question="?", history=[])
    error = refused.value
    assert isinstance(error, TypeError) and isinstance(error, PromptRegistryError)
    assert (error.name, error.version, error.expected, error.actual) == (CHAT, 1, "text", "chat")
    assert "render_chat()" in str(error)
    with pytest.raises(PromptTypeError):
        prompts.render_text(CHAT)  # the type is checked before the variables
    with pytest.raises(PromptNotFoundError):
        prompts.render_text("nope")


def test_render_chat_returns_the_messages_and_refuses_a_text_version(prompts: PromptClient) -> None:
    values = {"tone": "calm", "label": "L", "question": "Where is my order?", "history": HISTORY}
    messages: list[dict[str, str]] = prompts.render_chat(CHAT, values)
    assert messages == [
        {"role": "system", "content": "You are a calm agent; label L."},
        *HISTORY,
        {"role": "user", "content": "Where is my order?"},
    ]
    assert prompts.render_chat(CHAT, values, label=LABEL) == messages == prompts.render(CHAT, values)
    # In the keyword form, label= resolves the label: the template's {{label}} needs the mapping.
    with pytest.raises(MissingVariableError) as missing:
        prompts.render_chat(CHAT, tone="calm", question="q", history=[], label=LABEL)
    assert missing.value.missing == ("label",)
    assert prompts.render_chat(CHAT, {"label": "x"}, tone="calm", question="q", history=[], label=LABEL) == [
        {"role": "system", "content": "You are a calm agent; label x."},
        {"role": "user", "content": "q"},
    ]
    with pytest.raises(PromptTypeError) as refused:
        prompts.render_chat(TEXT, movie="Alien")
    error = refused.value
    assert isinstance(error, TypeError) and isinstance(error, PromptRegistryError)
    assert (error.name, error.version, error.expected, error.actual) == (TEXT, 1, "chat", "text")
    assert "render_text()" in str(error)


def test_render_still_returns_either_type(prompts: PromptClient) -> None:
    assert prompts.render(TEXT, movie="Alien") == "v1: review Alien"
    rendered = prompts.render(CHAT, {"tone": "t", "label": "l", "question": "q", "history": []})
    assert rendered == [{"role": "system", "content": "You are a t agent; label l."}, {"role": "user", "content": "q"}]


def test_typed_renders_serve_the_fallback_when_the_registry_is_unreachable() -> None:
    with PromptClient(f"redis://127.0.0.1:{free_port()}/0", start_timeout=0.2) as cold:
        assert cold.render_text(TEXT, {"who": "Ann"}, fallback="hi {{who}}") == "hi Ann"
        assert cold.render_chat(CHAT, fallback="hi {{who}}", who="Bo") == [{"role": "user", "content": "hi Bo"}]
        assert cold.render(TAKEN, {"label": "L"}, fallback="{{label}}!") == "L!"
        assert cold.status().fallbacks_served == 3
