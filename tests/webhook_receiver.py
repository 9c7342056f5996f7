"""A real webhook receiver for the tests: ``http.server`` on 127.0.0.1 (a free port) in a thread.

It records every request (headers and body) with the status it answered; ``respond`` decides the
status of each, and may block (to hold a delivery in flight while a test kills the worker). The
signature check is written from the Standard Webhooks specification, independently of
:mod:`promptreg.registry.webhooks.signing`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from promptreg.registry.cli.local_server import wait_until

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
"""A Standard Webhooks secret: ``whsec_`` and the base64 of 32 bytes."""


def verify(secret: str, headers: dict[str, str], body: bytes, *, tolerance: float = 300.0) -> bool:
    """Whether ``headers`` sign ``body`` per Standard Webhooks: the signed content is
    ``{webhook-id}.{webhook-timestamp}.{body}``, HMAC-SHA256 keyed with the base64-decoded secret
    after ``whsec_``; ``webhook-signature`` is a space-separated list of ``v1,<base64>``; the
    timestamp is within ``tolerance`` seconds of now."""
    msg_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if abs(time.time() - int(timestamp)) > tolerance:
        return False
    key = base64.b64decode(secret.split("_", 1)[1]) if secret.startswith("whsec_") else secret.encode()
    content = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    given = [part.split(",", 1)[1] for part in headers["webhook-signature"].split() if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, signature) for signature in given)


@dataclass
class Received:
    """One request the receiver got, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int = 0

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json.get("type", "slack"))

    @property
    def rev(self) -> int:
        data = self.json["data"]
        return int(data["to_rev"] if self.type == "registry.resync" else data["rev"])


class Receiver:
    """An HTTP server recording webhooks; ``respond(request, index)`` gives each one's status
    (default 204). Use as a context manager (the server stops at the end)."""

    def __init__(self, respond: Callable[[Received, int], int] | None = None) -> None:
        self.respond = respond or (lambda request, index: 204)
        self.requests: list[Received] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                request = Received({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with outer.lock:
                    index = len(outer.requests)
                    outer.requests.append(request)
                request.status = outer.respond(request, index)
                body = b"nope" if request.status >= 300 else b""
                try:
                    self.send_response(request.status)
                    self.send_header("content-length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the worker was killed while this request was held: nobody reads the answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

    def delivered(self) -> list[Received]:
        """The requests answered with a 2xx, in the order they came."""
        with self.lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def wait_delivered(self, count: int, timeout: float = 15.0) -> list[Received]:
        """Wait until at least ``count`` were delivered; returns them (fails the test otherwise)."""
        assert wait_until(lambda: len(self.delivered()) >= count, timeout), [(r.type, r.status) for r in self.requests]
        return self.delivered()
