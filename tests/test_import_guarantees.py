"""``import`` validates everything the target would refuse before its first write.

On every backend of the contract suite (fakeredis, a real redis-server, the JSON file, a Redis
Cluster, PostgreSQL):

- a label move the target prompt's compatibility mode refuses is in the plan, and the import (and
  its dry run) stops before writing anything unless forced; a deleted label is checked too;
- a NUL character in a text field of the export is refused by the plan, before the first write;
- an error while the import writes (a label moved after the plan) leaves nothing written on
  PostgreSQL (one transaction) and, on Redis and the JSON file, names the writes already made.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import pytest

from promptreg.registry import (
    IncompatibleVersionError,
    InvalidInputError,
    JsonFilePromptRegistry,
    LabelConflictError,
    PostgresPromptRegistry,
    PromptRegistry,
)
from promptreg.registry.backup import ImportPlan, apply_import, export_registry, plan_import
from promptreg.registry.errors import ImportConflictError
from tests.backends import Backend, Cli, dump, refused

V1 = "Do you like {{movie}}?\n"
V2 = "As a {{level}} critic, do you like {{movie}}?\n"  # needs level: backward refuses 1 -> 2


def _export(tmp_path: Path, *, production: int = 2, mode: Any = "backward") -> dict[str, Any]:
    """An export of ``critic`` (versions V1, V2; production -> ``production``)."""
    source = JsonFilePromptRegistry(tmp_path / "source.json")
    source.create_prompt("critic", compatibility=mode)
    source.add_version("critic", V1)
    source.add_version("critic", V2)
    source.set_label("critic", "production", production)
    return export_registry(source)


def _target(reg: PromptRegistry) -> None:
    reg.create_prompt("critic", compatibility="backward")
    reg.add_version("critic", V1)
    reg.set_label("critic", "production", 1)


# -- compatibility -------------------------------------------------------------------------------------


def test_import_refuses_an_incompatible_label_move_before_writing(
    backend: Backend, reg: PromptRegistry, tmp_path: Path
) -> None:
    _target(reg)
    plan = plan_import(reg, _export(tmp_path))
    assert [s.describe() for s in plan.steps] == [
        "critic: add version 2",
        "critic: label production 1 -> 2  INCOMPATIBLE (backward; needs level)",
    ]
    with pytest.raises(IncompatibleVersionError) as checked:
        plan.check_compatible()

    applied = refused(backend, reg, IncompatibleVersionError, lambda: apply_import(reg, plan))

    assert str(applied) == str(checked.value)
    assert isinstance(applied, IncompatibleVersionError) and (applied.current, applied.version) == (1, 2)
    assert len(reg.history("critic")) == 3 and reg.get_version("critic", label="production").version == 1
    plan.check_compatible(force=True)
    apply_import(reg, plan, author="ops", reason="restore", force=True)
    event = reg.history("critic")[-1]
    assert event.forced and (event.version, event.previous_version, event.author) == (2, 1, "ops")


def test_import_checks_a_deleted_label_against_where_it_pointed(
    backend: Backend, reg: PromptRegistry, tmp_path: Path
) -> None:
    _target(reg)
    reg.delete_label("critic", "production")
    plan = plan_import(reg, _export(tmp_path))
    move = plan.steps[-1]
    assert move.previous_version is None and move.refusal is not None and move.refusal.current_version == 1
    refused(backend, reg, IncompatibleVersionError, lambda: apply_import(reg, plan))
    assert "production" not in (reg.get_prompt("critic") or pytest.fail()).labels


def test_import_of_compatible_moves_still_passes(reg: PromptRegistry, tmp_path: Path) -> None:
    _target(reg)
    plan = plan_import(reg, _export(tmp_path, production=1))
    assert [s.describe() for s in plan.steps] == ["critic: add version 2"]
    plan.check_compatible()
    apply_import(reg, plan)
    assert len((reg.get_prompt("critic") or pytest.fail()).versions) == 2


def test_import_dry_run_exits_1_with_the_line_the_import_prints(run: Cli, tmp_path: Path) -> None:
    run.ok("create", "critic", "--compatibility", "backward")
    run.ok("push", "critic", "--label", "production", input=V1)
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export(tmp_path)))
    before = run.state()

    dry = run("import", str(export), "--dry-run")
    real = run.fails("import", str(export))

    assert run.state() == before
    assert dry.code == 1 and dry.stderr.splitlines() == [real], dry
    assert "would critic: label production 1 -> 2  INCOMPATIBLE (backward; needs level)" in dry.stdout
    assert "refused under backward compatibility" in real and "level" in real
    as_json = run("import", str(export), "--dry-run", "--json")
    assert as_json.code == 1
    assert [s["incompatible"] for s in as_json.json()["steps"]] == [False, True]


# -- what a backend would refuse: refused by the plan ------------------------------------------------------


@pytest.mark.parametrize("field", ["prompt_text", "author", "message", "description"])
def test_a_nul_in_a_later_prompt_is_refused_before_the_first_write(
    backend: Backend, reg: PromptRegistry, tmp_path: Path, field: str
) -> None:
    source = JsonFilePromptRegistry(tmp_path / "source.json")
    source.create_prompt("a-first", description="fine")
    source.add_version("a-first", "Fine {{x}}")
    source.set_label("a-first", "production", 1)
    source.create_prompt("b-second")
    source.add_version("b-second", "Also fine", author="ann", message="first")
    data = export_registry(source)
    second = data["prompts"][1]
    if field == "description":
        second["description"] = "bad \x00 description"
    else:
        second["versions"][0][field] = "bad \x00 value"
    reg.create_prompt("existing")
    before = dump(reg)

    with pytest.raises(InvalidInputError, match=r"prompt 'b-second': .*NUL character \(U\+0000\)"):
        plan_import(reg, data)

    assert dump(reg) == before


# -- an error while writing ----------------------------------------------------------------------------


def _racing_plan(reg: PromptRegistry, tmp_path: Path, race: str) -> ImportPlan:
    """A plan of 5 writes (a: create, version, label; b: version 2, label 1 -> 2) that meets, at b, a
    write made after the plan: ``label`` deletes b's production, ``version`` adds a version to b."""
    source = JsonFilePromptRegistry(tmp_path / "source.json")
    for name in ("a", "b"):
        source.create_prompt(name)
        source.add_version(name, f"{name} one")
    source.add_version("b", "b two")
    source.set_label("a", "production", 1)
    source.set_label("b", "production", 2)
    reg.create_prompt("b")
    reg.add_version("b", "b one")
    reg.set_label("b", "production", 1)
    plan = plan_import(reg, export_registry(source))
    assert [s.describe() for s in plan.steps] == [
        "a: create prompt",
        "a: add version 1",
        "a: label production unset -> 1",
        "b: add version 2",
        "b: label production 1 -> 2",
    ]
    if race == "label":
        reg.delete_label("b", "production", author="someone")
    else:
        reg.add_version("b", "b other", author="someone")
    return plan


@pytest.mark.parametrize("race", ["label", "version"])
def test_an_error_during_the_import_says_what_was_written(
    reg: PromptRegistry, tmp_path: Path, race: Literal["label", "version"]
) -> None:
    plan = _racing_plan(reg, tmp_path, race)
    before = dump(reg)
    error: type[Exception] = LabelConflictError if race == "label" else ImportConflictError

    with pytest.raises(error) as caught:
        apply_import(reg, plan)

    message = str(caught.value)
    if isinstance(reg, PostgresPromptRegistry):  # one transaction: all or nothing
        assert "import stopped: nothing was written" in message
        assert dump(reg) == before
        return
    if race == "label":
        written = ["a: create prompt", "a: add version 1", "a: label production unset -> 1", "b: add version 2"]
    else:  # b's new version was stored, under the number the other writer left free
        written = ["a: create prompt", "a: add version 1", "a: label production unset -> 1", "b: add version 3"]
    told = "import stopped after 4 write(s), which stay made (each is complete; running the import again continues"
    assert f"{told} from there): {'; '.join(written)})" in message
    assert reg.list_prompts() == ["a", "b"]
    assert len((reg.get_prompt("b") or pytest.fail()).versions) == (3 if race == "version" else 2)
