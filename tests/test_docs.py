"""The README and the manual run as written.

- Every ```python block in README.md and docs/*.md runs, in order, one namespace per file, in a fresh
  working directory with no ``PROMPTREG_*`` variables (so the registry is the local JSON file). A
  block that needs a real deployment (a Redis host, a service of yours) says so in an HTML comment
  right above it: ``<!-- doc-test: skip (why) -->``.
- A ```console block preceded by ``<!-- doc-test: run -->`` runs line by line: each ``$ command`` runs in
  bash, must exit 0, and must print exactly the lines the block shows under it (timestamps aside).
- Every relative link in them points at a file that exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from client import PromptClient

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "CONTRIBUTING.md"]
BLOCK = re.compile(r"(?:<!-- doc-test: (?P<mark>\w+)[^>]*-->\n)?```(?P<lang>\w+)[^\n]*\n(?P<body>.*?)```", re.S)
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ")


def _blocks(page: Path, lang: str) -> list[tuple[str | None, str]]:
    text = page.read_text("utf-8")
    return [(m.group("mark"), m.group("body")) for m in BLOCK.finditer(text) if m.group("lang") == lang]


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROMPTREG_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_and_the_manual_have_code_to_run() -> None:
    assert sum(len(_blocks(page, "python")) for page in PAGES) >= 5
    assert any(mark == "run" for page in PAGES for mark, _ in _blocks(page, "console"))
    assert len(ROOT.joinpath("README.md").read_text("utf-8").splitlines()) <= 200


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "python")], ids=lambda p: p.name)
def test_python_blocks_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("PROMPTREG_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": f"doc_{page.stem}"}
    ran = 0
    try:
        for index, (mark, body) in enumerate(_blocks(page, "python")):
            if mark == "skip":
                continue
            exec(compile(body, f"{page.name} python block {index + 1}", "exec"), namespace)
            ran += 1
    finally:
        for value in namespace.values():  # stop the clients the page started (threads, sockets)
            if isinstance(value, PromptClient):
                value.close()
    assert ran, f"every python block of {page.name} is skipped"


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(m == "run" for m, _ in _blocks(p, "console"))], ids=lambda p: p.name
)
def test_console_walkthroughs_print_what_they_show(page: Path, tmp_path: Path) -> None:
    for mark, body in _blocks(page, "console"):
        if mark != "run":
            continue
        steps: list[tuple[str, list[str]]] = []
        for line in body.splitlines():
            if line.startswith("$ "):
                steps.append((line[2:], []))
            else:
                steps[-1][1].append(line)
        for command, shown in steps:
            done = subprocess.run(
                ["bash", "-c", command], capture_output=True, text=True, cwd=tmp_path, env=_clean_env(), timeout=60
            )
            assert done.returncode == 0, (command, done.stderr)
            printed = TIMESTAMP.sub("<time>", done.stdout).splitlines()
            assert printed == [TIMESTAMP.sub("<time>", line) for line in shown], command


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files(page: Path) -> None:
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text("utf-8")):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
