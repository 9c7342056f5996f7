"""One HTTP POST of a webhook, with the standard library (``http.client``).

``http://`` and ``https://`` only (certificates verified), a connect timeout and a read timeout
(for each wait on the socket), redirects never followed (a 3xx is a failure: the receiver must be
configured with its final URL), the response body read up to :data:`MAX_RESPONSE_BYTES` (only its
start is kept, for the error). A 2xx is success. User info in the URL (``https://user:pass@host``)
is sent as HTTP basic authentication. No error message holds the URL (it may carry credentials).
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Final
from urllib.parse import unquote, urlsplit

MAX_RESPONSE_BYTES: Final = 64 * 1024
"""How much of a response body is read (the rest is dropped with the connection)."""
USER_AGENT: Final = f"promptreg-webhooks/{metadata.version('promptreg-live')}"


@dataclass(frozen=True)
class Attempt:
    """The outcome of one POST: ``ok`` (a 2xx), the ``status`` (``None``: no response), the
    ``error`` in words (``None`` when ok) and ``elapsed`` seconds."""

    ok: bool
    status: int | None
    error: str | None
    elapsed: float


def _printable(text: str, limit: int = 200) -> str:
    return "".join(ch if ch.isprintable() else " " for ch in text)[:limit].strip()


def post(
    url: str, body: bytes, headers: dict[str, str], *, connect_timeout: float = 5.0, read_timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
) -> Attempt:  # fmt: skip
    """POST ``body`` (JSON) to ``url`` with ``headers``; never raises for network or HTTP failures
    (they are the :class:`Attempt`'s ``error``)."""
    started = time.monotonic()
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port
    conn: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        conn = http.client.HTTPSConnection(host, port, timeout=connect_timeout,
                                           context=context or ssl.create_default_context())  # fmt: skip
    else:
        conn = http.client.HTTPConnection(host, port, timeout=connect_timeout)
    sent = {"content-type": "application/json", "user-agent": USER_AGENT, **headers}
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        sent["authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.connect()  # the connect timeout covers the TCP connect and the TLS handshake
        assert conn.sock is not None
        conn.sock.settimeout(read_timeout)
        conn.request("POST", path, body=body, headers=sent)
        response = conn.getresponse()
        status = response.status
        excerpt = response.read(MAX_RESPONSE_BYTES)
    except TimeoutError:
        return Attempt(False, None, "timed out", time.monotonic() - started)
    except ssl.SSLError as exc:
        return Attempt(False, None, f"TLS error: {_printable(exc.reason or type(exc).__name__)}",
                       time.monotonic() - started)  # fmt: skip
    except http.client.HTTPException as exc:
        return Attempt(False, None, f"bad HTTP response ({type(exc).__name__})", time.monotonic() - started)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return Attempt(False, None, f"connection failed: {_printable(reason)}", time.monotonic() - started)
    except ValueError as exc:  # http.client refuses a request it cannot encode (an edited stored URL)
        return Attempt(False, None, f"invalid request ({type(exc).__name__})", time.monotonic() - started)
    finally:
        conn.close()
    elapsed = time.monotonic() - started
    if 200 <= status < 300:
        return Attempt(True, status, None, elapsed)
    detail = _printable(excerpt.decode("utf-8", "replace"))
    if 300 <= status < 400:
        return Attempt(False, status, f"HTTP {status}: redirects are not followed (give the final URL)", elapsed)
    return Attempt(False, status, f"HTTP {status}" + (f": {detail}" if detail else ""), elapsed)
