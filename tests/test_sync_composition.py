"""Prompts as code with partials (``{{> name}}``): sync writes the partials first, checks the whole plan
as the backends check each write before anything is written, refuses files that include each other,
and stays idempotent. On every backend (tests/conftest.py); the command line on file/Redis/PostgreSQL.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import IncompatibleDependentError, PartialNotFoundError, PromptFileError
from promptreg.registry.sync import apply_sync, parse_prompt_file, plan_sync
from promptreg.registry.sync_order import order_files
from tests.backends import Cli


@pytest.fixture
def registry(any_registry: PromptRegistry) -> PromptRegistry:
    return any_registry


def write(folder: Path, relative: str, content: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return path


def sync(registry: PromptRegistry, folder: Path, **kwargs: object) -> list[str]:
    plan = plan_sync(registry, folder, **kwargs)  # type: ignore[arg-type]
    return [step.describe() for step in apply_sync(registry, plan, author="ci")]


def snapshot(registry: PromptRegistry) -> object:
    return registry.revision(), {n: registry.get_prompt(n).model_dump() for n in registry.list_prompts()}  # type: ignore[union-attr]


def text(registry: PromptRegistry, name: str, label: str = "production") -> str:
    return registry.get_version(name, label=label, resolve=True).prompt_text


# Alphabetical order would write the dependents first: a-bot < b-preamble < shared/safety < style.
FOLDER = {
    "a-bot.prompt": """
        ---
        labels: [production]
        model: googleai/gemini-1.5-pro
        ---
        {{role "system"}}
        {{> b-preamble}}
        {{role "user"}}
        {{question}}
    """,
    "b-preamble.prompt": """
        ---
        labels: [production]
        ---
        {{> shared/safety}} {{> style@1}}""",
    "c-pinned.prompt": """
        ---
        labels: [production]
        ---
        {{> shared/safety@1}} / {{> style@production}} / {{> shared/safety}}""",
    "shared/safety.prompt": """
        ---
        labels: [production]
        ---
        Be safe, {{user}}.""",
    "style.prompt": """
        ---
        labels: [production]
        ---
        Write plainly.""",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "prompts"
    for relative, content in FOLDER.items():
        write(root, relative, content)
    return root


def test_partials_are_written_first_then_their_dependents(registry: PromptRegistry, folder: Path) -> None:
    steps = sync(registry, folder)
    created = [line.split(":")[0] for line in steps if line.endswith("create prompt")]
    assert created == ["shared/safety", "style", "b-preamble", "a-bot", "c-pinned"]
    # Each prompt's label moves come with its own steps, so a partial's label is set before a dependent's.
    labels = [line.split(":")[0] for line in steps if ": label production" in line]
    assert labels == created
    bot = registry.get_version("a-bot", label="production", resolve=True)
    assert bot.messages is not None and bot.messages[0]["content"] == "Be safe, {{user}}. Write plainly."
    assert bot.partials == {"b-preamble": 1, "shared/safety": 1, "style": 1}
    assert bot.config == {"model": "googleai/gemini-1.5-pro"}
    assert bot.variables == {"user", "question"}
    assert text(registry, "c-pinned") == "Be safe, {{user}}. / Write plainly. / Be safe, {{user}}."
    # The stored versions keep the references as written.
    assert registry.get_version("b-preamble").prompt_text == "{{> shared/safety}} {{> style@1}}"


def test_a_second_sync_writes_nothing(registry: PromptRegistry, folder: Path) -> None:
    sync(registry, folder)
    before = snapshot(registry)
    plan = plan_sync(registry, folder)
    assert not plan.changes
    assert apply_sync(registry, plan) == []
    assert snapshot(registry) == before


def test_editing_a_partial_moves_what_its_dependents_serve(registry: PromptRegistry, folder: Path) -> None:
    sync(registry, folder)
    write(folder, "shared/safety.prompt", "---\nlabels: [production]\n---\nBe very safe, {{user}}.")
    assert sync(registry, folder) == [
        f"shared/safety: add version 2 (from {folder}/shared/safety.prompt)",
        "shared/safety: label production 1 -> 2",
    ]
    assert text(registry, "b-preamble") == "Be very safe, {{user}}. Write plainly."
    # The pinned reference keeps version 1; the same-label one follows the move.
    assert text(registry, "c-pinned") == "Be safe, {{user}}. / Write plainly. / Be very safe, {{user}}."
    assert registry.get_prompt("b-preamble").latest.version == 1  # type: ignore[union-attr]
    assert sync(registry, folder) == []


def test_a_reference_to_a_version_the_same_sync_adds(registry: PromptRegistry, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "a.prompt", "{{> b@1}} and {{> b@staging}}")
    write(root, "b.prompt", "---\nlabels: [staging]\n---\nB")
    sync(registry, root)
    assert registry.get_version("a", resolve=True).prompt_text == "B and B"


def test_extra_labels_move_on_partials_first(registry: PromptRegistry, folder: Path) -> None:
    steps = sync(registry, folder, labels=["staging"])
    staging = [line.split(":")[0] for line in steps if ": label staging" in line]
    assert staging == ["shared/safety", "style", "b-preamble", "a-bot", "c-pinned"]
    assert text(registry, "a-bot", "staging") == ""  # a chat version: its text is empty, its messages composed
    assert registry.get_version("a-bot", label="staging", resolve=True).partials["shared/safety"] == 1


def test_files_including_each_other_are_refused_before_anything_is_written(
    registry: PromptRegistry, folder: Path
) -> None:
    sync(registry, folder)
    before = snapshot(registry)
    write(folder, "style.prompt", "---\nlabels: [production]\n---\nWrite plainly. {{> b-preamble}}")
    write(folder, "zz-new.prompt", "A new prompt, written before nothing.")
    with pytest.raises(PromptFileError) as caught:
        plan_sync(registry, folder)
    assert caught.value.path == folder / "b-preamble.prompt"
    assert "partials include each other: b-preamble -> style -> b-preamble" in str(caught.value)
    assert "nothing was written" in str(caught.value)
    assert snapshot(registry) == before


def test_a_file_including_itself_is_a_cycle(registry: PromptRegistry, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "me.prompt", "I am {{> me}}")
    with pytest.raises(PromptFileError, match=r"partials include each other: me -> me"):
        plan_sync(registry, root)
    assert registry.list_prompts() == []


def test_a_cycle_through_the_registry_is_refused_before_anything_is_written(
    registry: PromptRegistry, tmp_path: Path
) -> None:
    registry.create_prompt("outer")
    registry.add_version("outer", "Outer.")
    registry.set_label("outer", "production", 1)
    registry.create_prompt("inner")
    registry.add_version("inner", "Inner {{> outer}}")
    registry.set_label("inner", "production", 1)
    root = tmp_path / "prompts"
    write(root, "a-first.prompt", "A file written first, were nothing refused.")
    write(root, "outer.prompt", "---\nlabels: [production]\n---\nOuter {{> inner}}")
    before = snapshot(registry)
    with pytest.raises(PromptFileError, match=r"outer\.prompt: .*partials include each other"):
        plan_sync(registry, root)
    assert snapshot(registry) == before


def test_a_missing_partial_is_refused_naming_the_file(registry: PromptRegistry, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "a-fine.prompt", "Fine.")
    write(root, "bot.prompt", "{{> nobody}} hi")
    with pytest.raises(PromptFileError) as caught:
        plan_sync(registry, root)
    assert caught.value.path == root / "bot.prompt"
    assert isinstance(caught.value.__cause__, PartialNotFoundError)
    assert registry.list_prompts() == []


@pytest.mark.parametrize("body", ['{{> card title="x"}}', "{{> (which)}}", "{{>}}", "{{> _private}}"])
def test_partial_syntax_promptreg_does_not_resolve_is_refused(tmp_path: Path, body: str) -> None:
    path = write(tmp_path, "x.prompt", f"---\nlabels: [production]\n---\nFirst line.\n{body}\n")
    with pytest.raises(PromptFileError, match=r"line 5: .* is not a partial reference promptreg resolves"):
        parse_prompt_file(path, "x")


def test_partial_references_are_kept_as_written(tmp_path: Path) -> None:
    body = "{{>a}} {{> b/c@production }} {{> d@12}}\n"
    parsed = parse_prompt_file(write(tmp_path, "x.prompt", body), "x")
    assert parsed.text == body
    chat = parse_prompt_file(write(tmp_path, "y.prompt", '{{role "system"}}\n{{> a}}\n{{role "user"}}\nQ'), "y")
    assert chat.messages == ({"role": "system", "content": "{{> a}}"}, {"role": "user", "content": "Q"})


def test_a_partial_move_a_dependent_refuses_stops_the_sync(registry: PromptRegistry, folder: Path) -> None:
    sync(registry, folder)
    registry.set_compatibility("b-preamble", "backward")
    write(folder, "shared/safety.prompt", "---\nlabels: [production]\n---\nBe safe, {{user}}, in {{language}}.")
    write(folder, "style.prompt", "---\nlabels: [production]\n---\nWrite very plainly.")
    before = snapshot(registry)
    plan = plan_sync(registry, folder)
    lines = [step.describe() for step in plan.steps]
    assert (
        "shared/safety: label production 1 -> 2  INCOMPATIBLE for b-preamble at production (backward; needs language)"
        in lines
    )
    with pytest.raises(IncompatibleDependentError) as caught:
        apply_sync(registry, plan)
    assert (caught.value.dependent, caught.value.added) == ("b-preamble", ("language",))
    assert snapshot(registry) == before
    # Forced, the moves are made and audited as forced.
    apply_sync(registry, plan, force=True)
    assert text(registry, "b-preamble") == "Be safe, {{user}}, in {{language}}. Write plainly."
    assert registry.history("shared/safety")[-1].forced


def test_order_files_keeps_the_sorted_order_without_partials_and_takes_long_chains(tmp_path: Path) -> None:
    plain = [parse_prompt_file(write(tmp_path, f"{n}.prompt", "x"), n) for n in ("a", "b", "c")]
    assert order_files(plain) == plain
    chain = [parse_prompt_file(write(tmp_path, f"p{i:04}.prompt", f"{{{{> p{i + 1:04}}}}}"), f"p{i:04}")
             for i in range(1500)]  # fmt: skip
    chain.append(parse_prompt_file(write(tmp_path, "p1500.prompt", "leaf"), "p1500"))
    ordered = order_files(chain)
    assert [f.name for f in ordered] == [f.name for f in reversed(chain)]


def test_sync_command_dry_run_shows_the_order_and_the_refusal(run: Cli, tmp_path: Path) -> None:
    root = tmp_path / "prompts"
    write(root, "bot.prompt", "---\nlabels: [production]\n---\n{{> safety}} {{question}}")
    write(root, "safety.prompt", "---\nlabels: [production]\n---\nBe safe.")
    dry = run.ok("sync", str(root), "--dry-run").stdout.splitlines()
    assert [line.split(":")[0] for line in dry[:3]] == ["would safety"] * 3
    run.ok("sync", str(root))
    run.ok("compatibility", "bot", "full")
    write(root, "safety.prompt", "---\nlabels: [production]\n---\nBe safe, {{user}}.")
    before = run.state()
    outcome = run("sync", str(root), "--dry-run")
    assert outcome.code == 1
    assert (
        "would safety: label production 1 -> 2  INCOMPATIBLE for bot at production (full; needs user)" in outcome.stdout
    )
    assert outcome.stderr.startswith("error: moving label production of partial 'safety' would change 'bot'")
    line = run.fails("sync", str(root))
    assert "'bot'" in line and "user" in line
    assert run.state() == before
    forced = run.ok("sync", str(root), "--force", "--json").json()
    assert [s["incompatible"] for s in forced["steps"]] == [False, True]
    write(root, "loop.prompt", "{{> loop}}")
    assert run.fails("sync", str(root)).startswith(f"error: {root}/loop.prompt: partials include each other")
