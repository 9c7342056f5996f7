"""The baseline server of ``benchmarks/serve.py``: Starlette on uvicorn answering constant bodies.

Same framework, same uvicorn settings and the same process model as ``promptreg serve``
(``registry/cli/serve/__init__.py``): one process, one uvicorn worker, ``log_level="info"`` with the
access log on (a line per request, into the same kind of log file), lifespan on, no ``Server``
header, no proxy headers, the same event loop and HTTP implementation (uvicorn's ``auto``). Each
route answers bytes read once at start-up (the body ``promptreg serve`` gave for the same path, with
the same media type and headers): nothing is computed per request, so the difference is what
promptreg does on top of the framework.

    python -m benchmarks._serve_baseline --port N --bodies MANIFEST.json

The manifest is a JSON list of ``{"path", "media_type", "headers", "body"}`` (``body`` as text).
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


def _constant(body: bytes, media_type: str, headers: dict[str, str]) -> Any:
    async def endpoint(request: Request) -> Response:
        return Response(body, 200, headers=headers, media_type=media_type)

    return endpoint


def create_app(entries: Sequence[dict[str, Any]]) -> Starlette:
    """An application answering each entry's path with its constant body (GET only)."""
    routes = [
        Route(e["path"], _constant(e["body"].encode("utf-8"), e["media_type"], dict(e["headers"])), methods=["GET"])
        for e in entries
    ]
    return Starlette(routes=routes)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bodies", type=Path, required=True, help="the manifest (JSON)")
    args = parser.parse_args(argv)
    app = create_app(json.loads(args.bodies.read_text("utf-8")))
    # As promptreg serve does before it starts uvicorn.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        app, host="127.0.0.1", port=args.port, log_level="info", lifespan="on", timeout_graceful_shutdown=2,
        server_header=False, proxy_headers=False,
    )  # fmt: skip
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
