"""The README and the manual run as written, in order, page by page.

Every ```python, ```bash, ```sh and ```console block of README.md, docs/*.md and CONTRIBUTING.md runs,
in the order of the page, in one fresh working directory per page (it stands for a clone: ``.venv``
and ``examples`` there link to the running environment and the repository's examples), with no
``PROMPTREG_*`` variables, so the registry is the local JSON file unless a block says otherwise:

- ```python blocks run in one namespace per page;
- ```bash and ```sh blocks run whole in ``bash -euo pipefail`` and must exit 0;
- ```console blocks run line by line: each ``$ command`` runs in bash and must print exactly the lines
  shown under it (timestamps aside), or, shown without output, exit 0; a command that shows
  ``error: ...`` must fail with that line.

A page that uses ``$REDIS_URL`` (or ``$ADMIN_URL``) or ``$POSTGRES_URL`` gets a real server of its own,
started by the test, whose URL is in that variable (the pages say what to put there in real use).
The only blocks that do not run carry ``<!-- doc-test: skip (REASON) -->`` right above them, and the
reason is one of :data:`SKIP_REASONS`: what needs Docker, a CI service, this test suite itself, or a
full-size benchmark run. ```text, ```yaml, ```json and unmarked blocks are shown output or file
contents, not commands. Every relative link points at a file that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from promptreg.client import PromptClient

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]
BLOCK = re.compile(
    r"(?:<!-- doc-test: (?P<mark>\w+)(?: \((?P<why>[^)]*)\))? -->\n)?```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)```", re.S
)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")
RUNNABLE = ("python", "bash", "sh", "console")
SKIP_REASONS = (
    "docker",  # needs a Docker engine
    "ci-workflow",  # runs in a CI service, on its own machine
    "the test suite",  # make test itself, or what it already runs
    "benchmark",  # a full-size benchmark run takes minutes; the test suite runs each one small
    "install",  # installs into the environment; tests/test_packaging.py builds and installs the wheel
)


class Block:
    """One fenced block of a page."""

    def __init__(self, match: re.Match[str]) -> None:
        self.mark: str | None = match.group("mark")
        self.why: str = match.group("why") or ""
        self.lang: str = match.group("lang")
        self.body: str = match.group("body")


def _blocks(page: Path) -> list[Block]:
    return [Block(m) for m in BLOCK.finditer(page.read_text("utf-8"))]


def _runnable(page: Path) -> list[Block]:
    return [b for b in _blocks(page) if b.lang in RUNNABLE and b.mark != "skip"]


def test_the_readme_and_the_manual_have_code_to_run() -> None:
    assert sum(1 for page in PAGES for b in _runnable(page) if b.lang == "python") >= 5
    assert sum(1 for page in PAGES for b in _runnable(page) if b.lang == "console") >= 3
    assert len(ROOT.joinpath("README.md").read_text("utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_skipped_block_says_why_from_the_known_reasons(page: Path) -> None:
    for block in _blocks(page):
        assert block.mark in (None, "skip", "run"), f"{page.name}: unknown doc-test mark {block.mark!r}"
        if block.mark == "skip":
            assert block.why.startswith(SKIP_REASONS), f"{page.name}: skip needs a reason from {SKIP_REASONS}"


def _page_env(page: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREG_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    text = "\n".join(b.body for b in _runnable(page))
    if "REDIS_URL" in text or "ADMIN_URL" in text:
        server = request.getfixturevalue("private_redis_server")
        env["REDIS_URL"] = env["ADMIN_URL"] = server.url
    if "POSTGRES_URL" in text:
        server = request.getfixturevalue("private_postgres_server")
        env["POSTGRES_URL"] = server.url()
    return env


def _console(body: str, cwd: Path, env: dict[str, str]) -> None:
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            assert steps, f"console output before any command: {line!r}"
            steps[-1][1].append(line)
    for command, shown in steps:
        done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)
        if shown and shown[0].startswith("error: "):
            assert done.returncode != 0, (command, done.stdout)
            printed = done.stderr.splitlines()
        else:
            assert done.returncode == 0, (command, done.stderr)
            printed = done.stdout.splitlines()
        if not shown:  # a command shown without its output only has to succeed
            continue
        assert [TIMESTAMP.sub("<time>", line) for line in printed] == [
            TIMESTAMP.sub("<time>", line) for line in shown
        ], command


@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: p.name)
def test_every_block_of_the_page_runs_in_order(
    page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    env = _page_env(page, request)
    for key in [k for k in os.environ if k.startswith("PROMPTREG_")]:
        monkeypatch.delenv(key)
    for key in ("REDIS_URL", "ADMIN_URL", "POSTGRES_URL"):
        if key in env:
            monkeypatch.setenv(key, env[key])
    (tmp_path / ".venv").symlink_to(sys.prefix, target_is_directory=True)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{page.stem}"}
    try:
        for index, block in enumerate(_runnable(page), start=1):
            where = f"{page.name} {block.lang} block {index}"
            if block.lang == "python":
                exec(compile(block.body, where, "exec"), namespace)
            elif block.lang == "console":
                _console(block.body, tmp_path, env)
            else:
                done = subprocess.run(
                    ["bash", "-euo", "pipefail", "-c", block.body],
                    capture_output=True,
                    text=True,
                    cwd=tmp_path,
                    env=env,
                    timeout=300,
                )
                assert done.returncode == 0, (where, done.stdout[-2000:], done.stderr[-2000:])
    finally:
        for value in namespace.values():  # stop the clients the page started (threads, sockets)
            if isinstance(value, PromptClient):
                value.close()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text("utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
