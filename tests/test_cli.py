"""The ``promptreg`` command: click's runner and real subprocesses, on the JSON file and real Redis.

Tests pick the registry the way users do: ``PROMPTREG_URL`` and (for Redis) ``PROMPTREG_NAMESPACE``
in the environment, so every test on the shared redis-server has a namespace of its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import pytest

from tests.backends import PROMPTREG, Cli
from tests.redis_server import RedisServer, free_port

V1 = "As a movie critic, do you like {{movie}}?\n"
V2 = "As a {{criticlevel}} movie critic, do you like {{movie}}?\n"
V3 = "You are a {{criticlevel}} movie critic. Write a review for {{movie}}.\n"


@pytest.fixture
def seeded(run: Cli) -> Cli:
    """The seed's movie-critic: three versions, staging -> 2, production -> 3."""
    run.ok("create", "movie-critic", "--description", "Reviews a movie", "--author", "alice")
    run.ok("push", "movie-critic", "--author", "alice", "-m", "first", input=V1)
    run.ok("push", "movie-critic", "--author", "bob", "--label", "staging", input=V2)
    run.ok("push", "movie-critic", "--author", "alice", "--label", "production", "--metadata", "temperature=0.7",
           "--metadata", "model=gpt-4o", input=V3)  # fmt: skip
    return run


def test_whole_workflow(seeded: Cli, tmp_path: Path) -> None:
    run = seeded
    shown = run.ok("show", "movie-critic", "--label", "production", "--json").json()
    assert shown["version"] == 3
    assert shown["prompt_text"] == V3
    assert shown["author"] == "alice"
    assert shown["metadata"] == {"temperature": 0.7, "model": "gpt-4o"}
    assert {"created_at", "message"} <= shown.keys()
    assert run.ok("show", "movie-critic", "--version", "1", "--json").json()["message"] == "first"
    assert run.ok("show", "movie-critic", "--text").stdout == V3
    human = run.ok("show", "movie-critic", "-l", "staging").stdout
    assert "movie-critic version 2  [staging]" in human and V2 in human

    rendered = run.ok(
        "render", "movie-critic", "-l", "production", "--var", "movie=Alien", "--var", "criticlevel=harsh"
    )
    assert rendered.stdout == "You are a harsh movie critic. Write a review for Alien.\n"
    as_json = run.ok("render", "movie-critic", "-v", "1", "--var", "movie=Up", "--json").json()
    assert as_json == {"name": "movie-critic", "version": 1, "text": "As a movie critic, do you like Up?\n"}

    moved = run.ok("label", "movie-critic", "production", "2", "--author", "carol", "--reason", "bad", "--json").json()
    assert (moved["label"], moved["previous_version"], moved["version"]) == ("production", 3, 2)
    rolled = run.ok("rollback", "movie-critic", "production", "--author", "carol").stdout.strip()
    assert rolled == "movie-critic: label production 2 -> 3 (rollback)"
    assert (
        run.ok("label", "movie-critic", "canary", "staging").stdout.strip() == "movie-critic: label canary unset -> 2"
    )
    run.ok("label", "movie-critic", "canary", "--delete", "--expect", "2")

    listed = run.ok("list", "--json").json()
    assert listed == [
        {
            "name": "movie-critic",
            "description": "Reviews a movie",
            "author": "alice",
            "created_at": listed[0]["created_at"],
            "labels": {"production": 3, "staging": 2},
            "compatibility": "none",
            "rollouts": {},
            "latest": 3,
        }
    ]
    assert run.ok("list").stdout == "movie-critic  latest=3  production=3 staging=2\n"

    events = run.ok("history", "movie-critic", "--json").json()
    assert [e["action"] for e in events] == [
        "create_prompt", "add_version", "add_version", "set_label", "add_version", "set_label",
        "set_label", "rollback", "set_label", "delete_label",
    ]  # fmt: skip
    assert events[6]["author"] == "carol" and events[6]["reason"] == "bad"
    assert [e["rev"] for e in events] == sorted(e["rev"] for e in events)
    text = run.ok("history", "movie-critic").stdout
    assert "version 1: first" in text and "set_label production 3 -> 2  (bad)" in text and "carol" in text

    diff = run.ok("diff", "movie-critic", "staging", "3").stdout
    assert diff.startswith("--- movie-critic@2\n+++ movie-critic@3\n")
    assert "-" + V2 in diff and "+" + V3 in diff
    assert 'metadata: {} -> {"model": "gpt-4o", "temperature": 0.7}' in diff
    same = run("diff", "movie-critic", "production", "latest")
    assert same.code == 0 and same.stdout == "" and "identical" in same.stderr
    diff_json = run.ok("diff", "movie-critic", "1", "2", "--json").json()
    assert (diff_json["from_version"], diff_json["to_version"]) == (1, 2)
    assert "+" + V2 in diff_json["diff"]


