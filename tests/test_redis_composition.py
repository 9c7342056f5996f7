"""Composition on Redis: the write scripts refuse a move that concerns a composition unless the
caller checked the graph at the current revision (``graph_guard``), and the graph reads work on a
registry without the index."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from promptreg.registry import IncompatibleDependentError, RedisPromptRegistry
from promptreg.registry.redis.calls import SetLabel
from tests.backends import Backend, kinds, open_backend


@pytest.fixture(params=kinds("fakeredis", "redis"))
def redis_backend(request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    with open_backend(request.param, request, namespace, tmp_path) as backend:
        yield backend


def _seed(reg: RedisPromptRegistry) -> None:
    reg.create_prompt("part")
    reg.add_version("part", "Part {{a}}.")
    reg.add_version("part", "Part {{a}} {{b}}.")
    reg.set_label("part", "production", 1)
    reg.create_prompt("dep")
    reg.add_version("dep", "{{> part}} Dep.")
    reg.set_label("dep", "production", 1)
    reg.set_compatibility("dep", "backward")


def _raw_set_label(reg: RedisPromptRegistry, name: str, version: int, guard: tuple[str, str]) -> list[object]:
    """The set_label script called as any writer could call it, with the guard given."""
    call = SetLabel(reg.keys, name, "production", version, None, "2026-12-07T00:00:00+00:00", None, None,
                    reg._head("set_label", name, "production", None, datetime.now(UTC)),
                    False, 1)  # fmt: skip
    run = reg._functions.script("set_label")
    keys = [*call.script_keys(), reg.keys.graph, reg.keys.revid]
    args = [*call.script_args(), *guard, secrets.token_hex(8), "PUBLISH"]
    result: list[object] = run(keys=keys, args=args)
    return result


def test_a_write_without_the_graph_check_is_refused_by_the_script(redis_backend: Backend) -> None:
    reg = redis_backend.make()
    assert isinstance(reg, RedisPromptRegistry)
    _seed(reg)
    before = redis_backend.raw()
    rev = reg.revision()
    # Moving the partial to a version the dependent's mode refuses, skipping Python's check:
    assert _raw_set_label(reg, "part", 2, ("", ""))[:2] == [b"ERR", b"GRAPH"]
    # ... or claiming a check at a revision that is not the current one.
    assert _raw_set_label(reg, "part", 2, (str(rev - 1), ""))[:2] == [b"ERR", b"GRAPH"]
    assert redis_backend.raw() == before and reg.revision() == rev
    # Through the API, the check runs and refuses, naming the dependent.
    with pytest.raises(IncompatibleDependentError, match="dep"):
        reg.set_label("part", "production", 2)
    assert redis_backend.raw() == before
    # A prompt no composition involves is moved without any graph read.
    reg.create_prompt("plain")
    reg.add_version("plain", "x")
    assert _raw_set_label(reg, "plain", 1, ("", ""))[0] == b"OK"


def test_graph_reads_on_a_registry_without_the_index(redis_backend: Backend) -> None:
    reg = redis_backend.make()
    assert isinstance(reg, RedisPromptRegistry)
    _seed(reg)
    reg.redis.delete(reg.keys.index_format)  # as a 0.1.0 registry before `promptreg migrate`
    assert reg.dependents("part") == {"dep": {"production": 1}}
    with pytest.raises(IncompatibleDependentError):
        reg.set_label("part", "production", 2)
    forced = reg.set_label("part", "production", 2, force=True)
    assert forced.forced
    assert reg.history("part")[-1].forced
