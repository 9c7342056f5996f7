"""``promptreg serve`` as the tests run it: a real process on a free loopback port, and HTTP calls.

:class:`ServeProcess` starts ``promptreg serve`` against one registry (the ``backend_env`` fixture's
environment) with a writer, a reader and an admin token, waits until it answers, and stops it (its
own process handle) at the end; its log is kept for the "tokens never in the log" checks.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from promptreg.registry import PromptRegistry, PromptRegistryFactory
from promptreg.registry.cli.local_server import free_port
from promptreg.registry.cli.serve.auth import new_token, token_line
from tests.backends import PROMPTREG


@dataclass
class Reply:
    """One HTTP answer."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_type(self) -> str:
        return str(self.json()["error"]["type"])


@dataclass
class ServeProcess:
    """A running ``promptreg serve`` and its tokens (by role)."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self, method: str, path: str, body: Any = None, *, role: str | None = "writer",
        headers: dict[str, str] | None = None, raw: bytes | None = None, timeout: float = 30.0,
    ) -> Reply:  # fmt: skip
        """One request; ``role`` picks the bearer token (``None``: none)."""
        sent = dict(headers or {})
        if role is not None:
            sent["Authorization"] = f"Bearer {self.tokens[role]}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
        finally:
            conn.close()

    def log_text(self) -> str:
        return self.log.read_text("utf-8", "replace")


def prompt_path(name: str, *rest: str) -> str:
    """``/api/v1/prompts/<name>/...`` with the name's slashes kept (the API accepts them)."""
    return "/api/v1/prompts/" + quote(name, safe="/") + "".join("/" + quote(part, safe="") for part in rest)


@pytest.fixture(name="registry")
def registry_fixture(backend_env: dict[str, str]) -> Iterator[PromptRegistry]:
    """The registry ``backend_env`` names (import it into a test module to use it as ``registry``)."""
    registry = PromptRegistryFactory.create_from_config(backend_env)
    yield registry
    registry.close()


@pytest.fixture(name="server")
def server_fixture(backend_env: dict[str, str], tmp_path: Path) -> Iterator[ServeProcess]:
    """``promptreg serve`` on ``backend_env``'s registry, with tokens (used as ``server``)."""
    with serve_process(backend_env, tmp_path) as running:
        yield running


@contextlib.contextmanager
def serve_process(
    env: dict[str, str],
    tmp_path: Path,
    *,
    tokens: bool = True,
    extra: tuple[str, ...] = (),
    heartbeat: float = 0.5,
    roles: Mapping[str, str] | None = None,
) -> Iterator[ServeProcess]:
    """Start ``promptreg serve`` with a token per entry of ``roles`` (token name -> role; the token's
    identity is ``<name>-bot``), by default a reader, a writer and an admin; none with ``tokens=False``."""
    port = free_port()
    named = roles if roles is not None else {role: role for role in ("reader", "writer", "admin")}
    secrets = {name: new_token() for name in named} if tokens else {}
    token_file = tmp_path / f"tokens-{port}"
    token_file.write_text("".join(f"{token_line(name + '-bot', named[name], s)}\n" for name, s in secrets.items()))
    log = tmp_path / f"serve-{port}.log"
    run_env = {**os.environ, **env, "PROMPTREG_SERVE_TOKENS_FILE": str(token_file) if tokens else ""}
    run_env.pop("PROMPTREG_SERVE_TOKENS", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(PROMPTREG), "serve", "--port", str(port), "--heartbeat", str(heartbeat), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=run_env, cwd=tmp_path,
        )  # fmt: skip
    server = ServeProcess(port, proc, log, secrets)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"promptreg serve exited {proc.returncode}:\n{server.log_text()}")
            with contextlib.suppress(OSError):
                if server.call("GET", "/api/v1/status", role="reader" if tokens else None, timeout=2).status == 200:
                    break
            assert time.monotonic() < deadline, f"promptreg serve did not answer:\n{server.log_text()}"
            time.sleep(0.05)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@dataclass
class Event:
    """One Server-Sent Event."""

    kind: str
    id: str | None
    data: Any


class Stream:
    """A reader of ``/api/v1/events`` over a real HTTP connection."""

    def __init__(self, server: ServeProcess, *, last_event_id: int | None = None, role: str | None = "reader") -> None:
        headers = {"Accept": "text/event-stream"}
        if role is not None:
            headers["Authorization"] = f"Bearer {server.tokens[role]}"
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.conn.request("GET", "/api/v1/events", headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.heartbeats = 0

    def next(self, timeout: float = 10.0) -> Event:
        """The next event (comments counted as heartbeats); raises TimeoutError after ``timeout``."""
        assert self.conn.sock is not None
        deadline = time.monotonic() + timeout
        kind: str = "message"
        event_id: str | None = None
        data: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("no event in time")
            self.conn.sock.settimeout(remaining)
            line = self.response.readline()
            if not line:
                raise EOFError("the stream ended")
            text = line.decode("utf-8").rstrip("\n")
            if text == "":
                if data:
                    return Event(kind, event_id, json.loads("\n".join(data)))
                continue
            if text.startswith(":"):
                self.heartbeats += 1
                continue
            field_name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            if field_name == "event":
                kind = value
            elif field_name == "id":
                event_id = value
            elif field_name == "data":
                data.append(value)

    def changes(self, count: int, timeout: float = 10.0) -> list[Event]:
        """The next ``count`` ``change`` events (skipping others)."""
        found: list[Event] = []
        deadline = time.monotonic() + timeout
        while len(found) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{len(found)} of {count} change events")
            event = self.next(remaining)
            if event.kind == "change":
                found.append(event)
        return found

    def close(self) -> None:
        self.conn.close()
