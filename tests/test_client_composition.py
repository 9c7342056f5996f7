"""The client serves composed prompts and recomposes them when a partial moves: on the JSON file, real
Redis (and Cluster) and PostgreSQL, through each one's own feed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from promptreg import PromptClient
from promptreg.client.composition import ComposedVersion
from promptreg.registry import PartialNotFoundError, PromptRegistry
from tests.backends import Backend, kinds, open_backend
from tests.redis_server import wait_until

BOUND = 10.0


@pytest.fixture(params=kinds("file", "redis", "cluster", "postgres"))
def live(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """The backends a :class:`PromptClient` follows by URL (fakeredis has none)."""
    with open_backend(request.param, request, namespace, tmp_path) as backend:
        yield backend


def _client(backend: Backend, **options: Any) -> PromptClient:
    if backend.kind == "file":
        options.setdefault("poll_interval", 0.05)
    options.setdefault("default_label", "production")
    return PromptClient(backend.url, namespace=None if backend.kind == "file" else backend.namespace, **options)


def _seed(reg: PromptRegistry) -> None:
    reg.create_prompt("safety")
    reg.add_version("safety", "Be safe, {{user}}.")
    reg.add_version("safety", "Be very safe, {{user}}.")
    reg.set_label("safety", "production", 1)
    reg.set_label("safety", "staging", 2)
    reg.create_prompt("tone")
    reg.add_version("tone", "Warm. {{> safety}}")
    reg.set_label("tone", "production", 1)
    reg.set_label("tone", "staging", 1)
    reg.create_prompt("bot")
    reg.add_version("bot", "{{> tone}} Q: {{question}} [{{> safety@1}}]")
    reg.set_label("bot", "production", 1)
    reg.set_label("bot", "staging", 1)


def test_composed_when_filled_and_recomposed_when_a_partial_moves(live: Backend) -> None:
    reg = live.make()
    _seed(reg)
    with _client(live) as prompts:
        assert prompts.wait_ready(BOUND)
        found = prompts.get("bot")
        assert isinstance(found, ComposedVersion)
        assert found.prompt_text == "Warm. Be safe, {{user}}. Q: {{question}} [Be safe, {{user}}.]"
        assert found.partials == {"tone": 1, "safety": 1}
        assert found.version == 1 and found.variables == {"user", "question"}
        assert prompts.render("bot", user="Ann", question="?") == "Warm. Be safe, Ann. Q: ? [Be safe, Ann.]"
        staged = prompts.get("bot", "staging")
        assert staged.prompt_text == "Warm. Be very safe, {{user}}. Q: {{question}} [Be safe, {{user}}.]"
        # The registry resolves exactly the same way.
        assert reg.get_version("bot", label="staging", resolve=True).prompt_text == staged.prompt_text

        # A partial two levels down moves: every dependent at that label is recomposed, pushed.
        reg.set_label("safety", "production", 2)
        want = "Warm. Be very safe, {{user}}. Q: {{question}} [Be safe, {{user}}.]"
        assert wait_until(lambda: prompts.get("bot").prompt_text == want, BOUND)
        assert prompts.get("tone").prompt_text == "Warm. Be very safe, {{user}}."
        assert prompts.get("bot").partials == {"tone": 1, "safety": 2}  # the first use's version
        assert prompts.get("bot", "staging").prompt_text == want  # staging did not change
        assert reg.get_version("bot", label="production", resolve=True).prompt_text == want

        # A dependent's own move to a version including a partial at a fixed version no label holds.
        reg.add_version("safety", "Be brief.")
        reg.add_version("bot", "{{> safety@3}} {{question}}")
        reg.set_label("bot", "production", 2)
        assert wait_until(lambda: prompts.get("bot").prompt_text == "Be brief. {{question}}", BOUND)
        assert prompts.get("bot").partials == {"safety": 3}

        # A forced deletion leaves a dependent unresolved: its lookups raise, never the raw text.
        reg.delete_label("safety", "production", force=True)
        assert wait_until(lambda: _raises(prompts, "tone"), BOUND)
        with pytest.raises(PartialNotFoundError):
            prompts.get("tone")
        # ... and the partial's label coming back composes it again.
        reg.set_label("safety", "production", 1)
        assert wait_until(lambda: not _raises(prompts, "tone"), BOUND)
        assert prompts.get("tone").prompt_text == "Warm. Be safe, {{user}}."

        # A pinned version is composed with the partials at latest.
        pinned = prompts.get("bot", version=1)
        assert pinned.prompt_text == "Warm. Be brief. Q: {{question}} [Be safe, {{user}}.]"


def _raises(prompts: PromptClient, name: str) -> bool:
    try:
        prompts.get(name)
    except PartialNotFoundError:
        return True
    return False


def test_a_new_client_composes_from_the_state_it_reads(live: Backend) -> None:
    reg = live.make()
    _seed(reg)
    reg.set_label("safety", "production", 2)
    with _client(live) as prompts:
        assert prompts.wait_ready(BOUND)
        assert prompts.get("tone").prompt_text == "Warm. Be very safe, {{user}}."
        assert prompts.get("bot").partials == {"tone": 1, "safety": 2}
        # The model form carries the partials too.
        assert prompts.get("bot").to_model().partials == {"tone": 1, "safety": 2}
