"""Who may do what through ``promptreg serve``: bearer tokens, roles and console sessions.

A token file (or the ``PROMPTREG_SERVE_TOKENS`` variable) holds one token per line, as
``NAME ROLE sha256:HEX``: the identity writes are audited under, its role (``reader``, ``writer``,
``approver`` or ``admin``) and the sha256 of the token. Only hashes are stored; ``promptreg token NAME --role ROLE``
makes a token and prints its line. A request's token is hashed and compared with every stored hash
in constant time (:func:`hmac.compare_digest`, no early exit), so the time taken tells nothing.

The console signs in once (``POST /api/v1/session`` with the token) and gets a random session id in
an ``HttpOnly; SameSite=Strict`` cookie: the change stream (``EventSource``) then authenticates with
the cookie, never with a token in a URL. A write authenticated by the cookie must also carry the
``X-Promptreg-Console`` header, which another site's page cannot send (no CORS is offered).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from promptreg.registry.errors import AuthenticationRequiredError, ConfigurationError, PermissionDeniedError
from promptreg.registry.validation import LABEL_PATTERN

__all__ = ["ANONYMOUS", "ROLES", "AuthenticationRequiredError", "Identity", "PermissionDeniedError", "Sessions",
           "TokenStore", "hash_token", "new_token", "token_line"]  # fmt: skip

ROLES = ("reader", "writer", "approver", "admin")
"""Each role may do what the ones before it may: read; write prompts, versions and labels (and request
the move of a protected label); approve or reject another identity's request; set a prompt's
compatibility mode and protect labels. The token's name is the identity approvals compare."""

TOKENS_ENV = "PROMPTREG_SERVE_TOKENS"
"""Token lines (``NAME ROLE sha256:HEX``), separated by newlines or ``;``."""
TOKENS_FILE_ENV = "PROMPTREG_SERVE_TOKENS_FILE"
MAX_TOKEN_FILE_BYTES = 256 * 1024
MAX_TOKEN_BYTES = 512
SESSION_COOKIE = "promptreg_session"
CONSOLE_HEADER = "x-promptreg-console"
SESSION_SECONDS = 12 * 3600
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made a request: the token's name (the author of its writes) and its role."""

    name: str
    role: str

    def may(self, role: str) -> bool:
        """Whether this identity has ``role`` or a stronger one."""
        return ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Identity("anonymous", "reader")
"""Who reads when no tokens are configured (the server then listens on loopback only)."""


