"""Every registry backend as one test fixture: the JSON file, fakeredis, a real redis-server, a 3-master
Redis Cluster and a real PostgreSQL, the servers started by the tests on loopback ports.

``conftest.py`` turns :func:`open_backend` into the ``backend`` fixture (and ``any_registry``, one
registry on it), so a test written once against :class:`Backend` runs on every backend. A test that
only applies to some asks for them with :func:`kinds`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from click.testing import CliRunner

from promptreg.registry import JsonFilePromptRegistry, PostgresPromptRegistry, PromptRegistry, RedisPromptRegistry
from promptreg.registry.cli import cli
from tests.postgres_server import postgres_raw

KINDS = ("file", "fakeredis", "redis", "cluster", "postgres")
TEXT_LIMIT = 100
"""The ``reg`` fixture's registries take texts up to 4x this many bytes (small, so limits are cheap to hit)."""
METADATA_LIMIT = 32
PROMPTREG = Path(sys.executable).with_name("promptreg")
_MARKS = {"redis": pytest.mark.redis, "cluster": pytest.mark.redis, "postgres": pytest.mark.postgres}


def kinds(*names: str) -> list[Any]:
    """``pytest.param`` for each backend kind named (all of :data:`KINDS` when none), with its marks."""
    chosen = names or KINDS
    unknown = set(chosen) - set(KINDS)
    assert not unknown, unknown
    return [pytest.param(kind, marks=_MARKS[kind]) if kind in _MARKS else kind for kind in chosen]


@dataclass
class Backend:
    """One backend's store for one test: registries on it, and its raw content."""

    kind: str
    make: Callable[..., PromptRegistry]
    """A new registry on this test's store (keyword arguments go to the constructor); closed after the test."""
    raw: Callable[[], Any]
    """Everything the store holds for this test, byte for byte (for "nothing changed")."""
    other: Callable[[str], PromptRegistry]
    """A second, empty registry on the same kind of store, told apart by a tag (an import target)."""
    url: str
    """The registry URL of this test's store (``PROMPTREG_URL`` with ``PROMPTREG_NAMESPACE`` = ``namespace``)."""
    namespace: str


def _redis_raw(conn: Any, namespace: str) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    for key in conn.scan_iter(match="{" + namespace + "}*"):
        kind = conn.type(key)
        readers: dict[bytes, Callable[[bytes], Any]] = {
            b"string": conn.get,
            b"hash": conn.hgetall,
            b"set": conn.smembers,
            b"stream": conn.xrange,
        }
        reader = readers.get(kind if isinstance(kind, bytes) else kind.encode())
        out[key] = (kind, None if reader is None else reader(key))
    return out


def _file_raw(path: Path) -> tuple[list[str], bytes | None]:
    return sorted(os.listdir(path.parent)), path.read_bytes() if path.exists() else None


@contextmanager
def open_backend(kind: str, request: pytest.FixtureRequest, namespace: str, tmp_path: Path) -> Iterator[Backend]:
    """The store of ``kind`` for one test; servers come from the session fixtures (started on first use)."""
    opened: list[PromptRegistry] = []

    def track(make: Callable[..., PromptRegistry]) -> Callable[..., PromptRegistry]:
        def made(*args: Any, **kwargs: Any) -> PromptRegistry:
            registry = make(*args, **kwargs)
            opened.append(registry)
            return registry

        return made

    conn: Any = None
    if kind == "file":
        store = tmp_path / "store"
        store.mkdir(exist_ok=True)
        path = store / "registry.json"
        backend = Backend(
            kind,
            track(lambda **kw: JsonFilePromptRegistry(path, **kw)),
            lambda: _file_raw(path),
            track(lambda tag: JsonFilePromptRegistry(tmp_path / f"other-{tag}.json")),
            f"file://{path}",
            "",
        )
    elif kind == "postgres":
        url = request.getfixturevalue("postgres_server").url()
        backend = Backend(
            kind,
            track(lambda **kw: PostgresPromptRegistry(url, namespace=namespace, **kw)),
            lambda: postgres_raw(url, namespace),
            track(lambda tag: PostgresPromptRegistry(url, namespace=f"{namespace}-{tag}")),
            url,
            namespace,
        )
    elif kind in ("redis", "cluster", "fakeredis"):
        if kind == "redis":
            url = request.getfixturevalue("redis_server").url
            conn = RedisPromptRegistry.from_url(url, namespace=namespace).redis
        elif kind == "cluster":  # redis+cluster:// on 3 masters: SPUBLISH, every key in KEYS
            url = request.getfixturevalue("redis_cluster").url()
            conn = RedisPromptRegistry.from_url(url, namespace=namespace).redis
        else:
            url = ""  # no URL reaches a fakeredis server from another process
            conn = fakeredis.FakeRedis()
        backend = Backend(
            kind,
            track(lambda **kw: RedisPromptRegistry(conn, namespace=namespace, **kw)),
            lambda: _redis_raw(conn, namespace),
            track(lambda tag: RedisPromptRegistry(conn, namespace=f"{namespace}-{tag}")),
            url,
            namespace,
        )
    else:
        raise AssertionError(kind)
    try:
        yield backend
    finally:
        for registry in opened:
            registry.close()
        if conn is not None:
            conn.close()


