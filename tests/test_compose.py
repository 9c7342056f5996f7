"""docker-compose.yml and the Dockerfile: Redis 7 with AOF, healthcheck, volume, and the demo.

Docker is not run here; the files are parsed and their promises checked.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _words(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(word) for word in command]


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_redis_is_7_with_aof(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert str(redis["image"]).split(":")[0] == "redis"
    assert str(redis["image"]).split(":")[1].split(".")[0] == "7"
    assert str(redis["image"]).count(".") >= 2, "pin the image to a patch release"
    words = _words(redis["command"])
    assert words[0] == "redis-server"
    assert words[words.index("--appendonly") + 1] == "yes"


def test_redis_has_a_ping_healthcheck(compose: dict[str, Any]) -> None:
    check = compose["services"]["redis"]["healthcheck"]
    test = _words(check["test"])
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "redis-cli" in " ".join(test[1:]) and "ping" in " ".join(test[1:])
    # redis-cli exits 0 on an error reply (LOADING, NOAUTH): the check must look for PONG itself.
    assert "grep -q PONG" in " ".join(test[1:])
    assert int(check["retries"]) >= 1


def test_redis_data_is_a_named_volume(compose: dict[str, Any]) -> None:
    mounts = compose["services"]["redis"]["volumes"]
    named = [str(m).split(":")[0] for m in mounts if str(m).split(":")[1] == "/data"]
    assert named and named[0] in compose["volumes"]
    assert not named[0].startswith((".", "/"))  # a named volume, not a bind mount


def test_demo_waits_for_healthy_redis_and_runs_the_demo(compose: dict[str, Any]) -> None:
    demo = compose["services"]["demo"]
    assert demo["depends_on"]["redis"]["condition"] == "service_healthy"
    assert _environment(demo)["PROMPTREG_URL"] == "redis://redis:6379/0"
    assert _words(demo["command"])[:2] == ["promptreg", "demo"]
    build = demo["build"]
    context = build if isinstance(build, str) else build.get("context", ".")
    assert (ROOT / context / "Dockerfile").is_file()


def test_dockerfile_installs_the_demo_extra() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines()]
    instructions = [line for line in lines if line and not line.startswith("#")]
    assert instructions[0] == "FROM python:3.11.9-slim-bookworm"  # pinned: a rebuild gets the same Python
    assert any(line.startswith("RUN pip install") and ".[demo" in line for line in instructions)
    for line in instructions:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_serve_needs_tokens_and_publishes_on_loopback_only(compose: dict[str, Any]) -> None:
    serve = compose["services"]["serve"]
    assert serve["depends_on"]["redis"]["condition"] == "service_healthy"
    words = _words(serve["command"])
    assert words[:2] == ["promptreg", "serve"] and words[words.index("--host") + 1] == "0.0.0.0"
    # Listening on every address needs tokens (the server refuses otherwise): compose demands them.
    assert _environment(serve)["PROMPTREG_SERVE_TOKENS"].startswith("${PROMPTREG_SERVE_TOKENS:?")
    assert serve["ports"] == ["127.0.0.1:8080:8080"]
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "serve]" in dockerfile  # the image has the [serve] extra