def hash_token(token: str) -> str:
    """``sha256:HEX`` of a token, as the token file stores it."""
    return "sha256:" + hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A fresh random token (256 bits)."""
    return "prt_" + secrets.token_urlsafe(32)


def token_line(name: str, role: str, token: str) -> str:
    """The token file line for ``token``."""
    _check_name(name, "the command line")
    _check_role(role, "the command line")
    return f"{name} {role} {hash_token(token)}"


def _check_name(name: str, where: str) -> None:
    if not LABEL_PATTERN.fullmatch(name) or len(name) > 64:
        raise ConfigurationError(f"{where}: token name {name[:40]!r} must be letters, digits and . _ - (up to 64)")


def _check_role(role: str, where: str) -> None:
    if role not in ROLES:
        raise ConfigurationError(f"{where}: role {role[:20]!r} is none of {', '.join(ROLES)}")


class TokenStore:
    """The configured tokens (hashed); empty when none are."""

    def __init__(self, entries: list[tuple[str, str, bytes]] | None = None) -> None:
        self._entries = entries or []

    @classmethod
    def parse(cls, text: str, source: str) -> TokenStore:
        """Tokens from lines of ``NAME ROLE sha256:HEX`` (``#`` comments, blank lines and ``;`` as a
        line break allowed). Raises :class:`~promptreg.ConfigurationError` naming the line; a line
        never echoes what could be a token."""
        entries: list[tuple[str, str, bytes]] = []
        names: set[str] = set()
        for number, raw in enumerate(text.replace(";", "\n").splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}, line {number}"
            parts = line.split()
            if len(parts) != 3 or not parts[2].startswith("sha256:"):
                raise ConfigurationError(f"{where}: expected 'NAME ROLE sha256:HEX' (a hash, never the token itself)")
            name, role, digest = parts
            _check_name(name, where)
            _check_role(role, where)
            hex_digest = digest.removeprefix("sha256:")
            if len(hex_digest) != 64 or any(c not in "0123456789abcdef" for c in hex_digest):
                raise ConfigurationError(f"{where}: the hash must be 64 lowercase hex digits")
            if name in names:
                raise ConfigurationError(f"{where}: token name {name!r} appears twice")
            names.add(name)
            entries.append((name, role, bytes.fromhex(hex_digest)))
        return cls(entries)

    @classmethod
    def load(cls, path: str | None = None, environ: dict[str, str] | None = None) -> TokenStore:
        """Tokens from ``path`` (else ``$PROMPTREG_SERVE_TOKENS_FILE``) and ``$PROMPTREG_SERVE_TOKENS``."""
        env = dict(os.environ) if environ is None else environ
        path = path or env.get(TOKENS_FILE_ENV) or None
        entries: list[tuple[str, str, bytes]] = []
        if path is not None:
            file = Path(path)
            try:
                size = file.stat().st_size
                if size > MAX_TOKEN_FILE_BYTES:
                    raise ConfigurationError(f"{path}: {size} bytes, over the {MAX_TOKEN_FILE_BYTES}-byte limit")
                text = file.read_text("utf-8")
            except (OSError, UnicodeError) as exc:
                raise ConfigurationError(f"cannot read the token file {path}: {exc}") from exc
            entries += cls.parse(text, path)._entries
        inline = env.get(TOKENS_ENV, "")
        if len(inline) > MAX_TOKEN_FILE_BYTES:
            raise ConfigurationError(f"{TOKENS_ENV} is over the {MAX_TOKEN_FILE_BYTES}-byte limit")
        entries += cls.parse(inline, TOKENS_ENV)._entries
        if len({name for name, _, _ in entries}) != len(entries):
            raise ConfigurationError("a token name appears both in the token file and in " + TOKENS_ENV)
        return cls(entries)

    def names(self) -> list[str]:
        """The token names (identities), in file order."""
        return [name for name, _, _ in self._entries]

    def __bool__(self) -> bool:
        return bool(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Identity | None:
        """The identity of ``token``, or ``None``; compares with every stored hash, always."""
        if not token or len(token) > MAX_TOKEN_BYTES:
            return None
        digest = hashlib.sha256(token.encode("utf-8", "replace")).digest()
        found: Identity | None = None
        for name, role, stored in self._entries:
            if hmac.compare_digest(digest, stored) and found is None:
                found = Identity(name, role)
        return found


class Sessions:
    """Console sign-ins: random ids mapped to identities, in memory, expiring, bounded."""

    def __init__(self, seconds: float = SESSION_SECONDS, limit: int = MAX_SESSIONS) -> None:
        self._seconds = seconds
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, tuple[Identity, float]] = OrderedDict()

    def open(self, identity: Identity) -> str:
        """A new session id for ``identity``."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[session_id] = (identity, time.monotonic() + self._seconds)
            while len(self._sessions) > self._limit:
                self._sessions.popitem(last=False)
        return session_id

    def identity(self, session_id: str) -> Identity | None:
        """Who ``session_id`` signed in as, or ``None`` (unknown or expired)."""
        if not session_id or len(session_id) > 128:
            return None
        with self._lock:
            found = self._sessions.get(session_id)
            if found is None:
                return None
            if found[1] < time.monotonic():
                del self._sessions[session_id]
                return None
            return found[0]

    def close(self, session_id: str) -> None:
        """Sign out (unknown ids are ignored)."""
        with self._lock:
            self._sessions.pop(session_id, None)