def fresh_namespace() -> str:
    """A namespace no other test uses."""
    return "t" + uuid.uuid4().hex[:12]


# -- what every store test checks: nothing changed ------------------------------------------------


def dump(reg: PromptRegistry) -> dict[str, Any]:
    """Everything the public reads show: every prompt in full, its history, the list."""
    names = reg.list_prompts()
    prompts = {}
    for name in names:
        prompt = reg.get_prompt(name)
        assert prompt is not None
        prompts[name] = (prompt.model_dump(), [event.model_dump() for event in reg.history(name)])
    return {"names": names, "prompts": prompts}


def refused(backend: Backend, reg: PromptRegistry, error: type[Exception], call: Callable[[], object]) -> Exception:
    """Run ``call``, expect ``error``, and prove the store did not change at all."""
    raw_before, seen_before = backend.raw(), dump(reg)
    with pytest.raises(error) as caught:
        call()
    assert backend.raw() == raw_before
    assert dump(reg) == seen_before
    return caught.value


# -- the command line, against one registry ----------------------------------------------------------


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Cli:
    """Runs ``promptreg`` against one registry, in-process (CliRunner) or as a subprocess."""

    def __init__(self, env: dict[str, str], cwd: Path, *, subprocess_mode: bool = False) -> None:
        self.env = env
        self.cwd = cwd
        self.subprocess_mode = subprocess_mode

    def __call__(self, *args: str, input: str | bytes | None = None) -> Outcome:
        if self.subprocess_mode:
            data = input.encode() if isinstance(input, str) else input
            proc = subprocess.run(
                [str(PROMPTREG), *args],
                input=data if data is not None else b"",
                capture_output=True,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                timeout=60,
            )
            return Outcome(proc.returncode, proc.stdout.decode(), proc.stderr.decode())
        result = CliRunner().invoke(cli, list(args), input=input, env=self.env, catch_exceptions=False)
        return Outcome(result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str, input: str | bytes | None = None) -> Outcome:
        outcome = self(*args, input=input)
        assert outcome.code == 0, outcome
        assert outcome.stderr == "" or args[0] == "export", outcome
        return outcome

    def fails(self, *args: str, input: str | bytes | None = None, code: int = 1) -> str:
        """Run a command that must fail; returns its single stderr line."""
        outcome = self(*args, input=input)
        assert outcome.code == code, outcome
        assert "Traceback" not in outcome.stdout + outcome.stderr
        lines = outcome.stderr.strip().splitlines()
        if code == 1:
            assert len(lines) == 1 and lines[0].startswith("error: "), outcome
            return lines[0]
        assert any(line.startswith("Error: ") for line in lines), outcome  # click's usage errors
        return outcome.stderr

    def state(self) -> Any:
        outcome = self("export", "-")
        if outcome.code == 1 and "no registry file at" in outcome.stderr:
            return []  # a JSON-file registry not written yet (export says so rather than export nothing)
        assert outcome.code == 0, outcome
        return json.loads(outcome.stdout)["prompts"]
