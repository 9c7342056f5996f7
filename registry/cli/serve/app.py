"""The ASGI application of ``promptreg serve`` (Starlette): :func:`create_app`.

:class:`~promptreg.registry.cli.serve.server.Server` holds what requests share; the API's handlers
are in :mod:`~promptreg.registry.cli.serve.routes`, the console's in
:mod:`~promptreg.registry.cli.serve.console`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from promptreg.client import PromptClient
from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.api import json_response
from promptreg.registry.cli.serve.auth import TokenStore
from promptreg.registry.cli.serve.routes import build_routes
from promptreg.registry.cli.serve.server import Server, status_of
from promptreg.registry.cli.serve.stream import ChangeHub
from promptreg.registry.factory import PromptRegistryFactory

__all__ = ["Server", "create_app", "status_of"]


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/") or request.url.path == "/openapi.json":
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return json_response(api.error_body(kind, str(exc.detail)), exc.status_code)
    return Response(str(exc.detail), exc.status_code, media_type="text/plain")


def create_app(
    url: str,
    *,
    namespace: str | None = None,
    tokens: TokenStore | None = None,
    heartbeat: float = 15.0,
    max_streams: int = 10_000,
    start_timeout: float = 10.0,
    console: bool = True,
) -> Starlette:
    """The ASGI application serving the registry at ``url``.

    It opens the registry and a :class:`~promptreg.PromptClient` (reporting to the fleet as
    ``promptreg-serve``) when the application starts (ASGI lifespan) and closes both when it stops.
    Raises what the factory and the client raise, at start-up.
    """
    tokens = tokens if tokens is not None else TokenStore()
    holder: dict[str, Server] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        env = {"PROMPTREG_URL": url, "PROMPTREG_NAMESPACE": namespace or ""}
        registry = await asyncio.to_thread(PromptRegistryFactory.create_from_config, env)
        try:
            client = await asyncio.to_thread(
                PromptClient, url, namespace=namespace, start_timeout=start_timeout, client_name="promptreg-serve"
            )
        except BaseException:
            registry.close()
            raise
        server = holder["server"]
        server.registry, server.client = registry, client
        hub = ChangeHub(registry, client.status().rev, asyncio.get_running_loop(), server.heartbeat)
        hub.add_listener(server.forget)
        server.hub = hub
        unsubscribe = client.on_change(hub.poke)
        hub.poke()  # writes between the client's state read and the subscription above
        # What the client loaded lives as long as the server: freeze it out of the collector, so a full
        # collection does not walk it (a 155 ms pause, stalling the stream, at 10k prompts: benchmarks/serve.py).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            unsubscribe()
            hub.close()
            client.close()
            registry.close()

    server = Server(None, None, tokens, heartbeat=heartbeat, max_streams=max_streams)  # type: ignore[arg-type]
    holder["server"] = server
    routes = build_routes(server)
    if console:
        from promptreg.registry.cli.serve.console import console_routes

        routes += console_routes(server)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error})
    app.state.server = server
    return app
