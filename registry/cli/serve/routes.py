"""The API's handlers (:func:`build_routes`): each checks the caller's role, parses its input and
calls the registry (on the thread pool) or the server's client (in memory); errors become the API's
error shape in one place (:func:`errors`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.api import blocking, json_body, json_response, version_number
from promptreg.registry.cli.serve.auth import SESSION_COOKIE, AuthenticationRequiredError
from promptreg.registry.cli.serve.governance import label_handlers, request_endpoints
from promptreg.registry.cli.serve.openapi import openapi_document
from promptreg.registry.cli.serve.server import Server, status_of
from promptreg.registry.compatibility import validate_mode
from promptreg.registry.errors import (
    IncompatibleVersionError,
    InvalidInputError,
    LabelConflictError,
    PromptNotFoundError,
    PromptRegistryError,
    ProtectedLabelError,
    RegistryUnavailableError,
)
from promptreg.registry.validation import validate_label

logger = logging.getLogger("promptreg.serve")


Endpoint = Callable[[Request], Awaitable[Response]]


MAX_KEY_CHARS = 256
"""The longest rollout ``key`` (a user or session id) ``resolve`` takes."""


def error_response(exc: PromptRegistryError, **extra: Any) -> Response:
    """A promptreg error in the API's shape, with its status and the details it carries."""
    status = status_of(exc)
    if status == 500:
        logger.error("promptreg serve: %s: %s", type(exc).__name__, exc)
    if isinstance(exc, IncompatibleVersionError):
        extra.update(added=sorted(exc.added), removed=sorted(exc.removed), mode=exc.mode)
    if isinstance(exc, LabelConflictError):
        extra.update(expected=exc.expected, actual=exc.actual)
    if isinstance(exc, ProtectedLabelError):  # told apart from a conflict without the class name
        extra.update(code="protected_label", prompt=exc.name, label=exc.label)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return json_response(api.error_body(type(exc).__name__, str(exc), **extra), status, headers)


