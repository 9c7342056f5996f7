"""requirements.lock pins every dependency pyproject.toml declares, within the declared ranges.

`make test`, `make demo` and `.ci/run` install through the lock (a pip constraint), so a fresh clone
resolves the same versions every time; a dependency added to pyproject.toml without `make lock` would
float again, and these tests fail until the lock is refreshed.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
LOCKED_EXTRAS = re.search(r"^LOCK_EXTRAS := (\S+)$", (ROOT / "Makefile").read_text("utf-8"), re.M)


def _lock() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for raw in (ROOT / "requirements.lock").read_text("utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep, f"requirements.lock: {line!r} is not an exact pin (name==version)"
        pins[canonicalize_name(name)] = Version(version)
    return pins


def _declared(extras: list[str]) -> list[Requirement]:
    """The project's own requirements plus those of ``extras``, following ``promptreg[...]`` references."""
    own = canonicalize_name(PROJECT["name"])
    optional: dict[str, list[str]] = PROJECT["optional-dependencies"]
    found: list[Requirement] = [Requirement(r) for r in PROJECT["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for spec in optional[extra]:
            req = Requirement(spec)
            if canonicalize_name(req.name) == own:
                todo.extend(req.extras)
            else:
                found.append(req)
    return found


def test_the_makefile_names_the_extras_it_locks() -> None:
    assert LOCKED_EXTRAS is not None
    extras = LOCKED_EXTRAS.group(1).split(",")
    assert set(extras) <= set(PROJECT["optional-dependencies"])
    assert {"dev", "demo"} <= set(extras)


def test_every_declared_dependency_is_pinned_inside_its_range() -> None:
    assert LOCKED_EXTRAS is not None
    pins = _lock()
    requirements = _declared(LOCKED_EXTRAS.group(1).split(","))
    assert len(requirements) >= 10
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} is declared in pyproject.toml but not pinned: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), (
            f"requirements.lock pins {req.name}=={pins[name]}, outside the declared {req.specifier}: run `make lock`"
        )
        for extra in req.extras:  # e.g. fakeredis[lua] -> lupa
            extra_reqs = [
                Requirement(r)
                for r in metadata.requires(req.name) or []
                if Requirement(r).marker is not None and Requirement(r).marker.evaluate({"extra": extra})  # type: ignore[union-attr]
            ]
            for sub in extra_reqs:
                assert canonicalize_name(sub.name) in pins, f"{sub.name} (from {req}) is not pinned: run `make lock`"


def test_the_build_backend_is_pinned_too() -> None:
    pins = _lock()
    build = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["build-system"]["requires"]
    for spec in build:
        req = Requirement(spec)
        assert req.specifier.contains(pins[canonicalize_name(req.name)])


def test_this_environment_was_installed_from_the_lock() -> None:
    """What `make test` installed is what the lock says (a drift here means pip ignored the constraint)."""
    pins = _lock()
    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running from the project's own .venv (make test); nothing to compare")
    drift = {
        name: (str(pins[name]), metadata.version(name))
        for name in pins
        if name != "setuptools" and _installed(name) and Version(metadata.version(name)) != pins[name]
    }
    assert not drift, f"installed versions differ from requirements.lock (locked, installed): {drift}"


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
