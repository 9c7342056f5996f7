"""The command line on partials (``{{> name}}``): ``show``/``render`` resolve them at the label (``--raw``:
as stored), ``show --dependents``, ``list --uses``, ``check`` listing the dependents a move changes,
``label --force`` (also ``--delete``), ``history`` with the partials' moves, and every refusal as one
``error:`` line, exit 1, nothing written. On the JSON file, real Redis and PostgreSQL (``backend_env``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.backends import Cli

SAFETY_V1 = "Be safe, {{user}}."
SAFETY_V2 = "Be very safe, {{user}}."
BOT = "{{> safety}} Answer {{question}}."


@pytest.fixture
def composed(run: Cli) -> Cli:
    """``safety`` (v1 production, v2 staging), ``style`` (v1 production), ``preamble`` (both, v1
    production) and ``bot`` (includes ``safety``; production and staging at v1; mode backward)."""
    for name in ("safety", "style", "preamble", "chatty", "pinned"):
        run.ok("create", name)
    run.ok("push", "safety", "--label", "production", input=SAFETY_V1)
    run.ok("push", "safety", "--label", "staging", input=SAFETY_V2)
    run.ok("push", "style", "--label", "production", "--label", "staging", input="Write plainly.")
    run.ok("push", "preamble", "--label", "production", input="{{> safety}} {{> style@1}}")
    run.ok("create", "bot", "--compatibility", "backward")
    run.ok("push", "bot", "--label", "production", "--label", "staging", input=BOT)
    return run


def _unchanged(run: Cli, *args: str, input: str | None = None) -> str:
    """Run a command that must be refused: one error line, exit 1, and the registry as it was."""
    before = run.state()
    line = run.fails(*args, input=input)
    assert run.state() == before
    return line


def test_show_resolves_partials_at_the_label_and_raw_shows_the_stored_text(composed: Cli) -> None:
    run = composed
    assert run.ok("show", "bot", "-l", "production", "--text").stdout == "Be safe, {{user}}. Answer {{question}}."
    assert run.ok("show", "bot", "-l", "staging", "--text").stdout == "Be very safe, {{user}}. Answer {{question}}."
    assert run.ok("show", "bot", "-l", "production", "--raw", "--text").stdout == BOT
    human = run.ok("show", "bot", "-l", "production").stdout
    assert "variables: question, user" in human
    assert "partials: safety v1 (resolved at production)" in human
    raw = run.ok("show", "bot", "-l", "production", "--raw").stdout
    assert "variables: question\n" in raw and "includes: {{> safety}} (not resolved: --raw)" in raw
    data = run.ok("show", "preamble", "-l", "production", "--json").json()
    assert data["prompt_text"] == "Be safe, {{user}}. Write plainly."
    assert data["partials"] == {"safety": 1, "style": 1}
    assert run.ok("show", "preamble", "-l", "production", "--raw", "--json").json().get("partials", {}) == {}
    # A version number (or no label) resolves at latest, as the registry API does.
    assert run.ok("show", "bot", "--version", "1", "--json").json()["partials"] == {"safety": 2}


def test_render_resolves_partials_and_says_which_in_json(composed: Cli) -> None:
    run = composed
    rendered = run.ok("render", "bot", "-l", "production", "--var", "user=Ann", "--var", "question=why").stdout
    assert rendered == "Be safe, Ann. Answer why.\n"
    data = run.ok("render", "bot", "-l", "staging", "--var", "user=Ann", "--var", "question=q", "--json").json()
    assert data == {"name": "bot", "version": 1, "text": "Be very safe, Ann. Answer q.", "partials": {"safety": 2}}
    # A prompt without partials keeps its JSON as it was.
    assert "partials" not in run.ok("render", "style", "--json").json()
    line = run.fails("render", "bot", "-l", "production", "--var", "question=q")
    assert line == "error: missing template variables: user"


def test_show_dependents_at_any_depth_and_by_label(composed: Cli) -> None:
    run = composed
    run.ok("push", "pinned", "--label", "production", input="{{> safety@1}} {{> preamble}}")
    assert run.ok("show", "safety", "--dependents").stdout.splitlines() == [
        "prompts including safety:",
        "  bot  production=1 staging=1",
        "  pinned  production=1",
        "  preamble  production=1",
    ]
    data = run.ok("show", "style", "--dependents", "--json").json()
    assert data == {"name": "style", "label": None,
                    "dependents": {"pinned": {"production": 1}, "preamble": {"production": 1}}}  # fmt: skip
    assert (
        run.ok("show", "style", "--dependents").stdout.splitlines()[1] == "  pinned  production=1  (through preamble)"
    )
    assert run.ok("show", "safety", "--dependents", "-l", "staging", "--json").json()["dependents"] == {
        "bot": {"staging": 1}
    }
    assert run.ok("show", "bot", "--dependents").stdout == "no prompt includes bot\n"
    assert "--dependents takes --label only" in run.fails("show", "safety", "--dependents", "--raw", code=2)
    assert run.fails("show", "nobody", "--dependents") == "error: prompt 'nobody' not found"


def test_list_uses_a_partial(composed: Cli) -> None:
    run = composed
    assert run.ok("list", "--uses", "safety").stdout.splitlines() == [
        "bot  latest=1  production=1 staging=1  (includes safety at production, staging)",
        "preamble  latest=1  production=1  (includes safety at production)",
    ]
    listed = run.ok("list", "--uses", "style", "--json").json()
    assert [(p["name"], p["includes_at"]) for p in listed] == [("preamble", {"production": 1})]
    assert run.ok("list", "--uses", "bot").stdout == "no prompt includes bot\n"
    assert "includes_at" not in run.ok("list", "--json").json()[0]
    assert run.fails("list", "--uses", "nobody") == "error: prompt 'nobody' not found"


def test_check_lists_the_dependents_and_exits_1_when_one_refuses(composed: Cli) -> None:
    run = composed
    run.ok("push", "safety", input="Be safe, {{user}}, in {{language}}.")  # v3 needs a new variable
    outcome = run("check", "safety", "production", "3")
    assert outcome.code == 1, outcome
    assert outcome.stdout.splitlines() == [
        "safety: label production 1 -> 3: compatible (mode none)",
        "  needs: language",
        "  prompts including safety at production: 2",
        "    bot at production (v1): INCOMPATIBLE (mode backward): needs language",
        "    preamble at production (v1): compatible (mode none): needs language",
    ]
    data = run("check", "safety", "production", "3", "--json").json()
    rows = {row["dependent"]: row for row in data["dependents"]}
    assert (rows["bot"]["compatible"], rows["bot"]["added"], rows["bot"]["mode"]) == (False, ["language"], "backward")
    assert rows["preamble"]["compatible"] and rows["preamble"]["error"] is None
    # staging is followed by bot only; v2 -> v1 keeps the interface: exit 0.
    passing = run.ok("check", "safety", "staging", "1").stdout.splitlines()
    assert passing[-1] == "    bot at staging (v1): compatible (mode backward)"
    # A prompt nobody includes: the check prints what it always did.
    assert run.ok("check", "style", "staging", "1").stdout == "style: label staging 1 -> 1: compatible (mode none)\n"


def test_a_partial_move_refused_names_the_dependent_and_the_variable(composed: Cli) -> None:
    run = composed
    run.ok("push", "safety", input="Be safe, {{user}}, in {{language}}.")
    line = _unchanged(run, "label", "safety", "production", "3")
    assert line.startswith("error: moving label production of partial 'safety' would change 'bot' at production")
    assert "backward compatibility refuses" in line and "language" in line and "force" in line
    moved = run.ok("label", "safety", "production", "3", "--force", "--json").json()
    assert moved["forced"] and moved["version"] == 3
    assert "language" in run.ok("show", "bot", "-l", "production").stdout
    # The rollback is checked the same way (v1 drops language, which backward accepts).
    assert run.ok("rollback", "safety", "production").stdout.strip() == "safety: label production 3 -> 1 (rollback)"


def test_deleting_a_partials_label_needs_force(composed: Cli) -> None:
    run = composed
    line = _unchanged(run, "label", "safety", "staging", "--delete")
    assert line == (
        "error: moving label staging of 'safety' would leave it unresolved: prompt 'bot' at staging includes "
        "{{> safety}}: partial 'safety' has no label 'staging' (--force to move anyway)"
    )
    deleted = run.ok("label", "safety", "staging", "--delete", "--force", "--json").json()
    assert deleted["forced"] and deleted["action"] == "delete_label"
    line = run.fails("show", "bot", "-l", "staging")
    assert line.endswith("partial 'safety' has no label 'staging' (--raw shows the version as stored)")
    assert run.ok("show", "bot", "-l", "staging", "--raw", "--text").stdout == BOT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{{> nobody}}", "error: prompt 'bot' includes {{> nobody}}: partial 'nobody' does not exist"),
        ("{{> safety@9}}", "error: prompt 'bot' includes {{> safety}}: partial 'safety' has no version 9"),
        ("{{> safety@canary}}", "error: prompt 'bot' includes {{> safety}}: partial 'safety' has no label 'canary'"),
        ("{{> bot}}", "error: prompt 'bot': partials include each other: bot -> bot"),
        ("{{> chatty}}", "error: prompt 'bot' cannot include 'chatty': 'chatty' v1 is a chat prompt"),
    ],
)
def test_refusals_at_write_time_are_one_line(composed: Cli, tmp_path: Any, text: str, message: str) -> None:
    run = composed
    messages = tmp_path / "chat.json"
    messages.write_text('[{"role": "system", "content": "hi"}]', encoding="utf-8")
    run.ok("push", "chatty", "--messages", str(messages), "--label", "production")
    assert _unchanged(run, "push", "bot", input=text) == message


def test_a_dependent_moved_to_a_label_its_partial_lacks(composed: Cli) -> None:
    run = composed
    line = _unchanged(run, "label", "bot", "canary", "1")
    assert line.endswith("partial 'safety' has no label 'canary' (--force to move anyway)")
    assert run.ok("label", "bot", "canary", "1", "--force").stdout == "bot: label canary unset -> 1\n"


def test_rollouts_refuse_compositions(composed: Cli) -> None:
    run = composed
    run.ok("push", "safety", input="Be safe.")
    line = _unchanged(run, "rollout", "start", "safety", "production", "3", "--percent", "10")
    assert line.startswith("error: prompt 'bot' cannot include 'safety': label 'production' of 'safety' is included")
    run.ok("push", "bot", input=BOT + "!")
    line = _unchanged(run, "rollout", "start", "bot", "production", "2", "--percent", "10")
    assert "includes partials: a rollout cannot split a composition" in line


def test_history_shows_the_partials_moves_on_the_dependents_timeline(composed: Cli) -> None:
    run = composed
    run.ok("label", "safety", "production", "2", "--author", "carol", "--reason", "stricter")
    run.ok("label", "safety", "staging", "1")  # staging: followed by bot, not by preamble
    run.ok("label", "style", "staging", "1")  # nobody follows style's staging
    lines = [line.split("  ", 1)[1] for line in run.ok("history", "bot").stdout.splitlines()]
    assert [line.split(None, 3)[3] for line in lines[-2:]] == [
        "partial safety: set_label production 1 -> 2  (stricter)",
        "partial safety: set_label staging 2 -> 1",
    ]
    assert "carol" in lines[-2]
    own = run.ok("history", "bot", "--no-partials").stdout
    assert "partial" not in own and own.count("\n") == 4  # created, version 1, two labels
    events = run.ok("history", "bot", "--json").json()
    assert [e["rev"] for e in events] == sorted(e["rev"] for e in events)
    partial = [e for e in events if e.get("partial")]
    assert [(e["prompt"], e["label"], e["version"]) for e in partial] == [("safety", "production", 2),
                                                                       ("safety", "staging", 1)]  # fmt: skip
    assert all("partial" not in e for e in events if e["prompt"] == "bot")
    # preamble follows safety and style at production only (style at its pinned v1: nothing).
    preamble = run.ok("history", "preamble").stdout
    assert "partial safety: set_label production 1 -> 2" in preamble and "staging" not in preamble
    # Moves made before the prompt existed are not its history.
    run.ok("create", "late")
    run.ok("push", "late", "--label", "production", input="{{> safety}}")
    assert "partial" not in run.ok("history", "late").stdout


def test_wait_after_a_partial_move(composed: Cli) -> None:
    run = composed
    outcome = run("label", "safety", "production", "2", "--wait", "0.5")
    assert outcome.code == 0, outcome
    moved, reached = outcome.stdout.splitlines()
    assert moved == "safety: label production 1 -> 2" and reached.startswith("reached 0 of 0 clients in ")
    data = run("label", "safety", "production", "1", "--wait", "0.5", "--json").json()
    assert data["fleet"]["complete"] and data["version"] == 1


def test_sync_orders_partials_first_from_the_command_line(run: Cli, tmp_path: Any) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "a-bot.prompt").write_text("---\nlabels: [production]\n---\n{{> z-safety}} Hi {{name}}.", "utf-8")
    (folder / "z-safety.prompt").write_text("---\nlabels: [production]\n---\nBe safe.", "utf-8")
    out = run.ok("sync", str(folder)).stdout.splitlines()
    assert out[:3] == ["z-safety: create prompt", f"z-safety: add version 1 (from {folder}/z-safety.prompt)",
                       "z-safety: label production unset -> 1"]  # fmt: skip
    assert run.ok("show", "a-bot", "-l", "production", "--text").stdout == "Be safe. Hi {{name}}."
    assert run.ok("sync", str(folder)).stdout.endswith("registry already up to date\n")


def test_check_compares_the_composed_interface_as_the_move_does(composed: Cli) -> None:
    run = composed
    run.ok("create", "tone")
    run.ok("push", "tone", "--label", "production", input="Be {{tone}}.")
    run.ok("push", "bot", input="{{> safety}} {{> tone}} Answer {{question}}.")  # v2: needs tone, composed
    outcome = run("check", "bot", "production", "2")
    assert outcome.code == 1, outcome
    assert outcome.stdout.splitlines() == [
        "bot: label production 1 -> 2: INCOMPATIBLE (mode backward)",
        "  needs: tone",  # check_compatibility compares the composed interfaces, as the move does
    ]
    data = run("check", "bot", "production", "2", "--json").json()
    assert (data["compatible"], data["added"], data["composed_error"]) == (False, ["tone"], None)
    assert "needs tone" in _unchanged(run, "label", "bot", "production", "2")
    # At a label its partial lacks, the move is refused unless forced.
    refused = run("check", "bot", "staging", "2")
    assert refused.code == 1 and refused.stdout.splitlines() == [
        "bot: label staging 1 -> 2: REFUSED (mode backward)",
        "  composed with its partials: REFUSED: prompt 'bot' at staging includes {{> tone}}: partial 'tone' has no "
        "label 'staging'",
    ]


def test_render_of_a_prompt_left_without_its_partial(composed: Cli) -> None:
    run = composed
    run.ok("label", "safety", "staging", "--delete", "--force")
    line = run.fails("render", "bot", "-l", "staging", "--var", "question=q")
    assert line == "error: prompt 'bot' at staging includes {{> safety}}: partial 'safety' has no label 'staging'"
