"""What every request of ``promptreg serve`` shares (:class:`Server`): the registry, the push-fed
client, the change hub, the tokens and sessions, and the caches of answers built once."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from starlette.requests import Request

from promptreg.client import PromptClient
from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.api import json_response
from promptreg.registry.cli.serve.auth import (
    ANONYMOUS,
    CONSOLE_HEADER,
    SESSION_COOKIE,
    AuthenticationRequiredError,
    Identity,
    PermissionDeniedError,
    Sessions,
    TokenStore,
)
from promptreg.registry.cli.serve.stream import ChangeHub
from promptreg.registry.errors import (
    ApprovalError,
    CompositionError,
    IncompatibleVersionError,
    InvalidInputError,
    LabelConflictError,
    LabelNotFoundError,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistryError,
    ProtectedLabelError,
    RegistryCorruptError,
    RegistryUnavailableError,
    RequestNotFoundError,
    RequestStateError,
    RollbackUnavailableError,
    RolloutActiveError,
    VersionNotFoundError,
)

STATUS: tuple[tuple[type[Exception], int], ...] = (
    (AuthenticationRequiredError, 401),
    (PermissionDeniedError, 403),
    (PromptNotFoundError, 404),
    (VersionNotFoundError, 404),
    (LabelNotFoundError, 404),
    (PromptExistsError, 409),
    (LabelConflictError, 409),
    (IncompatibleVersionError, 409),
    (RollbackUnavailableError, 409),
    (ProtectedLabelError, 409),  # a direct move of a protected label: request it (docs/governance.md)
    (RolloutActiveError, 409),
    (CompositionError, 409),
    (RequestNotFoundError, 404),
    (RequestStateError, 409),
    (ApprovalError, 403),  # the requester deciding its own request, or one identity approving twice
    (InvalidInputError, 400),
    (RegistryUnavailableError, 503),
    (RegistryCorruptError, 500),
)
"""Each promptreg error's HTTP status (the first class that matches)."""


def status_of(exc: Exception) -> int:
    """The HTTP status of a promptreg error (500 for anything unexpected)."""
    return next((status for kind, status in STATUS if isinstance(exc, kind)), 500)


class Server:
    """What every request shares."""

    def __init__(
        self,
        registry: PromptRegistry,
        client: PromptClient,
        tokens: TokenStore,
        *,
        heartbeat: float = 15.0,
        max_streams: int = 10_000,
        fleet_wait_default: float | None = None,
    ) -> None:
        self.registry = registry
        self.client = client
        self.tokens = tokens
        self.sessions = Sessions()
        self.heartbeat = heartbeat
        self.max_streams = max_streams
        self.fleet_wait_default = fleet_wait_default
        self.hub: ChangeHub | None = None
        self._descriptions: dict[str, str | None] = {}
        self._descriptions_lock = threading.Lock()
        self._resolved: dict[tuple[str, str, int], tuple[object, str, bytes]] = {}
        self._catalog: api.Catalog | None = None

    def catalog(self) -> api.Catalog:
        """What the client serves, names sorted: rebuilt only when its revision moved."""
        known = self._catalog
        if known is not None and known.rev == self.client.status().rev:
            return known
        rev, pointers = self.client.pointers()
        self._catalog = fresh = api.Catalog(rev, pointers, sorted(pointers))
        return fresh

    # -- auth -------------------------------------------------------------------------------------

    def identify(self, request: Request) -> tuple[Identity, bool]:
        """Who sent ``request`` and whether by the console's cookie; raises 401 for a bad token."""
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            identity = self.tokens.authenticate(token.strip()) if scheme.lower() == "bearer" else None
            if identity is None:
                raise AuthenticationRequiredError("the bearer token is not valid")
            return identity, False
        session = request.cookies.get(SESSION_COOKIE)
        if session:
            identity = self.sessions.identity(session)
            if identity is not None:
                return identity, True
        if not self.tokens:
            return ANONYMOUS, False
        raise AuthenticationRequiredError("a token is needed: 'Authorization: Bearer <token>' (docs/serve.md)")

    def require(self, request: Request, role: str) -> Identity:
        """The request's identity if it has ``role``; 401 or 403 otherwise."""
        identity, by_cookie = self.identify(request)
        if role != "reader":
            if identity is ANONYMOUS:
                raise AuthenticationRequiredError(
                    "writes need a writer or admin token; this server has no tokens configured (docs/serve.md)"
                )
            if by_cookie and request.headers.get(CONSOLE_HEADER) != "1":
                raise PermissionDeniedError(f"a write signed in by cookie must send the {CONSOLE_HEADER} header")
        if not identity.may(role):
            raise PermissionDeniedError(f"{identity.name!r} is a {identity.role}; this needs {role}")
        return identity

    # -- cached reads -----------------------------------------------------------------------------

    def descriptions(self, names: list[str]) -> dict[str, str | None]:
        """Each prompt's description (read once, all missing ones in one read: a description never
        changes; a prompt created anew is read again, :meth:`forget`)."""
        with self._descriptions_lock:
            missing = [name for name in names if name not in self._descriptions]
        if missing:
            try:
                found = self.registry.describe(missing)
            except PromptRegistryError:
                found = {}
            with self._descriptions_lock:
                self._descriptions.update(found)
        with self._descriptions_lock:
            return {name: self._descriptions.get(name) for name in names}

    def forget(self, event: Any) -> None:
        """A change read by the hub: a re-created prompt's description is read again."""
        if event.action == "create_prompt":
            with self._descriptions_lock:
                self._descriptions.pop(event.prompt, None)

    async def caught_up(self, rev: int, timeout: float = 2.0) -> bool:
        """Wait until the server's client serves revision ``rev`` (at most ``timeout`` seconds): a
        caller that wrote through the API then resolves what it wrote (read-your-writes)."""
        deadline = time.monotonic() + timeout
        delay = 0.001
        while self.client.status().rev < rev:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)
        return True

    def resolved(self, name: str, label: str, key: str | None = None) -> tuple[str, bytes]:
        """``(etag, body)`` of what ``label`` of ``name`` points at, from the client's cache (``key``
        picks the variant of a running rollout, as ``PromptClient.get`` does); the body is encoded
        once per version served, not per request."""
        version = self.client.get(name, label, key=key)
        known = self._resolved.get((name, label, version.version))
        if known is not None and known[0] is version:
            return known[1], known[2]
        data = {"name": name, "label": label, **api.version_json(version)}
        body = json_response(data).body
        etag = '"' + data["sha256"][:16] + "-" + str(version.version) + '"'
        self._resolved[(name, label, version.version)] = (version, etag, bytes(body))
        return etag, bytes(body)


# -- handlers -------------------------------------------------------------------------------------
