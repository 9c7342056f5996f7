"""The wheel: one top-level package, ``promptreg``, that imports beside an application's own
``client.py`` and ``registry/``; the Lua scripts and type markers inside it; no test launchers."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PIP_CONSTRAINT": str(ROOT / "requirements.lock"), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
        env=env,
    )
    (built,) = out.glob("promptreg_live-*.whl")
    return built


def test_the_only_top_level_package_is_promptreg(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"promptreg"}
    lua = {p.name for p in (ROOT / "registry" / "redis" / "lua").glob("*.lua")}
    assert lua and {f"promptreg/registry/redis/lua/{n}" for n in lua} <= set(names)
    assert {"promptreg/py.typed", "promptreg/registry/py.typed", "promptreg/client/py.typed"} <= set(names)
    console = {"promptreg/registry/cli/serve/static/console.js", "promptreg/registry/cli/serve/static/console.css"}
    assert console | {"promptreg/registry/cli/serve/app.py"} <= set(names)  # promptreg serve and its console
    modules = {name for name in names if name.endswith(".py")}
    assert "promptreg/registry/redis/store.py" in modules
    assert "promptreg/client/postgres/feed.py" in modules
    assert not [name for name in modules if "local_ha" in name or "local_postgres" in name or "/tests/" in name]
    entry_points = (
        zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    )
    assert "promptreg = promptreg.registry.cli:main" in entry_points


def test_installed_promptreg_imports_beside_an_application_client_and_registry(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what installing a pure-Python wheel puts in site-packages
    app = tmp_path / "app"
    (app / "registry").mkdir(parents=True)
    (app / "client.py").write_text("WHO = 'the application'\n")
    (app / "registry" / "__init__.py").write_text("WHO = 'the application too'\n")
    script = (
        "import client, registry, promptreg\n"
        "from promptreg import PromptClient, PromptRegistryFactory, PromptVersion\n"
        "from promptreg.registry.redis.store import RedisPromptRegistry\n"
        "print(client.WHO, '|', registry.WHO, '|', promptreg.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=app,
        env={**os.environ, "PYTHONPATH": f"{app}{os.pathsep}{site}"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    mine, mine_too, where = (part.strip() for part in done.stdout.split("|"))
    assert (mine, mine_too) == ("the application", "the application too")
    assert Path(where).is_relative_to(site), where  # the installed copy, not the checkout's
    cli = subprocess.run(
        [sys.executable, "-m", "promptreg.registry.cli", "--help"],
        cwd=app,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert "Usage" in cli.stdout