def errors(server: Server, endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with every error answered in the API's shape (a bug: 500, logged)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except PromptRegistryError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug: one line in the log, no traceback to the caller
            logger.exception("promptreg serve: unexpected error on %s %s", request.method, request.url.path)
            return json_response(api.error_body("InternalError", f"unexpected {type(exc).__name__}"), 500)

    return wrapped


def build_routes(server: Server) -> list[Route]:
    """Every API route."""

    async def list_prompts(request: Request) -> Response:
        if request.method == "POST":
            identity = server.require(request, "writer")
            body = await json_body(request, {"name": str, "description": str, "compatibility": str})
            if "name" not in body:
                raise InvalidInputError("field 'name' is required")
            prompt = await blocking(
                server.registry.create_prompt, body["name"], description=body.get("description"), author=identity.name,
                compatibility=body.get("compatibility") or "none",
            )  # fmt: skip
            await server.caught_up(await blocking(server.registry.revision))
            return json_response(_prompt_json(prompt), 201)
        server.require(request, "reader")
        query = request.query_params
        limit = query.get("limit", str(api.DEFAULT_PAGE))
        if not limit.isdigit() or not 1 <= int(limit) <= api.MAX_PAGE:
            raise InvalidInputError(f"limit must be 1 to {api.MAX_PAGE}")
        prefix, cursor = query.get("prefix", ""), query.get("cursor") or None
        if len(prefix) > 128 or (cursor is not None and len(cursor) > 128):
            raise InvalidInputError("prefix and cursor are at most 128 characters")
        catalog = await blocking(server.catalog)
        page = await blocking(api.prompt_page, catalog, server.descriptions, prefix, int(limit), cursor)
        return json_response(page)

    async def prompt_routes(request: Request) -> Response:
        target = api.parse_prompt_path(request.scope.get("raw_path") or request.url.path.encode())
        handler = routes.get((target.resource, target.argument is not None, request.method))
        if handler is None:
            return json_response(api.error_body("MethodNotAllowed", f"{request.method} is not allowed here"), 405)
        return await handler(request, target)

    async def get_prompt(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")

        def read() -> dict[str, Any]:
            prompt = server.registry.get_prompt(t.name)
            if prompt is None:
                raise PromptNotFoundError(t.name)
            history = server.registry.history(t.name)
            protected = {p.label: p.approvals for p in server.registry.protected_labels(t.name)}
            fleet = api.label_fleet(prompt, history, server.registry.fleet())
            return {**_prompt_json(prompt), "protected": protected, "fleet": fleet}

        return json_response(await blocking(read))

    async def get_version(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        number = version_number(t.argument, "version")
        version = await blocking(server.registry.get_version, t.name, version=number)
        return json_response({"name": t.name, **api.version_json(version)})

    async def list_versions(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        prompt = await blocking(server.registry.get_prompt, t.name)
        if prompt is None:
            raise PromptNotFoundError(t.name)
        return json_response({"name": t.name, "versions": [api.version_summary(v) for v in prompt.versions]})

    async def add_version(request: Request, t: api.Target) -> Response:
        identity = server.require(request, "writer")
        body = await json_body(
            request,
            {"prompt_text": str, "messages": list, "config": dict, "metadata": dict, "message": str, "labels": list},
        )
        labels = body.get("labels") or []
        if len(labels) > 32 or not all(isinstance(label, str) for label in labels):
            raise InvalidInputError("labels must be a list of up to 32 label names")
        for label in labels:
            validate_label(label, settable=True)
        version = await blocking(
            server.registry.add_version, t.name, body.get("prompt_text"), messages=body.get("messages"),
            config=body.get("config"), metadata=body.get("metadata"), message=body.get("message"),
            author=identity.name,
        )  # fmt: skip
        events = []
        for label in labels:
            try:
                events.append(
                    await blocking(server.registry.set_label, t.name, label, version.version, author=identity.name)
                )
            except PromptRegistryError as exc:  # the version stays: say which one was added
                return error_response(exc, created_version=version.version)
        await server.caught_up(events[-1].rev if events else await blocking(server.registry.revision))
        data = {"name": t.name, **api.version_json(version), "label_events": [api.event_json(e) for e in events]}
        return json_response(data, 201)

    async def resolve(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        label = validate_label(request.query_params.get("label") or server.client.default_label)
        key = request.query_params.get("key")
        if key is not None and len(key) > MAX_KEY_CHARS:
            raise InvalidInputError(f"key is over {MAX_KEY_CHARS} characters")
        etag, body = server.resolved(t.name, label, key)
        state = server.client.status()  # how fresh the answer is: "stale" while the registry is unreachable
        headers = {"ETag": etag, "Cache-Control": "no-cache", "X-Promptreg-State": state.state.value,
                   "X-Promptreg-Rev": str(state.rev)}  # fmt: skip
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, 200, headers=headers, media_type="application/json")

    async def label_write(request: Request, t: api.Target) -> Response:
        identity = server.require(request, "writer")
        wait = api.wait_seconds(request)
        label = t.argument or ""
        if request.method == "PUT":
            body = await json_body(request, {"version": int, "expect": int, "force": bool, "reason": str})
            version = version_number(body.get("version"), "version")
            expect = body.get("expect")
            event = await blocking(
                server.registry.set_label, t.name, label, version,
                expected_version=None if expect is None else version_number(expect, "expect", zero=True),
                author=identity.name, reason=body.get("reason"), force=bool(body.get("force")),
            )  # fmt: skip
        elif request.method == "DELETE":
            body = await json_body(request, {"expect": int, "reason": str}, empty_ok=True)
            expect = body.get("expect")
            event = await blocking(
                server.registry.delete_label, t.name, label,
                expected_version=None if expect is None else version_number(expect, "expect"),
                author=identity.name, reason=body.get("reason"),
            )  # fmt: skip
        else:  # rollback
            body = await json_body(request, {"expect": int, "force": bool, "reason": str}, empty_ok=True)
            expect = body.get("expect")
            event = await blocking(
                server.registry.rollback, t.name, label, author=identity.name, reason=body.get("reason"),
                force=bool(body.get("force")),
                expected_version=None if expect is None else version_number(expect, "expect", zero=True),
            )  # fmt: skip
        await server.caught_up(event.rev)
        data: dict[str, Any] = {"event": api.event_json(event)}
        if wait is not None:
            data["fleet"] = api.fleet_json(await blocking(server.registry.wait_for_fleet, event.rev, timeout=wait))
        return json_response(data)

    async def history(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        events = await blocking(server.registry.history, t.name)
        return json_response({"name": t.name, "events": [api.event_json(e) for e in events]})

    async def diff(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        query = request.query_params
        old = version_number(query.get("from"), "from")
        new = version_number(query.get("to"), "to")

        def read() -> dict[str, Any]:
            return api.diff_json(
                t.name,
                server.registry.get_version(t.name, version=old),
                server.registry.get_version(t.name, version=new),
            )

        return json_response(await blocking(read))

    async def check(request: Request, t: api.Target) -> Response:
        server.require(request, "reader")
        body = await json_body(request, {"label": str, "version": int})
        label = validate_label(body.get("label"), settable=True)
        report = await blocking(
            server.registry.check_compatibility, t.name, label, version_number(body.get("version"), "version")
        )
        return json_response(api.as_dict(report))

    async def compatibility(request: Request, t: api.Target) -> Response:
        identity = server.require(request, "admin")
        body = await json_body(request, {"mode": str, "reason": str})
        mode = validate_mode(body.get("mode"))
        event = await blocking(
            server.registry.set_compatibility, t.name, mode, author=identity.name, reason=body.get("reason")
        )
        await server.caught_up(event.rev)
        return json_response({"event": api.event_json(event)})

    routes: dict[tuple[str, bool, str], Callable[[Request, api.Target], Awaitable[Response]]] = {
        ("", False, "GET"): get_prompt,
        ("versions", False, "GET"): list_versions,
        ("versions", False, "POST"): add_version,
        ("versions", True, "GET"): get_version,
        ("resolve", False, "GET"): resolve,
        ("labels", True, "PUT"): label_write,
        ("labels", True, "DELETE"): label_write,
        ("rollback", True, "POST"): label_write,
        ("history", False, "GET"): history,
        ("diff", False, "GET"): diff,
        ("check", False, "POST"): check,
        ("compatibility", False, "PUT"): compatibility,
        **label_handlers(server),  # requests and protection of a label
    }

    async def fleet(request: Request) -> Response:
        server.require(request, "reader")
        members = await blocking(server.registry.fleet)
        rev = await blocking(server.registry.revision)
        return json_response({"rev": rev, "members": [m.model_dump(mode="json") for m in members]})

    async def events(request: Request) -> Response:
        server.require(request, "reader")
        raw = request.headers.get("last-event-id") or request.query_params.get("after")
        last = None if raw is None or raw == "" else version_number(raw, "Last-Event-ID", zero=True)
        assert server.hub is not None
        if server.hub.subscribers >= server.max_streams:
            raise RegistryUnavailableError(
                f"promptreg serve has {server.hub.subscribers} change streams open, its limit (--max-streams); "
                "try again later"
            )
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        return StreamingResponse(server.hub.subscribe(last), media_type="text/event-stream", headers=headers)

    async def session(request: Request) -> Response:
        if request.method == "DELETE":
            server.sessions.close(request.cookies.get(SESSION_COOKIE, ""))
            response = json_response({"signed_out": True})
            response.delete_cookie(SESSION_COOKIE, path="/")
            return response
        body = await json_body(request, {"token": str})
        identity = server.tokens.authenticate(body.get("token") or "")
        if identity is None:
            raise AuthenticationRequiredError("the token is not valid")
        response = json_response({"name": identity.name, "role": identity.role})
        response.set_cookie(
            SESSION_COOKIE, server.sessions.open(identity), httponly=True, samesite="strict", path="/",
            secure=request.url.scheme == "https",
        )  # fmt: skip
        return response

    async def whoami(request: Request) -> Response:
        identity, by_cookie = server.identify(request)
        return json_response(
            {"name": identity.name, "role": identity.role, "session": by_cookie, "tokens": bool(server.tokens)}
        )

    async def status(request: Request) -> Response:
        server.require(request, "reader")
        state = server.client.status()
        hub = server.hub
        return json_response(
            {"state": state.state.value, "rev": state.rev, "subscribers": 0 if hub is None else hub.subscribers}
        )

    async def openapi(request: Request) -> Response:
        return json_response(openapi_document())

    def wrap(endpoint: Endpoint) -> Endpoint:
        return errors(server, endpoint)

    return [
        Route("/openapi.json", wrap(openapi), methods=["GET"]),
        Route("/api/v1/prompts", wrap(list_prompts), methods=["GET", "POST"]),
        Route("/api/v1/prompts/{rest:path}", wrap(prompt_routes), methods=["GET", "POST", "PUT", "DELETE"]),
        Route("/api/v1/fleet", wrap(fleet), methods=["GET"]),
        Route("/api/v1/events", wrap(events), methods=["GET"]),
        Route("/api/v1/session", wrap(session), methods=["POST", "DELETE"]),
        Route("/api/v1/whoami", wrap(whoami), methods=["GET"]),
        Route("/api/v1/status", wrap(status), methods=["GET"]),
        *(Route(path, wrap(endpoint), methods=methods) for path, endpoint, methods in request_endpoints(server)),
    ]


def _prompt_json(prompt: Any) -> dict[str, Any]:
    latest = prompt.latest
    return {
        "name": prompt.name,
        "description": prompt.description,
        "author": prompt.author,
        "created_at": prompt.created_at.isoformat(),
        "compatibility": prompt.compatibility,
        "labels": dict(prompt.labels),
        "rollouts": {label: rollout.model_dump(mode="json") for label, rollout in prompt.rollouts.items()},
        "latest": None if latest is None else latest.version,
        "versions": [api.version_summary(v) for v in prompt.versions],
    }
