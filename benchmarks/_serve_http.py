"""The servers of ``benchmarks/serve.py`` and the parent's HTTP connections to them.

``promptreg serve`` (``python -m promptreg.registry.cli serve``, with a token file of this run) and
the baseline server (``benchmarks/_serve_baseline.py``, answering the bytes ``promptreg serve``
answered) are subprocesses on free 127.0.0.1 ports, each with its log file, stopped on exit and
dying with the benchmark (:class:`HttpServer`). :class:`Http` is the parent's own keep-alive
connection (``http.client``): readiness probes, the prompt list's requests and the status.
:func:`request_bytes` is the raw ``GET`` the load generator and the SSE subscribers write.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import _harness
from benchmarks._serve_plan import READY_TIMEOUT
from promptreg.registry.cli.local_server import free_port
from promptreg.registry.cli.serve.auth import token_line

_HOP_HEADERS = frozenset({"content-length", "content-type", "date", "server", "transfer-encoding", "set-cookie"})


@dataclass
class Reply:
    """One HTTP answer the parent read, and how long it took (request written to last byte)."""

    status: int
    headers: dict[str, str]
    body: bytes
    ms: float

    def json(self) -> Any:
        return json.loads(self.body)


class Http:
    """One keep-alive connection of the parent (``http.client``), reopened after an error."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, headers: dict[str, str], body: bytes | None = None) -> Reply:
        start = time.perf_counter_ns()
        try:
            self.conn.request(method, path, body=body, headers=headers)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            raise
        elapsed = (time.perf_counter_ns() - start) / 1e6
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, elapsed)

    def get(self, path: str, headers: dict[str, str]) -> Reply:
        return self.request("GET", path, headers)

    def close(self) -> None:
        self.conn.close()


class HttpServer:
    """A server process of this run (``promptreg serve`` or the baseline) on a free loopback port."""

    def __init__(self, label: str, argv: list[str], port: int, log: Path, env: dict[str, str]) -> None:
        self.label = label
        self.port = port
        self.log = log
        with open(log, "wb") as out, _harness.exit_signals_deferred():
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                preexec_fn=_harness.server_child_setup,
            )  # fmt: skip

    def wait_ready(self, path: str, headers: dict[str, str], timeout: float) -> None:
        """Until ``GET path`` answers 200; raises with the log's tail when the process exits or times out."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}")
            probe = Http(self.port)
            with contextlib.suppress(OSError, http.client.HTTPException):
                if probe.get(path, headers).status == 200:
                    probe.close()
                    return
            probe.close()
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label} did not answer within {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far (Linux ``/proc``; 0 elsewhere)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text("utf-8", "replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@contextlib.contextmanager
def serve_process(url: str, namespace: str, tokens: dict[str, str], workdir: Path) -> Iterator[HttpServer]:
    """``promptreg serve`` on a free port with the given tokens (role -> token), stopped on exit."""
    port = free_port()
    token_file = workdir / "tokens"
    token_file.write_text("".join(f"{token_line(role + '-bench', role, t)}\n" for role, t in tokens.items()))
    env = {**os.environ, "PROMPTREG_SERVE_TOKENS_FILE": str(token_file), "PYTHONPATH": str(_harness.REPO_ROOT)}
    env.pop("PROMPTREG_SERVE_TOKENS", None)
    argv = [sys.executable, "-m", "promptreg.registry.cli", "--url", url, "--namespace", namespace,
            "serve", "--port", str(port)]  # fmt: skip
    server = HttpServer("promptreg serve", argv, port, workdir / "serve.log", env)
    try:
        server.wait_ready("/api/v1/status", bearer(tokens["reader"]), READY_TIMEOUT)
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def baseline_process(entries: list[dict[str, Any]], workdir: Path) -> Iterator[HttpServer]:
    """The baseline server answering ``entries`` (see ``benchmarks/_serve_baseline.py``), stopped on exit."""
    port = free_port()
    manifest = workdir / "baseline.json"
    manifest.write_text(json.dumps(entries), "utf-8")
    env = {**os.environ, "PYTHONPATH": str(_harness.REPO_ROOT)}
    argv = [sys.executable, "-m", "benchmarks._serve_baseline", "--port", str(port), "--bodies", str(manifest)]
    server = HttpServer("baseline server", argv, port, workdir / "baseline.log", env)
    try:
        server.wait_ready(entries[0]["path"], {}, READY_TIMEOUT)
        yield server
    finally:
        server.stop()


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


def baseline_entry(path: str, reply: Reply) -> dict[str, Any]:
    """The baseline's route for ``path``: the same body, media type and headers as ``reply``."""
    headers = {k: v for k, v in reply.headers.items() if k not in _HOP_HEADERS}
    media_type = reply.headers.get("content-type", "application/json").split(";")[0]
    return {"path": path.split("?")[0], "media_type": media_type, "headers": headers, "body": reply.body.decode()}


def request_bytes(path: str, port: int, headers: dict[str, str]) -> bytes:
    """A raw HTTP/1.1 ``GET`` of ``path`` (keep-alive), as the load generator and the subscribers send it."""
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
