"""``promptreg rollout`` (start, set, promote, abort, status) and how ``history``, ``show``, ``watch``
and ``fleet --prompt`` show rollouts: click's runner on the JSON file, real Redis and PostgreSQL.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from promptreg.client import ChangeEvent
from promptreg.registry.cli.fleet import _served_at, _served_cell, render_table
from promptreg.registry.cli.live import _describe
from promptreg.registry.factory import PromptRegistryFactory
from promptreg.registry.fleet import FleetMember
from promptreg.registry.models import utcnow
from tests.backends import PROMPTREG, Cli
from tests.redis_server import wait_until

NAME = "movie-critic"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"


@pytest.fixture
def seeded(run: Cli) -> Cli:
    """movie-critic with four versions; production -> 3, staging -> 4."""
    run.ok("create", NAME, "--author", "alice")
    for n in range(1, 5):
        run.ok("push", NAME, "--author", "alice", input=f"v{n}: review {{{{movie}}}}\n")
    run.ok("label", NAME, "production", "3")
    run.ok("label", NAME, "staging", "4")
    return run


def _lines(run: Cli, *args: str) -> list[str]:
    return run.ok(*args).stdout.splitlines()


def test_a_rollout_from_start_to_promotion(seeded: Cli) -> None:
    run = seeded
    started = _lines(run, "rollout", "start", NAME, "production", "4", "--percent", "10", "--author", "carol")
    assert started == [f"{NAME}: production: rollout of v4 started at 10% (stable v3)"]
    assert _lines(run, "rollout", "set", NAME, "production", "--percent", "25") == [
        f"{NAME}: production: rollout of v4 widened to 25% (from 10%)"
    ]
    assert _lines(run, "rollout", "set", NAME, "production", "--percent", "12.5") == [
        f"{NAME}: production: rollout of v4 narrowed to 12.5% (from 25%)"
    ]
    # The label keeps its version while the rollout runs.
    assert run.ok("show", NAME, "--label", "production", "--json").json()["version"] == 3
    assert _lines(run, "rollout", "promote", NAME, "production", "--reason", "looks good") == [
        f"{NAME}: production: rollout of v4 promoted: production 3 -> 4"
    ]
    assert run.ok("show", NAME, "--label", "production", "--json").json()["version"] == 4
    assert _lines(run, "rollout", "status") == ["no rollout running"]
    # A promotion is one label move: rollback undoes it.
    assert _lines(run, "rollback", NAME, "production") == [f"{NAME}: label production 4 -> 3 (rollback)"]


def test_abort_keeps_the_label_where_it_is(seeded: Cli) -> None:
    run = seeded
    run.ok("rollout", "start", NAME, "production", "staging", "--percent", "5")  # VERSION as a label: v4
    assert _lines(run, "rollout", "abort", NAME, "production") == [
        f"{NAME}: production: rollout aborted (candidate v4 dropped, back to v3)"
    ]
    assert run.ok("show", NAME, "--label", "production", "--json").json()["version"] == 3
    assert run.ok("rollout", "status", NAME, "--json").json() == []


def test_json_output_is_the_audit_event(seeded: Cli) -> None:
    run = seeded
    started = run.ok("rollout", "start", NAME, "production", "4", "--percent", "10", "--json").json()
    assert {k: started[k] for k in ("action", "prompt", "label", "version", "previous_version", "percent")} == {
        "action": "start_rollout", "prompt": NAME, "label": "production", "version": 4, "previous_version": 3,
        "percent": 10.0,
    }  # fmt: skip
    changed = run.ok("--json", "rollout", "set", NAME, "production", "--percent", "0.25").json()  # --json before
    assert (changed["action"], changed["version"], changed["percent"]) == ("set_rollout", 4, 0.25)
    assert changed["rev"] == started["rev"] + 1
    aborted = run.ok("rollout", "abort", NAME, "production", "--json", "--author", "dan").json()
    assert (aborted["action"], aborted["version"], aborted["previous_version"]) == ("abort_rollout", 3, 4)
    assert aborted["author"] == "dan"
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "50")
    promoted = run.ok("rollout", "promote", NAME, "production", "--json", "--reason", "ok").json()
    assert (promoted["action"], promoted["version"], promoted["previous_version"]) == ("promote_rollout", 4, 3)
    assert promoted["reason"] == "ok"


def test_status_lists_every_running_rollout(seeded: Cli) -> None:
    run = seeded
    assert _lines(run, "rollout", "status") == ["no rollout running"]
    assert run.ok("rollout", "status", "--json").json() == []
    run.ok("create", "other")
    run.ok("push", "other", "--label", "production", input="a\n")
    run.ok("push", "other", input="b\n")
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "10", "--author", "carol")
    run.ok("rollout", "start", NAME, "staging", "2", "--percent", "99.99", "--force")
    run.ok("rollout", "start", "other", "production", "2", "--percent", "0.01")
    rows = run.ok("rollout", "status", "--json").json()
    assert [(r["prompt"], r["label"], r["stable_version"], r["version"], r["percent"]) for r in rows] == [
        (NAME, "production", 3, 4, 10.0),
        (NAME, "staging", 4, 2, 99.99),
        ("other", "production", 1, 2, 0.01),
    ]
    assert rows[0]["author"] == "carol" and rows[1]["author"] is None and "started_at" in rows[0]
    lines = _lines(run, "rollout", "status")
    assert lines[0].split() == ["PROMPT", "LABEL", "STABLE", "CANDIDATE", "PERCENT", "STARTED", "AUTHOR"]
    assert [line.split()[:5] + line.split()[-1:] for line in lines[1:]] == [
        [NAME, "production", "v3", "v4", "10%", "carol"],
        [NAME, "staging", "v4", "v2", "99.99%", "-"],
        ["other", "production", "v1", "v2", "0.01%", "-"],
    ]
    one = run.ok("rollout", "status", "other", "--json").json()
    assert [(r["prompt"], r["label"]) for r in one] == [("other", "production")]
    run.ok("rollout", "abort", "other", "production")
    assert _lines(run, "rollout", "status", "other") == ["no rollout running on other"]
    assert "not found" in run.fails("rollout", "status", "nope")


def test_refusals_are_one_line_and_write_nothing(seeded: Cli) -> None:
    run = seeded
    before = run.state()
    assert run.fails("rollout", "start", NAME, "canary", "4", "--percent", "10") == (
        f"error: prompt '{NAME}' has no label 'canary'"
    )
    assert "did you mean 'production'" in run.fails("rollout", "start", NAME, "prod", "4", "--percent", "10")
    assert "not found" in run.fails("rollout", "start", "nope", "production", "4", "--percent", "10")
    assert "has no version 9" in run.fails("rollout", "start", NAME, "production", "9", "--percent", "10")
    assert "nothing to roll out" in run.fails("rollout", "start", NAME, "production", "3", "--percent", "10")
    for command in (["set", NAME, "production", "--percent", "20"], ["promote", NAME, "production"],
                    ["abort", NAME, "production"]):  # fmt: skip
        assert run.fails("rollout", *command) == f"error: label 'production' of prompt '{NAME}' has no rollout running"
    assert run.state() == before
    run.ok("label", NAME, "production", "2")
    run.ok("label", NAME, "production", "3")  # so that rollback has somewhere to go
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "10")
    running = f"error: label 'production' of prompt '{NAME}' has a rollout running (candidate version 4)"
    assert run.fails("rollout", "start", NAME, "production", "2", "--percent", "10").startswith(running)
    assert run.fails("label", NAME, "production", "2").startswith(running)  # a plain move waits for the end
    assert run.fails("rollback", NAME, "production").startswith(running)


@pytest.mark.parametrize("percent", ["0", "100", "10.125", "abc", "-5", "nan", "inf", "1e999999999", "10.12000001"])
def test_a_bad_percent_is_a_usage_error(seeded: Cli, percent: str) -> None:
    run = seeded
    before = run.state()
    shown = run.fails("rollout", "start", NAME, "production", "4", "--percent", percent, code=2)
    assert "Invalid value for '--percent'" in shown and repr(percent) in shown
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "10")
    assert "Invalid value for '--percent'" in run.fails("rollout", "set", NAME, "production", "--percent", percent,
                                                        code=2)  # fmt: skip
    run.ok("rollout", "abort", NAME, "production")
    assert [e for e in run.state()[0]["labels"].items()] == [e for e in before[0]["labels"].items()]


def test_percent_is_read_as_written(seeded: Cli) -> None:
    run = seeded
    for given, stored in (("10%", 10.0), ("7", 7.0), ("99.99", 99.99), ("0.01", 0.01), ("12.50", 12.5)):
        event = run.ok("rollout", "start", NAME, "production", "4", "--percent", given, "--json").json()
        assert event["percent"] == stored
        run.ok("rollout", "abort", NAME, "production")
    assert "Missing option '--percent'" in run.fails("rollout", "start", NAME, "production", "4", code=2)


def test_wait_confirms_like_label(seeded: Cli) -> None:
    run = seeded
    out = _lines(run, "rollout", "start", NAME, "production", "4", "--percent", "10", "--wait", "1")
    assert out[0] == f"{NAME}: production: rollout of v4 started at 10% (stable v3)"
    assert out[1].startswith("reached 0 of 0 clients in ")  # nobody reports here
    data = run.ok("rollout", "set", NAME, "production", "--percent", "20", "--wait", "--json").json()
    assert data["action"] == "set_rollout" and data["fleet"]["complete"] is True
    assert data["fleet"]["rev"] == data["rev"]
    assert _lines(run, "rollout", "promote", NAME, "production", "--wait", "0.5")[1].startswith("reached 0 of 0")


def test_options_after_the_subcommand(seeded: Cli) -> None:
    url = seeded.env["PROMPTREG_URL"]
    other = Cli({"PROMPTREG_URL": "file:///nonexistent/x.json", "PROMPTREG_NAMESPACE": ""}, seeded.cwd)
    other.ok("rollout", "start", NAME, "production", "4", "--percent", "10", "--url", url,
             "--namespace", seeded.env["PROMPTREG_NAMESPACE"])  # fmt: skip
    rows = other.ok("rollout", "status", "--url", url, "--namespace", seeded.env["PROMPTREG_NAMESPACE"], "--json")
    assert [r["version"] for r in rows.json()] == [4]


def test_history_and_show_describe_rollouts(seeded: Cli) -> None:
    run = seeded
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "10", "--author", "carol", "--reason", "canary")
    run.ok("rollout", "set", NAME, "production", "--percent", "25")
    shown = run.ok("show", NAME).stdout
    assert re.search(rf"^rollout: production: stable v3 75%, candidate v4 25% \(started {STAMP} by carol\)$",
                     shown, re.M), shown  # fmt: skip
    run.ok("rollout", "promote", NAME, "production")
    run.ok("rollout", "start", NAME, "production", "2", "--percent", "5", "--force")
    run.ok("rollout", "abort", NAME, "production")
    tail = [line.split("  ", 1)[1] for line in _lines(run, "history", NAME)[-5:]]
    assert [" ".join(line.split()[3:]) for line in tail] == [
        "production: rollout of v4 started at 10% (stable v3) (canary)",
        "production: rollout of v4 widened to 25% (from 10%)",
        "production: rollout of v4 promoted: production 3 -> 4",
        "production: rollout of v2 started at 5% (stable v4)",
        "production: rollout aborted (candidate v2 dropped, back to v4)",
    ]
    assert tail[0].split()[2] == "carol"
    assert "rollout:" not in run.ok("show", NAME).stdout
    actions = [e["action"] for e in run.ok("history", NAME, "--json").json()[-5:]]
    assert actions == ["start_rollout", "set_rollout", "promote_rollout", "start_rollout", "abort_rollout"]


def test_fleet_prompt_shows_the_split(seeded: Cli) -> None:
    run = seeded
    run.ok("rollout", "start", NAME, "production", "4", "--percent", "12.5")
    lines = _lines(run, "fleet", "--prompt", NAME)
    assert lines[:2] == [f"{NAME} production: stable v3 87.5%, candidate v4 12.5%", f"{NAME} staging: v4"]
    assert lines[2].startswith("no client reports to this registry")  # nobody reports here
    assert run.ok("fleet", "--prompt", NAME, "--json").json() == []
    assert _lines(run, "fleet")[0].startswith("no client reports")  # without --prompt: as before
    assert "not found" in run.fails("fleet", "--prompt", "nope")


def test_fleet_table_shows_what_each_client_serves_of_a_rollout(tmp_path: Path) -> None:
    registry = PromptRegistryFactory.create_from_config({"PROMPTREG_URL": f"file://{tmp_path / 'r.json'}"})
    try:
        registry.create_prompt(NAME)
        for n in (1, 2, 3):
            registry.add_version(NAME, f"v{n}")
        before = registry.set_label(NAME, "production", 1).rev
        started = registry.start_rollout(NAME, "production", 2, 10).rev
        widened = registry.set_rollout(NAME, "production", 30).rev
        promoted = registry.promote_rollout(NAME, "production").rev
        restarted = registry.start_rollout(NAME, "production", 3, 5).rev
        aborted = registry.abort_rollout(NAME, "production").rev
        events = registry.history(NAME)
    finally:
        registry.close()
    served = [_served_at(events, "production", rev) for rev in (before, started, widened, promoted, restarted, aborted)]
    assert served == [(1, None), (1, (2, 10.0)), (1, (2, 30.0)), (2, None), (2, (3, 5.0)), (2, None)]
    assert _served_at(events, "latest", started) == (3, None)
    now = utcnow()
    member = FleetMember(client_id="a", client_name="web", host="h", pid=1, label="production", library_version="1",
                         state="live", rev=widened, started_at=now, last_seen=now, report_interval=1.0)  # fmt: skip
    table = render_table([member], {"a": _served_cell(*served[2])})
    assert table.splitlines()[1].endswith("  1 (v2 30%)")


# -- watch ---------------------------------------------------------------------------------------


def test_watch_words_every_rollout_step() -> None:
    known: dict[tuple[str, str], tuple[int, float]] = {}

    def say(version: int | None, previous: int | None, rollout: tuple[int, float] | None, rev: int) -> str:
        return _describe(ChangeEvent(NAME, "production", version, previous, rev, rollout=rollout), known)

    assert say(3, 3, (4, 10.0), 7) == f"rev 7  {NAME}: production: rollout of v4 started at 10% (stable v3)"
    assert say(3, 3, (4, 25.0), 8) == f"rev 8  {NAME}: production: rollout of v4 widened to 25% (from 10%)"
    assert say(4, 3, None, 9) == f"rev 9  {NAME}: production: rollout of v4 promoted: production 3 -> 4"
    assert say(5, 4, None, 10) == f"rev 10  {NAME}: label production 4 -> 5"
    assert say(5, 5, (2, 5.0), 11) == f"rev 11  {NAME}: production: rollout of v2 started at 5% (stable v5)"
    assert say(5, 5, None, 12) == f"rev 12  {NAME}: production: rollout aborted (candidate v2 dropped, back to v5)"
    assert known == {}
    known[NAME, "production"] = (6, 50.0)  # a rollout running when the watch began
    assert say(5, 5, (6, 20.0), 13) == f"rev 13  {NAME}: production: rollout of v6 narrowed to 20% (from 50%)"


def test_watch_prints_rollouts_as_they_happen(tmp_path: Path) -> None:
    env = {"PROMPTREG_URL": f"file://{tmp_path / 'r.json'}"}
    registry = PromptRegistryFactory.create_from_config(env)
    registry.create_prompt(NAME)
    for n in (1, 2):
        registry.add_version(NAME, f"v{n}")
    registry.set_label(NAME, "production", 1)
    process = subprocess.Popen([str(PROMPTREG), "watch", NAME], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, cwd=tmp_path, text=True)  # fmt: skip
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    errors: list[str] = []
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = process.stdout, process.stderr

    def pump_out() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=lambda: errors.extend(stderr), daemon=True).start()
    got: list[str] = []
    try:
        assert wait_until(lambda: any("watching" in e for e in errors) or process.poll() is not None, timeout=30)
        assert process.poll() is None, errors
        steps: list[tuple[Callable[[], object], str]] = [
            (lambda: registry.start_rollout(NAME, "production", 2, 10), "production: rollout of v2 started at 10%"),
            (lambda: registry.set_rollout(NAME, "production", 40), "production: rollout of v2 widened to 40%"),
            (lambda: registry.promote_rollout(NAME, "production"), "production: rollout of v2 promoted"),
        ]
        for write, expected in steps:  # one at a time: a file watcher may merge writes into one reload
            write()
            assert wait_until(lambda: _arrived(lines, got, expected), timeout=10), (got, errors)  # noqa: B023
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
        registry.close()
    assert code == 0 and "Traceback" not in "".join(errors)


def _arrived(lines: queue.SimpleQueue[str], got: list[str], expected: str) -> bool:
    return _drain(lines, got) > 0 and expected in got[-1]


def _drain(lines: queue.SimpleQueue[str], into: list[str]) -> int:
    while True:
        try:
            into.append(lines.get_nowait())
        except queue.Empty:
            return len(into)
