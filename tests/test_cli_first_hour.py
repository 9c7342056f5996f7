"""The first hour without traps, through the ``promptreg`` command on a JSON file and real Redis.

- ``sync --dry-run`` exits as the real sync would: 1, with the same refusal line, when a label move
  would be refused; nothing is written either way.
- A size limit is named as it is (1048576, "1 MiB"), for a file and for stdin, one byte over or more.
- A leading UTF-8 byte order mark is dropped from a file, stdin, a ``.prompt`` file (whose front
  matter then still applies) and an import file.
- An unknown label gets "did you mean" wherever the CLI reports it.

Every refusal is one ``error:`` line on stderr, exit code 1, and leaves the stored data unchanged.
"""

from __future__ import annotations

import codecs
import json
from pathlib import Path

import pytest

from promptreg.registry.validation import MAX_TEXT_BYTES
from tests.backends import Cli
from tests.redis_server import RedisServer

BOM = codecs.BOM_UTF8


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def run(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Cli:
    if request.param == "file":
        return Cli({"PROMPTREG_URL": f"file://{tmp_path / 'registry.json'}", "PROMPTREG_NAMESPACE": ""}, tmp_path)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Cli({"PROMPTREG_URL": server.url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)


# -- sync --dry-run fails as the sync would ------------------------------------------------------------


@pytest.fixture
def incompatible_folder(run: Cli, tmp_path: Path) -> Path:
    """``critic`` under backward compatibility with production -> 1; the folder moves production to a
    version that needs a new variable, which the mode refuses."""
    run.ok("create", "critic", "--compatibility", "backward")
    run.ok("push", "critic", "--label", "production", input="Do you like {{movie}}?\n")
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "critic.prompt").write_text("---\nlabels: [production]\n---\nAs a {{level}} critic, {{movie}}?\n")
    (folder / "other.prompt").write_text("Fine {{x}}\n")
    return folder


def test_sync_dry_run_exits_1_with_the_refusal_line_the_sync_prints(run: Cli, incompatible_folder: Path) -> None:
    before = run.state()

    real = run.fails("sync", str(incompatible_folder))
    dry = run("sync", str(incompatible_folder), "--dry-run")

    assert run.state() == before
    assert dry.code == 1, dry
    assert dry.stderr.splitlines() == [real]
    assert real == (
        "error: prompt 'critic': label production 1 -> 2 refused under backward compatibility: "
        "version 2 needs level, which version 1 does not take (force to move anyway)"
    )
    assert "would critic: label production 1 -> 2  INCOMPATIBLE (backward; needs level)" in dry.stdout
    assert "would other: create prompt" in dry.stdout  # the whole plan is still shown


def test_sync_dry_run_json_also_exits_1_and_force_exits_0(run: Cli, incompatible_folder: Path) -> None:
    before = run.state()

    as_json = run("sync", str(incompatible_folder), "--dry-run", "--json")
    forced = run("sync", str(incompatible_folder), "--dry-run", "--force")

    assert as_json.code == 1 and as_json.stderr.startswith("error: prompt 'critic': label production 1 -> 2 refused")
    plan = as_json.json()
    assert plan["dry_run"] is True
    assert [s["label"] for s in plan["steps"] if s["incompatible"]] == ["production"]
    assert forced.code == 0 and forced.stderr == "", forced  # --force would make the move: so the dry run passes
    assert run.state() == before
    # ... and the real run with --force does what its dry run said.
    run.ok("sync", str(incompatible_folder), "--force")
    assert run.ok("show", "critic", "-l", "production", "--json").json()["version"] == 2


def test_sync_dry_run_without_refusal_still_exits_0(run: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "critic.prompt").write_text("---\nlabels: [production]\n---\nDo you like {{movie}}?\n")

    assert "would critic: label production unset -> 1" in run.ok("sync", str(folder), "--dry-run").stdout
    assert run.state() == []


# -- size limits, named as they are -------------------------------------------------------------------

LIMIT = MAX_TEXT_BYTES  # 1 MiB, the default


@pytest.mark.parametrize("over", [1, 2, LIMIT])
def test_size_limit_message_for_a_file(run: Cli, tmp_path: Path, over: int) -> None:
    run.ok("create", "p")
    big = tmp_path / "big.txt"
    big.write_bytes(b"x" * (LIMIT + over))
    before = run.state()

    line = run.fails("push", "p", "--file", str(big))

    assert line == f"error: {big}: prompt text is {LIMIT + over} bytes, the limit is 1048576 (1 MiB)"
    assert run.state() == before


@pytest.mark.parametrize("over", [1, 2, LIMIT])
def test_size_limit_message_for_stdin(run: Cli, over: int) -> None:
    run.ok("create", "p")
    before = run.state()

    line = run.fails("push", "p", input=b"x" * (LIMIT + over))

    assert line == "error: stdin: prompt text is over 1048576 bytes (1 MiB), the limit is 1048576"
    assert run.state() == before


def test_text_of_exactly_the_limit_is_accepted_from_a_file_and_stdin(run: Cli, tmp_path: Path) -> None:
    run.ok("create", "p")
    exact = tmp_path / "exact.txt"
    exact.write_bytes(BOM + b"y" * LIMIT)  # the byte order mark is dropped, so it does not count

    run.ok("push", "p", "--file", str(exact))
    run.ok("push", "p", input=b"z" * LIMIT)

    versions = [v["prompt_text"] for v in run.state()[0]["versions"]]
    assert versions == ["y" * LIMIT, "z" * LIMIT]


# -- a leading byte order mark is dropped -------------------------------------------------------------


def test_bom_is_dropped_from_a_file_and_stdin(run: Cli, tmp_path: Path) -> None:
    run.ok("create", "p")
    source = tmp_path / "windows.txt"
    source.write_bytes(BOM + "Caf\u00e9 {{x}}\r\nbye\r\n".encode())

    from_file = run.ok("push", "p", "--file", str(source), "--json").json()
    from_stdin = run.ok("push", "p", "--json", input=BOM + b"Hello {{name}}\n").json()

    assert from_file["prompt_text"] == "Caf\u00e9 {{x}}\nbye\n"
    assert from_stdin["prompt_text"] == "Hello {{name}}\n"
    assert "\ufeff" not in json.dumps(run.state(), ensure_ascii=False)
    # Only the leading mark is dropped: one inside the text is content.
    inside = run.ok("push", "p", "--json", input=BOM + "a\ufeffb".encode()).json()
    assert inside["prompt_text"] == "a\ufeffb"


def test_bom_in_a_prompt_file_keeps_its_front_matter(run: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    text = "---\r\nlabels: [production]\r\nmetadata: {model: gpt-4o}\r\n---\r\nDo you like {{movie}}?\r\n"
    (folder / "critic.prompt").write_bytes(BOM + text.encode())

    run.ok("sync", str(folder))

    shown = run.ok("show", "critic", "-l", "production", "--json").json()
    assert shown["prompt_text"] == "Do you like {{movie}}?\n"
    assert shown["metadata"] == {"model": "gpt-4o"}
    assert "already up to date" in run.ok("sync", str(folder)).stdout


def test_bom_in_an_import_file_and_a_messages_file(run: Cli, tmp_path: Path) -> None:
    run.ok("create", "critic")
    run.ok("push", "critic", "--label", "production", input="Do you like {{movie}}?\n")
    export = tmp_path / "export.json"
    run.ok("export", str(export))
    target = Cli({"PROMPTREG_URL": f"file://{tmp_path / 'target.json'}"}, tmp_path)
    with_bom = tmp_path / "export-bom.json"
    with_bom.write_bytes(BOM + export.read_bytes())

    target.ok("import", str(with_bom))
    target.ok("create", "chat")
    messages = tmp_path / "messages.json"
    messages.write_bytes(BOM + json.dumps([{"role": "system", "content": "Be brief."}]).encode())
    target.ok("push", "chat", "--messages", str(messages))

    assert target.ok("show", "critic", "-l", "production", "--json").json()["prompt_text"] == "Do you like {{movie}}?\n"
    assert target.ok("show", "chat", "--json").json()["messages"] == [{"role": "system", "content": "Be brief."}]


# -- did you mean, for labels -------------------------------------------------------------------------


@pytest.fixture
def labelled(run: Cli) -> Cli:
    """``critic`` with versions 1-3, staging -> 2, production -> 3 (moved there from 2)."""
    run.ok("create", "critic")
    run.ok("push", "critic", input="one {{movie}}\n")
    run.ok("push", "critic", "--label", "staging", "--label", "production", input="two {{movie}}\n")
    run.ok("push", "critic", input="three {{movie}}\n")
    run.ok("label", "critic", "production", "3")
    return run


LABEL_TYPOS = [
    (("render", "critic", "--label", "prod", "--var", "movie=Up"), "prod", "'production'"),
    (("show", "critic", "-l", "stagin"), "stagin", "'staging'"),
    (("show", "critic", "--label", "Production", "--text"), "Production", "'production'"),
    (("rollback", "critic", "prodution"), "prodution", "'production'"),
    (("label", "critic", "prod", "--delete"), "prod", "'production'"),
    (("label", "critic", "canary", "stagign"), "stagign", "'staging'"),  # VERSION given as a label
    (("diff", "critic", "1", "prod"), "prod", "'production'"),
]


@pytest.mark.parametrize(("args", "typo", "suggestion"), LABEL_TYPOS, ids=[" ".join(t[0][:3]) for t in LABEL_TYPOS])
def test_unknown_label_gets_did_you_mean(labelled: Cli, args: tuple[str, ...], typo: str, suggestion: str) -> None:
    before = labelled.state()

    line = labelled.fails(*args)

    assert line == f"error: prompt 'critic' has no label {typo!r} (did you mean {suggestion}?)"
    assert labelled.state() == before


def test_no_suggestion_when_no_label_is_close(labelled: Cli) -> None:
    assert labelled.fails("show", "critic", "-l", "gold") == "error: prompt 'critic' has no label 'gold'"
    assert labelled.fails("render", "critic", "-l", "p") == "error: prompt 'critic' has no label 'p'"


def test_prompt_names_get_a_prefix_suggestion_too(labelled: Cli) -> None:
    assert labelled.fails("show", "crit") == "error: prompt 'crit' not found (did you mean 'critic'?)"
    assert labelled.fails("show", "critci") == "error: prompt 'critci' not found (did you mean 'critic'?)"
