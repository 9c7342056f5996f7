"""The HTTP API of ``promptreg serve``, under ``/api/v1`` (docs/serve.md has every route).

Reads of labels (``resolve``, the prompt list) come from the server's own push-fed
:class:`~promptreg.PromptClient` cache, with no registry round trip; every write goes through the
registry's own atomic, audited write with the token's name as author. Errors are
``{"error": {"type": "<promptreg error class>", "message": "..."}}``.

A prompt name may contain ``/`` and is written into the path as it is (``/prompts/team/critic``).
The last segments name the sub-resource (``versions``, ``labels``, ``history``, ``diff``, ``check``,
``resolve``, ``compatibility``); a name whose own segments are one of those words encodes its
slashes as ``%2F`` (``/prompts/team%2Fhistory``), which every route accepts.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from promptreg.registry.cli.options import unified_diff
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.fleet import FleetMember, FleetWait
from promptreg.registry.models import AuditEvent, Prompt, PromptVersion, PromptVersionLike
from promptreg.registry.validation import validate_label, validate_name

MAX_BODY_BYTES = 8 * 1024 * 1024
"""A request body over this is refused before it is parsed (a version's text is at most 1 MiB)."""
MAX_WAIT_SECONDS = 60.0
MAX_PAGE = 1000
DEFAULT_PAGE = 100

SUFFIXES = ("versions", "labels", "history", "diff", "check", "resolve", "compatibility")
"""The route words after a prompt's name (a name with one of them as a segment is written with %2F)."""
LABEL_ACTIONS = ("rollback", "requests", "protection")
"""The route words after ``labels/{label}``: roll it back, request its move, protect it."""


# -- JSON shapes ---------------------------------------------------------------------------------


def content_sha256(version: PromptVersionLike) -> str:
    """The sha256 of a version's content: its text, or a chat version's messages as compact JSON."""
    if version.messages is None:
        data = version.prompt_text
    else:
        data = json.dumps(list(version.messages), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def version_json(version: PromptVersionLike) -> dict[str, Any]:
    """One version as the API shows it."""
    return {
        "version": version.version,
        "type": version.type,
        "prompt_text": version.prompt_text if version.messages is None else None,
        "messages": None if version.messages is None else list(version.messages),
        "config": version.config,
        "metadata": version.metadata,
        "author": version.author,
        "message": version.message,
        "created_at": version.created_at.isoformat(),
        "sha256": content_sha256(version),
        "variables": sorted(version.variables),
        "placeholders": sorted(version.placeholders),
        **({"partials": dict(partials)} if (partials := getattr(version, "partials", None)) else {}),
    }


def version_summary(version: PromptVersionLike) -> dict[str, Any]:
    """A version in a list: everything but the content."""
    return {
        "version": version.version,
        "type": version.type,
        "author": version.author,
        "message": version.message,
        "created_at": version.created_at.isoformat(),
        "sha256": content_sha256(version),
    }


def event_json(event: AuditEvent) -> dict[str, Any]:
    """One audit entry (the change stream's ``data`` too)."""
    return event.model_dump(mode="json")


def fleet_json(wait: FleetWait) -> dict[str, Any]:
    """A fleet confirmation: who serves the write's revision."""
    total = len(wait.reached) + len(wait.lagging)
    return {**wait.model_dump(mode="json"), "clients": total}


def label_fleet(prompt: Prompt, history: list[AuditEvent], members: list[FleetMember]) -> dict[str, Any]:
    """Per label: the revision of its last move and how many reporting clients serve it."""
    moved: dict[str, int] = {}
    for event in history:
        if event.label is not None:
            moved[event.label] = event.rev
        if event.action == "add_version":
            moved["latest"] = event.rev
    labels = {}
    for label in [*prompt.labels, "latest"]:
        rev = moved.get(label, 0)
        labels[label] = {"rev": rev, "serving": sum(1 for m in members if m.rev >= rev)}
    return {"clients": len(members), "labels": labels}


def diff_json(name: str, old: PromptVersion, new: PromptVersion) -> dict[str, Any]:
    """A unified diff of two versions' content, and their config and metadata side by side."""
    text = unified_diff(name, old, new)
    return {
        "name": name,
        "from": old.version,
        "to": new.version,
        "diff": text,
        "config": {"from": old.config, "to": new.config},
        "metadata": {"from": old.metadata, "to": new.metadata},
        "identical": not text and old.config == new.config and old.metadata == new.metadata,
    }


# -- request parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a ``/api/v1/prompts/...`` path names: a prompt, and the sub-resource after it."""

    name: str
    resource: str  # "" (the prompt), or one of SUFFIXES, or one of LABEL_ACTIONS
    argument: str | None = None  # the version number or label


def parse_prompt_path(raw_path: bytes) -> Target:
    """Split ``/api/v1/prompts/<name>[/<resource>...]`` (raw, still percent-encoded) into a
    :class:`Target`; raises :class:`~promptreg.InvalidInputError` (404 for an unknown shape)."""
    prefix = b"/api/v1/prompts/"
    try:
        rest = raw_path[len(prefix) :].decode("ascii")
        segments = [unquote(part, errors="strict") for part in rest.split("/")]
    except UnicodeDecodeError:
        raise InvalidInputError("the path must be ASCII, percent-encoding UTF-8") from None
    resource, argument = "", None
    if len(segments) >= 2 and segments[-1] in SUFFIXES and segments[-1] != "labels":
        resource = segments.pop()
    elif len(segments) >= 3 and segments[-2] in ("versions", "labels"):
        argument = segments.pop()
        resource = segments.pop()
    elif len(segments) >= 4 and segments[-1] in LABEL_ACTIONS and segments[-3] == "labels":
        resource = segments.pop()
        argument = segments.pop()
        segments.pop()
    name = validate_name("/".join(segments))
    if resource == "labels" or resource in LABEL_ACTIONS:
        validate_label(argument)
    return Target(name, resource, argument)


def version_number(value: object, what: str, *, zero: bool = False) -> int:
    """An integer version number from a path, query or body; 400 otherwise."""
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < (0 if zero else 1) or value > 2**53:
        raise InvalidInputError(f"{what} must be a version number, got {str(value)[:40]!r}")
    return value


def wait_seconds(request: Request) -> float | None:
    """``?wait=SECONDS`` on a label write: wait for the fleet's confirmation that long."""
    raw = request.query_params.get("wait")
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise InvalidInputError(f"wait must be a number of seconds, got {raw[:20]!r}") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_WAIT_SECONDS:
        raise InvalidInputError(f"wait must be between 0 and {MAX_WAIT_SECONDS:g} seconds")
    return seconds


async def json_body(
    request: Request, allowed: Mapping[str, type | tuple[type, ...]], *, empty_ok: bool = False
) -> dict[str, Any]:
    """The request's JSON object, bounded before parsing; every key known and of its type; 400 otherwise."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise InvalidInputError(f"the request body is over the {MAX_BODY_BYTES}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidInputError(f"the request body is over the {MAX_BODY_BYTES}-byte limit")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        if empty_ok:
            return {}
        raise InvalidInputError("the request needs a JSON object body")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"the body is not JSON: {str(exc)[:120]}") from None
    if not isinstance(body, dict):
        raise InvalidInputError("the body must be a JSON object")
    for key, value in body.items():
        if key not in allowed:
            raise InvalidInputError(f"unknown field {key[:40]!r}; expected some of {', '.join(allowed)}")
        kinds = allowed[key]
        if value is not None and (
            not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds))
        ):
            raise InvalidInputError(f"field {key!r} has the wrong type ({type(value).__name__})")
    return body


def _tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    """Compact JSON."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return Response(body, status, headers=dict(headers or {}), media_type="application/json")


def error_body(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    """The error shape."""
    return {"error": {"type": kind, "message": message, **extra}}


# -- the page of prompts -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Catalog:
    """Every prompt the server's client serves at one revision: labels by name, and the names sorted
    (built once per revision, so a page is two binary searches and a slice)."""

    rev: int
    pointers: Mapping[str, Mapping[str, int]]
    names: list[str]

    def matching(self, prefix: str) -> tuple[int, int]:
        """The range of :attr:`names` that start with ``prefix``."""
        start = bisect.bisect_left(self.names, prefix)
        end = bisect.bisect_left(self.names, prefix + "\U0010ffff", start) if prefix else len(self.names)
        return start, end


def prompt_page(
    catalog: Catalog,
    descriptions: Callable[[list[str]], Mapping[str, str | None]],
    prefix: str,
    limit: int,
    cursor: str | None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """``GET /api/v1/prompts``: up to ``limit`` names after ``cursor`` starting with ``prefix``, sorted;
    ``total`` counts every name with the prefix. ``names`` (sorted) replaces the catalog's (a search)."""
    if names is None:
        start, end = catalog.matching(prefix)
        names = catalog.names
    else:
        start, end = 0, len(names)
    total = end - start
    if cursor is not None:
        start = max(start, bisect.bisect_right(names, cursor, start, end))
    page = names[start : min(end, start + limit)]
    described = descriptions(page)
    prompts = []
    for name in page:
        labels = dict(catalog.pointers[name])
        latest = labels.pop("latest", None)
        prompts.append({"name": name, "description": described.get(name), "labels": labels, "latest": latest})
    more = start + limit < end
    return {"prompts": prompts, "next_cursor": page[-1] if more and page else None, "total": total}


def as_dict(report: Any) -> dict[str, Any]:
    """A dataclass report (compatibility) as JSON."""
    data = asdict(report)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in data.items()}


async def blocking(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a registry call (blocking I/O) on the thread pool."""
    return await run_in_threadpool(function, *args, **kwargs)