def test_push_from_file_and_create_json(run: Cli, tmp_path: Path) -> None:
    created = run.ok("create", "team/critic", "--json").json()
    assert created["name"] == "team/critic" and created["versions"] == [] and created["labels"] == {}
    source = tmp_path / "critic.txt"
    source.write_text("Caf\u00e9 {{x}}\n", encoding="utf-8")
    pushed = run.ok("push", "team/critic", "--file", str(source), "--metadata", 'tags=["a", "b"]', "--json").json()
    assert pushed["version"] == 1
    assert pushed["prompt_text"] == "Caf\u00e9 {{x}}\n"
    assert pushed["metadata"] == {"tags": ["a", "b"]}


def test_author_from_environment(run: Cli) -> None:
    run.env["PROMPTREG_AUTHOR"] = "ci-bot"
    run.ok("create", "p")
    run.ok("push", "p", "--label", "production", input="x")
    events = run.ok("history", "p", "--json").json()
    assert {e["author"] for e in events} == {"ci-bot"}


def test_sync_command(run: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    (folder / "team").mkdir(parents=True)
    (folder / "movie-critic.prompt").write_text("---\nlabels: [production]\n---\n" + V3)
    (folder / "team" / "triage.prompt").write_text("Triage {{ticket}}\n")

    plan = run.ok("sync", str(folder), "--dry-run")
    assert "would movie-critic: create prompt" in plan.stdout
    assert run.state() == []
    dry = run.ok("sync", str(folder), "--dry-run", "--json").json()
    assert dry["dry_run"] is True and dry["files"] == 2 and len(dry["steps"]) == 5

    done = run.ok("sync", str(folder), "--label", "staging", "--author", "ci", "--json").json()
    assert [s["action"] for s in done["steps"]].count("set_label") == 3
    assert run.ok("show", "team/triage", "-l", "staging", "--json").json()["author"] == "ci"
    assert "already up to date" in run.ok("sync", str(folder), "--label", "staging").stdout

    (folder / "team" / "triage.prompt").write_text("---\nlables: [x]\n---\nTriage\n")
    before = run.state()
    line = run.fails("sync", str(folder))
    assert str(folder / "team" / "triage.prompt") in line and "lables" in line
    assert run.state() == before


def test_example_prompts_sync(run: Cli) -> None:
    folder = Path(__file__).resolve().parent.parent / "examples" / "prompts"
    run.ok("sync", str(folder))
    assert "movie-critic" in run.ok("list").stdout
    assert "already up to date" in run.ok("sync", str(folder)).stdout


def test_export_import_round_trip_file_to_redis(tmp_path: Path, redis_server: RedisServer, namespace: str) -> None:
    source = Cli({"PROMPTREG_URL": f"file://{tmp_path / 'dev.json'}"}, tmp_path)
    source.ok("create", "movie-critic", "--description", "Reviews", "--author", "alice")
    for text, author in ((V1, "alice"), (V2, "bob"), (V3, "alice")):
        source.ok("push", "movie-critic", "--author", author, "-m", f"by {author}", "--metadata", "t=1", input=text)
    source.ok("label", "movie-critic", "production", "3")
    source.ok("label", "movie-critic", "staging", "2")
    export = tmp_path / "backup.json"
    source.ok("export", str(export))

    target = Cli({"PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)
    dry = target.ok("import", str(export), "--dry-run", "--json").json()
    assert dry["dry_run"] is True and len(dry["steps"]) == 6 and target.state() == []
    target.ok("import", str(export))

    def content(prompts: Any) -> Any:
        keep = ("version", "prompt_text", "author", "metadata", "message")
        return [
            (p["name"], p["description"], p["labels"], [{k: v[k] for k in keep} for v in p["versions"]])
            for p in prompts
        ]

    assert content(target.state()) == content(source.state())
    rev = redis_server.client().get("{" + namespace + "}:rev")
    again = target.ok("import", str(export))
    assert "nothing to do" in again.stdout
    assert redis_server.client().get("{" + namespace + "}:rev") == rev


def test_import_refuses_conflicting_content(run: Cli, tmp_path: Path) -> None:
    export = tmp_path / "backup.json"
    run.ok("create", "a")
    run.ok("push", "a", input="one")
    run.ok("export", str(export))
    other = Cli({"PROMPTREG_URL": f"file://{tmp_path / 'other.json'}"}, tmp_path)
    other.ok("create", "a")
    other.ok("push", "a", input="something else")
    before = other.state()

    line = other.fails("import", str(export))

    assert "version 1 differs" in line
    assert other.state() == before


def test_export_to_stdout_is_the_json(seeded: Cli) -> None:
    data = seeded.ok("export", "-").json()
    assert data["format"] == "promptreg-export"
    assert [p["name"] for p in data["prompts"]] == ["movie-critic"]
    assert len(data["history"]["movie-critic"]) == 6


# -- real subprocesses -----------------------------------------------------------------------------


@pytest.fixture(params=["file", pytest.param("redis", marks=pytest.mark.redis)])
def proc(request: pytest.FixtureRequest, tmp_path: Path, namespace: str) -> Cli:
    """``promptreg`` as a real process (exit codes, stdin, stderr), on the file and on Redis: what a
    process adds does not depend on the backend, which the in-process runs cover on each."""
    if request.param == "file":
        env = {"PROMPTREG_URL": f"file://{tmp_path / 'registry.json'}", "PROMPTREG_NAMESPACE": ""}
    else:
        env = {"PROMPTREG_URL": request.getfixturevalue("redis_server").url, "PROMPTREG_NAMESPACE": namespace}
    return Cli(env, tmp_path, subprocess_mode=True)


def test_subprocess_workflow(proc: Cli) -> None:
    proc.ok("create", "movie-critic", "--author", "alice")
    proc.ok("push", "movie-critic", "--label", "production", input=V1)
    proc.ok("push", "movie-critic", input=V2)
    proc.ok("label", "movie-critic", "production", "2", "--expect", "1")
    assert proc.ok("show", "movie-critic", "-l", "production", "--json").json()["prompt_text"] == V2
    assert proc.ok("rollback", "movie-critic", "production", "--json").json()["version"] == 1
    out = proc.ok("render", "movie-critic", "-l", "production", "--var", "movie=Heat").stdout
    assert out == "As a movie critic, do you like Heat?\n"
    assert "points at version 1" in proc.fails("label", "movie-critic", "production", "2", "--expect", "2")
    assert "Usage:" in proc.fails("show", code=2)


def test_python_dash_m_and_default_url(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREG_")}
    args = [sys.executable, "-m", "promptreg.registry.cli"]
    created = subprocess.run([*args, "create", "x"], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert created.returncode == 0, created
    # the default URL is ./.promptreg/registry.json in the current directory
    assert (tmp_path / ".promptreg" / "registry.json").is_file()
    listed = subprocess.run([*args, "list", "--json"], capture_output=True, env=env, cwd=tmp_path, timeout=60)
    assert json.loads(listed.stdout)[0]["name"] == "x"


# -- every error path: exit code, one line, no traceback, nothing written ----------------------------

ERRORS: list[tuple[tuple[str, ...], str | bytes | None, int, str]] = [
    (("show", "nope"), None, 1, "prompt 'nope' not found"),
    (("show", "movie-critic", "-v", "9"), None, 1, "has no version 9"),
    (("show", "movie-critic", "-l", "gold"), None, 1, "has no label 'gold'"),
    (("create", "movie-critic"), None, 1, "already exists"),
    (("create", "bad name"), None, 1, "invalid prompt name"),
    (("push", "nope"), "x", 1, "prompt 'nope' not found"),
    (("push", "movie-critic"), "  \n", 1, "prompt text is empty"),
    (("push", "movie-critic"), b"caf\xe9", 1, "not UTF-8"),
    (("push", "movie-critic", "--file", "missing.txt"), None, 1, "missing.txt: No such file or directory"),
    (("push", "movie-critic", "--label", "latest"), "x", 1, "reserved"),
    (("push", "movie-critic", "--metadata", "k=" + "x" * 70_000), "x", 1, "metadata is"),
    (("label", "movie-critic", "production", "9"), None, 1, "has no version 9"),
    (("label", "movie-critic", "production", "1", "--expect", "2"), None, 1, "points at version 3"),
    (("label", "movie-critic", "gold", "--delete"), None, 1, "has no label 'gold'"),
    (("rollback", "movie-critic", "staging"), None, 1, "no earlier version"),
    (("render", "movie-critic"), None, 1, "missing template variables: criticlevel, movie"),
    (("history", "nope"), None, 1, "prompt 'nope' not found"),
    (("diff", "movie-critic", "1", "gold"), None, 1, "has no label 'gold'"),
    (("sync", "no-such-dir"), None, 1, "not a directory"),
    (("import", "missing.json"), None, 1, "missing.json: No such file or directory"),
    (("import", "-"), "{not json", 1, "not a JSON export"),
    (("import", "-"), '{"format": "other"}', 1, "not a promptreg export"),
    (("export", "no-such-dir/x.json"), None, 1, "No such file or directory"),
    (("--url", "ftp://host/x", "list"), None, 1, "unsupported registry URL scheme 'ftp'"),
    (("--url", "redis://localhost:1/0", "--namespace", "bad ns", "list"), None, 1, "invalid namespace"),
    (("show", "movie-critic", "-l", "a", "-v", "1"), None, 2, "not both"),
    (("show", "movie-critic", "-v", "0"), None, 2, "Invalid value for '--version'"),
    (("label", "movie-critic", "production"), None, 2, "missing VERSION"),
    (("label", "movie-critic", "production", "1", "--delete"), None, 2, "not both"),
    (("push", "movie-critic", "--metadata", "novalue"), "x", 2, "expected KEY=VALUE"),
    (("render", "movie-critic", "--var", "movie"), None, 2, "expected KEY=VALUE"),
    (("frobnicate",), None, 2, "No such command"),
]


@pytest.mark.parametrize(("args", "stdin", "code", "message"), ERRORS, ids=[" ".join(e[0])[:40] for e in ERRORS])
def test_error_paths(seeded: Cli, args: tuple[str, ...], stdin: str | bytes | None, code: int, message: str) -> None:
    before = seeded.state()

    line = seeded.fails(*args, input=stdin, code=code)

    assert message in line
    assert seeded.state() == before


def test_corrupt_registry_file_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{definitely not a registry")
    run = Cli({"PROMPTREG_URL": f"file://{broken}"}, tmp_path)

    line = run.fails("list")

    assert "error: " in line
    assert broken.read_text() == "{definitely not a registry"


@pytest.mark.parametrize("mode", ["runner", "subprocess"])
def test_password_is_never_printed(tmp_path: Path, mode: str) -> None:
    url = f"redis://user:sekret-pw@127.0.0.1:{free_port()}/0"
    run = Cli({"PROMPTREG_URL": url}, tmp_path, subprocess_mode=mode == "subprocess")

    line = run.fails("list")
    helped = run("--help")

    assert "redis is unreachable" in line
    assert "sekret-pw" not in line
    assert helped.code == 0 and "sekret-pw" not in helped.stdout + helped.stderr


def test_subprocess_errors_have_no_traceback(proc: Cli) -> None:
    proc.ok("create", "movie-critic")
    assert proc.fails("show", "nope") == "error: prompt 'nope' not found"
    assert proc.fails("show", "movie-critc") == "error: prompt 'movie-critc' not found (did you mean 'movie-critic'?)"
    assert proc.fails("push", "nope", input="x") == "error: prompt 'nope' not found"
    assert "No such command" in proc.fails("nope", code=2)


# -- watch ---------------------------------------------------------------------------------------


def _open_registry(env: dict[str, str]) -> Any:
    from promptreg.registry.factory import PromptRegistryFactory

    return PromptRegistryFactory.create_from_config(env)


@pytest.mark.parametrize("as_json", [False, True])
def test_watch_prints_changes_until_interrupted(backend_env: dict[str, str], tmp_path: Path, as_json: bool) -> None:
    import queue
    import signal
    import threading

    from tests.redis_server import wait_until

    registry = _open_registry(backend_env)
    registry.create_prompt("movie-critic")
    registry.add_version("movie-critic", V1)
    registry.create_prompt("other")
    args = [str(PROMPTREG), "watch", "movie-critic", *(["--json"] if as_json else [])]
    env = {**os.environ, **backend_env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path, text=True)
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    errors: list[str] = []
    assert process.stdout is not None and process.stderr is not None
    stdout, stderr = process.stdout, process.stderr

    def pump_out() -> None:
        for line in stdout:
            lines.put(line)

    def pump_err() -> None:
        for line in stderr:
            errors.append(line)

    threading.Thread(target=pump_out, daemon=True).start()
    threading.Thread(target=pump_err, daemon=True).start()
    try:
        assert wait_until(lambda: any("watching" in e for e in errors) or process.poll() is not None, timeout=30)
        assert process.poll() is None, errors
        registry.add_version("other", "not watched")
        registry.set_label("movie-critic", "production", 1, author="carol")
        registry.add_version("movie-critic", V2)

        got: list[str] = []
        assert wait_until(lambda: _drain(lines, got) >= 2, timeout=10), (got, errors)
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=15)
        registry.close()
    assert code == 0
    assert "Traceback" not in "".join(errors)
    # A file watcher may see both writes in one reload, so the order is not asserted.
    if as_json:
        events = [json.loads(line) for line in got]
        assert {(e["name"], e["label"], e["version"], e["previous_version"]) for e in events} == {
            ("movie-critic", "production", 1, None),
            ("movie-critic", "latest", 2, 1),
        }
        assert all(isinstance(e["rev"], int) for e in events)
    else:
        assert sorted(line.split("  ", 1)[1].strip() for line in got) == [
            "movie-critic: label production unset -> 1",
            "movie-critic: new version 2",
        ]


def _drain(lines: Any, into: list[str]) -> int:
    import queue

    while True:
        try:
            into.append(lines.get_nowait())
        except queue.Empty:
            return len(into)


def test_watch_unreachable_registry_is_one_line(tmp_path: Path) -> None:
    run = Cli({"PROMPTREG_URL": f"redis://:sekret-pw@127.0.0.1:{free_port()}/0"}, tmp_path, subprocess_mode=True)
    line = run.fails("watch", "--timeout", "1")
    assert line.startswith("error: cannot watch redis://:***@127.0.0.1:")


def test_cli_consistency(run: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "typo.json"
    # A mistyped file path says so on reads instead of showing an empty registry.
    assert "no registry file at" in run.fails("list", "--url", f"file://{missing}")
    assert not missing.exists()
    run.ok("create", "movie-critic")
    pushed = run.ok("push", "movie-critic", "--label", "production", "--json", input=V1).json()
    assert pushed["version"] == 1
    moves = [(m["label"], m["previous_version"], m["version"]) for m in pushed["label_moves"]]
    assert moves == [("production", None, 1)]
    # --json before or after the command; --url / --namespace after it too.
    url, namespace = run.env["PROMPTREG_URL"], run.env["PROMPTREG_NAMESPACE"]
    before = run.ok("--json", "show", "movie-critic").json()
    after = run.ok("show", "movie-critic", "--json").json()
    assert before == after and before["version"] == 1
    elsewhere = Cli({"PROMPTREG_URL": f"file://{tmp_path / 'other.json'}"}, tmp_path)
    shown = elsewhere.ok("show", "movie-critic", "--url", url, "--namespace", namespace or "promptreg", "--json")
    assert shown.json()["version"] == 1
    # A rollback of a label that does not exist says so.
    assert run.fails("rollback", "movie-critic", "canary") == "error: prompt 'movie-critic' has no label 'canary'"


def test_the_command_line_loads_no_driver_until_a_backend_needs_it() -> None:
    # `promptreg` on the JSON file (the default) and `--help` start without redis-py, psycopg or the
    # client: each process of a CI job or a shell loop pays only for what it uses.
    script = (
        "import sys, promptreg.registry.cli\n"
        "print(sorted(m for m in ('redis', 'psycopg', 'promptreg.client') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_demo_server_choices_are_the_demos() -> None:
    from promptreg.registry.cli.demo import SERVER_CHOICES
    from promptreg.registry.cli.live import demo

    server = next(p for p in demo.params if p.name == "server")
    assert isinstance(server.type, click.Choice) and tuple(server.type.choices) == SERVER_CHOICES
