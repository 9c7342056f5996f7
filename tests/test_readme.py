"""The README's movie-critic example runs as written (on the JSON file backend)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_block_after(heading: str) -> str:
    text = README.read_text("utf-8")
    section = text[text.index(heading) :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def test_movie_critic_example_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PROMPTREG_URL", f"file://{tmp_path / 'registry.json'}")
    namespace: dict[str, object] = {}
    exec(compile(_python_block_after("## The registry in code"), "README.md", "exec"), namespace)
    registry = namespace["registry"]
    prompt = registry.get_prompt("movie-critic")  # type: ignore[attr-defined]
    assert [v.author for v in prompt.versions] == ["alice", "bob", "alice"]
    assert prompt.labels == {"staging": 2, "production": 2}
    actions = [e.action for e in registry.history("movie-critic")]  # type: ignore[attr-defined]
    assert actions.count("rollback") == 1
    assert "v3 rambles" in capsys.readouterr().out
