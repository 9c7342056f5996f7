"""``/openapi.json``: the OpenAPI 3.1 description of ``promptreg serve``'s API.

Written out here (the routes parse their own paths, see :mod:`~promptreg.registry.cli.serve.api`);
the schemas of audit entries and fleet members come from the pydantic models themselves, and a test
checks that every route the application serves is described and every described route answers.
"""

from __future__ import annotations

import functools
from typing import Any

from promptreg.registry.fleet import FleetMember
from promptreg.registry.governance import MAX_APPROVALS, MAX_EXPIRES_IN, MoveRequest, RequestState
from promptreg.registry.models import AuditEvent

_REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    str(code): _json(_ref("Error"), text)
    for code, text in (
        (400, "invalid input (a malformed body too)"),
        (401, "no valid token"),
        (403, "the token's role may not do this; an approval the rules refuse (the requester's own, twice)"),
        (404, "no such prompt, version, label or move request"),
        (
            409,
            "compare-and-set conflict, compatibility refusal, name taken, a protected label moved directly "
            "(code 'protected_label'), a request already decided or expired",
        ),
        (503, "the registry cannot be reached"),
    )
}

_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "the prompt name; may contain '/' (or '%2F')",
}
_LABEL = {"name": "label", "in": "path", "required": True, "schema": {"type": "string"}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"}}
_WAIT = {
    "name": "wait",
    "in": "query",
    "required": False,
    "schema": {"type": "number", "minimum": 0, "maximum": 60},
    "description": "seconds to wait for the fleet's confirmation (the response's 'fleet')",
}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
    role: str = "reader",
    status: str = "200",
    body_required: bool = True,
) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "description": f"Needs the '{role}' role (or a stronger one).",
        "parameters": params or [],
        "responses": {status: ok, **_ERRORS},
    }
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return operation


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required or [], "additionalProperties": False}


_STR, _INT, _BOOL, _OBJ = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}, {"type": "object"}
_OPT_STR = {"type": ["string", "null"]}
_APPROVALS = {"type": "integer", "minimum": 1, "maximum": MAX_APPROVALS, "description": "default 1"}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": 1000}


