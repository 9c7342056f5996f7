"""The API's routes of protected labels and move requests (docs/governance.md, docs/serve.md).

The identity of every step is the token's name, used as the author: a body never names who acts,
so an approver token cannot approve as someone else, and the registry refuses the token that made a
request when it tries to decide it (:class:`~promptreg.ApprovalError`, 403). Roles: ``writer``
requests, ``approver`` approves, rejects and applies, ``admin`` protects. Which store role the
server's own connection has decides what the store lets it do on top (docs/governance.md).

:func:`label_handlers` are the handlers under ``/api/v1/prompts/{name}/labels/{label}/...``;
:func:`request_endpoints` the ``/api/v1/requests`` routes. Both return plain endpoints: the routes
module wraps them in its one error mapping.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.api import blocking, json_body, json_response, version_number
from promptreg.registry.cli.serve.server import Server
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.governance import MAX_LISTED, MoveRequest, validate_request_id
from promptreg.registry.validation import validate_label

Endpoint = Callable[[Request], Awaitable[Response]]
LabelHandler = Callable[[Request, api.Target], Awaitable[Response]]

DECISIONS = ("approve", "reject", "apply")
"""The actions on a request: ``POST /api/v1/requests/{id}/<action>``."""


def request_json(request: MoveRequest) -> dict[str, Any]:
    """A move request as the API shows it: the model's own fields."""
    return request.model_dump(mode="json")


def label_handlers(server: Server) -> dict[tuple[str, bool, str], LabelHandler]:
    """``POST .../labels/{label}/requests`` (writer) and ``PUT``/``DELETE .../labels/{label}/protection``
    (admin), keyed as the routes module keys its prompt handlers."""

    async def request_move(request: Request, t: api.Target) -> Response:
        identity = server.require(request, "writer")
        body = await json_body(request, {"version": int, "reason": str, "expires_in": (int, float)})
        if not body.get("reason"):
            raise InvalidInputError("field 'reason' is required: the approvers read it")
        version = version_number(body.get("version"), "version")
        extra = {} if body.get("expires_in") is None else {"expires_in": body["expires_in"]}
        made = await blocking(
            server.registry.request_label_move, t.name, t.argument or "", version, author=identity.name,
            reason=body["reason"], **extra,
        )  # fmt: skip
        await server.caught_up(await blocking(server.registry.revision))
        return json_response(request_json(made), 201)

    async def protection(request: Request, t: api.Target) -> Response:
        identity = server.require(request, "admin")
        label = t.argument or ""
        if request.method == "PUT":
            body = await json_body(request, {"approvals": int, "reason": str}, empty_ok=True)
            approvals = 1 if body.get("approvals") is None else body["approvals"]
            event = await blocking(
                server.registry.protect_label, t.name, label, approvals=approvals, author=identity.name,
                reason=body.get("reason"),
            )  # fmt: skip
        else:
            body = await json_body(request, {"reason": str}, empty_ok=True)
            event = await blocking(
                server.registry.unprotect_label, t.name, label, author=identity.name, reason=body.get("reason")
            )
        await server.caught_up(event.rev)
        return json_response({"event": api.event_json(event)})

    return {
        ("requests", True, "POST"): request_move,
        ("protection", True, "PUT"): protection,
        ("protection", True, "DELETE"): protection,
    }


def request_endpoints(server: Server) -> list[tuple[str, Endpoint, list[str]]]:
    """``(path, endpoint, methods)`` of ``/api/v1/requests``, ``/api/v1/requests/{id}`` and its
    decisions (:data:`DECISIONS`, approver)."""

    async def list_requests(request: Request) -> Response:
        server.require(request, "reader")
        query = request.query_params
        limit = query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= MAX_LISTED:
            raise InvalidInputError(f"limit must be 1 to {MAX_LISTED}")
        label = query.get("label") or None
        found = await blocking(
            server.registry.list_requests, name=query.get("prompt") or None,
            label=None if label is None else validate_label(label, settable=True),
            state=query.get("state") or None, limit=int(limit),
        )  # fmt: skip
        return json_response({"requests": [request_json(r) for r in found]})

    async def get_request(request: Request) -> Response:
        server.require(request, "reader")
        request_id = validate_request_id(request.path_params["request_id"])
        return json_response(request_json(await blocking(server.registry.get_request, request_id)))

    async def decide(request: Request) -> Response:
        action = request.path_params["action"]
        if action not in DECISIONS:
            return json_response(api.error_body("NotFound", f"no action {action[:20]!r} on a request"), 404)
        identity = server.require(request, "approver")
        request_id = validate_request_id(request.path_params["request_id"])
        wait = api.wait_seconds(request)
        if action == "approve":
            body = await json_body(request, {"apply": bool}, empty_ok=True)
            apply = True if body.get("apply") is None else body["apply"]
            decided = await blocking(server.registry.approve, request_id, author=identity.name, apply=apply)
        elif action == "reject":
            body = await json_body(request, {"reason": str}, empty_ok=True)
            decided = await blocking(
                server.registry.reject, request_id, author=identity.name, reason=body.get("reason")
            )
        else:
            await json_body(request, {}, empty_ok=True)
            decided = await blocking(server.registry.apply_request, request_id, author=identity.name)
        rev = decided.applied_rev if decided.applied_rev is not None else await blocking(server.registry.revision)
        await server.caught_up(rev)  # read-your-writes: resolve then serves the moved label
        data = request_json(decided)
        if wait is not None and decided.applied_rev is not None:  # as a label move's ?wait: the fleet's confirmation
            data["fleet"] = api.fleet_json(await blocking(server.registry.wait_for_fleet, rev, timeout=wait))
        return json_response(data)

    return [
        ("/api/v1/requests", list_requests, ["GET"]),
        ("/api/v1/requests/{request_id}", get_request, ["GET"]),
        ("/api/v1/requests/{request_id}/{action}", decide, ["POST"]),
    ]