def _governance_paths() -> dict[str, Any]:
    """Protected labels and move requests (docs/governance.md)."""
    request = _json(_ref("MoveRequest"))
    event = _json(_object({"event": _ref("AuditEvent")}))
    expires = {"type": "number", "minimum": 1, "maximum": MAX_EXPIRES_IN}
    query = [{"name": name, "in": "query", "schema": _STR} for name in ("prompt", "label")]
    return {
        "/api/v1/prompts/{name}/labels/{label}/requests": {
            "post": _op("Request the move of a protected label (the token's name is the requester)",
                        _json(_ref("MoveRequest"), "Created"), params=[_NAME, _LABEL], role="writer", status="201",
                        body=_object({"version": _INT, "reason": _STR, "expires_in": expires}, ["version", "reason"]))
        },
        "/api/v1/prompts/{name}/labels/{label}/protection": {
            "put": _op("Protect a label: it then moves only through an approved request", event,
                       params=[_NAME, _LABEL], role="admin", body_required=False,
                       body=_object({"approvals": _APPROVALS, "reason": _STR})),
            "delete": _op("Remove a label's protection", event, params=[_NAME, _LABEL], role="admin",
                          body=_object({"reason": _STR}), body_required=False),
        },
        "/api/v1/requests": {
            "get": _op("Move requests, newest first",
                       _json(_object({"requests": {"type": "array", "items": _ref("MoveRequest")}})),
                       params=[{"name": "state", "in": "query", "schema": {"enum": [s.value for s in RequestState]}},
                               *query, {"name": "limit", "in": "query", "schema": _LIMIT}])
        },
        "/api/v1/requests/{id}": {"get": _op("One move request", request, params=[_ID])},
        "/api/v1/requests/{id}/approve": {
            "post": _op("Approve (not with the requester's token; each identity once); the approval completing the "
                        "count moves the label unless 'apply' is false", request, params=[_ID, _WAIT], role="approver",
                        body=_object({"apply": _BOOL}), body_required=False)
        },
        "/api/v1/requests/{id}/reject": {
            "post": _op("Reject (not with the requester's token)", request, params=[_ID], role="approver",
                        body=_object({"reason": _STR}), body_required=False)
        },
        "/api/v1/requests/{id}/apply": {
            "post": _op("Move the label of an approved request", request, params=[_ID, _WAIT], role="approver")
        },
    }  # fmt: skip


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The whole document (built once)."""
    schemas: dict[str, Any] = {
        "Error": _object({"error": _object({"type": _STR, "message": _STR}, ["type", "message"])}, ["error"]),
        "VersionSummary": {
            "type": "object",
            "properties": {
                "version": _INT,
                "type": {"enum": ["text", "chat"]},
                "author": _OPT_STR,
                "message": _OPT_STR,
                "created_at": _STR,
                "sha256": _STR,
            },
        },
        "Version": {
            "type": "object",
            "properties": {
                "name": _STR,
                "version": _INT,
                "type": {"enum": ["text", "chat"]},
                "prompt_text": _OPT_STR,
                "messages": {"type": ["array", "null"], "items": _OBJ},
                "config": _OBJ,
                "metadata": _OBJ,
                "author": _OPT_STR,
                "message": _OPT_STR,
                "created_at": _STR,
                "sha256": _STR,
                "variables": {"type": "array", "items": _STR},
                "placeholders": {"type": "array", "items": _STR},
            },
        },
        "Prompt": {
            "type": "object",
            "properties": {
                "name": _STR,
                "description": _OPT_STR,
                "author": _OPT_STR,
                "created_at": _STR,
                "compatibility": {"enum": ["none", "backward", "full"]},
                "labels": {"type": "object", "additionalProperties": _INT},
                "latest": {"type": ["integer", "null"]},
                "versions": {"type": "array", "items": _ref("VersionSummary")},
                "protected": {"type": "object", "additionalProperties": _INT, "description": "label -> approvals"},
                "fleet": _OBJ,
            },
        },
        "LabelWrite": {"type": "object", "properties": {"event": _ref("AuditEvent"), "fleet": _ref("FleetWait")}},
        "FleetWait": {
            "type": "object",
            "properties": {
                "rev": _INT,
                "reached": {"type": "array", "items": _STR},
                "lagging": {"type": "array", "items": _STR},
                "gone": {"type": "array", "items": _STR},
                "elapsed": {"type": "number"},
                "complete": _BOOL,
                "clients": _INT,
            },
        },
        "Compatibility": {
            "type": "object",
            "properties": {
                "compatible": _BOOL,
                "mode": _STR,
                "added": {"type": "array", "items": _STR},
                "removed": {"type": "array", "items": _STR},
                "current_version": {"type": ["integer", "null"]},
                "version": {"type": ["integer", "null"]},
            },
        },
    }
    for model in (AuditEvent, FleetMember, MoveRequest):
        schema = model.model_json_schema(ref_template=_REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    events = {"type": "array", "items": _ref("AuditEvent")}
    paths = {
        "/api/v1/prompts": {
            "get": _op(
                "List prompts (from the server's cache)",
                _json(
                    _object(
                        {
                            "prompts": {
                                "type": "array",
                                "items": _object(
                                    {
                                        "name": _STR,
                                        "description": _OPT_STR,
                                        "labels": _OBJ,
                                        "latest": {"type": ["integer", "null"]},
                                    }
                                ),
                            },
                            "next_cursor": _OPT_STR,
                            "total": _INT,
                        }
                    )
                ),
                params=[
                    {"name": "prefix", "in": "query", "schema": _STR},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "cursor", "in": "query", "schema": _STR},
                ],
            ),
            "post": _op(
                "Create a prompt",
                _json(_ref("Prompt"), "Created"),
                role="writer",
                status="201",
                body=_object(
                    {"name": _STR, "description": _STR, "compatibility": {"enum": ["none", "backward", "full"]}},
                    ["name"],
                ),
            ),
        },
        "/api/v1/prompts/{name}": {
            "get": _op("A prompt: versions, labels, fleet per label", _json(_ref("Prompt")), params=[_NAME])
        },
        "/api/v1/prompts/{name}/versions": {
            "get": _op(
                "Every version (no content)",
                _json(_object({"name": _STR, "versions": {"type": "array", "items": _ref("VersionSummary")}})),
                params=[_NAME],
            ),
            "post": _op(
                "Add a version (and move labels to it)",
                _json(_ref("Version"), "Created"),
                params=[_NAME],
                role="writer",
                status="201",
                body=_object(
                    {
                        "prompt_text": _STR,
                        "messages": {"type": "array", "items": _OBJ},
                        "config": _OBJ,
                        "metadata": _OBJ,
                        "message": _STR,
                        "labels": {"type": "array", "items": _STR},
                    }
                ),
            ),
        },
        "/api/v1/prompts/{name}/versions/{n}": {
            "get": _op(
                "One version",
                _json(_ref("Version")),
                params=[_NAME, {"name": "n", "in": "path", "required": True, "schema": _INT}],
            )
        },
        "/api/v1/prompts/{name}/resolve": {
            "get": _op(
                "The version a label points at, from the server's push-fed cache; ETag / If-None-Match -> 304. "
                "During a rollout, 'key' (a user or session id) picks the variant, as PromptClient.get does",
                _json(_ref("Version")),
                params=[
                    _NAME,
                    {"name": "label", "in": "query", "schema": _STR},
                    {"name": "key", "in": "query", "schema": _STR},
                ],
            )
        },
        "/api/v1/prompts/{name}/labels/{label}": {
            "put": _op(
                "Point a label at a version (compare-and-set with 'expect')",
                _json(_ref("LabelWrite")),
                params=[_NAME, _LABEL, _WAIT],
                role="writer",
                body=_object({"version": _INT, "expect": _INT, "force": _BOOL, "reason": _STR}, ["version"]),
            ),
            "delete": _op(
                "Delete a label",
                _json(_ref("LabelWrite")),
                params=[_NAME, _LABEL, _WAIT],
                role="writer",
                body=_object({"expect": _INT, "reason": _STR}),
                body_required=False,
            ),
        },
        "/api/v1/prompts/{name}/labels/{label}/rollback": {
            "post": _op(
                "Move a label back to where it pointed before ('expect': compare-and-set)",
                _json(_ref("LabelWrite")),
                params=[_NAME, _LABEL, _WAIT],
                role="writer",
                body=_object({"expect": _INT, "force": _BOOL, "reason": _STR}),
                body_required=False,
            )
        },
        "/api/v1/prompts/{name}/history": {
            "get": _op("The audit trail", _json(_object({"name": _STR, "events": events})), params=[_NAME])
        },
        "/api/v1/prompts/{name}/diff": {
            "get": _op(
                "Unified diff of two versions",
                _json(_OBJ),
                params=[
                    _NAME,
                    {"name": "from", "in": "query", "required": True, "schema": _INT},
                    {"name": "to", "in": "query", "required": True, "schema": _INT},
                ],
            )
        },
        "/api/v1/prompts/{name}/check": {
            "post": _op(
                "Compatibility preview of a label move (writes nothing)",
                _json(_ref("Compatibility")),
                params=[_NAME],
                body=_object({"label": _STR, "version": _INT}, ["label", "version"]),
            )
        },
        "/api/v1/prompts/{name}/compatibility": {
            "put": _op(
                "Set the compatibility mode",
                _json(_object({"event": _ref("AuditEvent")})),
                params=[_NAME],
                role="admin",
                body=_object({"mode": {"enum": ["none", "backward", "full"]}, "reason": _STR}, ["mode"]),
            )
        },
        "/api/v1/fleet": {
            "get": _op(
                "Every reporting client",
                _json(_object({"rev": _INT, "members": {"type": "array", "items": _ref("FleetMember")}})),
            )
        },
        "/api/v1/events": {
            "get": {
                "summary": "Server-Sent Events: one 'change' event per write (id: the revision; data: an AuditEvent), "
                "resumable with Last-Event-ID (or ?after=REV), 'resync' when the gap cannot be filled, heartbeats",
                "parameters": [
                    {"name": "Last-Event-ID", "in": "header", "schema": _STR},
                    {"name": "after", "in": "query", "schema": _INT},
                ],
                "responses": {
                    "200": {"description": "the stream", "content": {"text/event-stream": {"schema": _STR}}},
                    **_ERRORS,
                },
            }
        },
        "/api/v1/session": {
            "post": _op(
                "Sign the console in: a session cookie for the token",
                _json(_OBJ),
                body=_object({"token": _STR}, ["token"]),
            ),
            "delete": _op("Sign out", _json(_OBJ)),
        },
        "/api/v1/whoami": {"get": _op("The caller's identity and role", _json(_OBJ))},
        "/api/v1/status": {"get": _op("The server's client: state, revision, stream subscribers", _json(_OBJ))},
        **_governance_paths(),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "promptreg", "version": "1", "description": "Prompt registry HTTP API (docs/serve.md)."},
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}, {}],
    }
