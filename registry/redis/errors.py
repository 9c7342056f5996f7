"""redis-py exceptions translated to promptreg errors, by class, in one table.

:data:`REDIS_EXC_MAP` is read top to bottom and the first class that matches wins, so the more
specific classes come first (``MovedError`` is an ``AskError``, ``BusyLoadingError`` and
``MasterNotFoundError`` are ``ConnectionError``\\ s, ``AuthenticationError`` is one too).
:func:`map_redis_errors` applies it at the boundary of every Redis call the registry makes. The
message says which case it was ("read-only replica", "cluster slot moving", ...), never a password.
Two server replies have no class in redis-py (``NOREPLICAS`` from ``min-replicas-to-write``, and
``BUSY`` from a long script): only those are recognised by their error code.

Every message is one short line: given a :class:`RedisTarget` it names where (the server, the
sentinels and service, the cluster nodes); redis-py's object dumps (a Sentinel error lists each
sentinel client with its whole configuration) are left out; a TLS handshake that fails or times out
says so, and that ``redis://`` is for a server without TLS; a ``RedisClusterException`` is
translated by its cause (a refused password is a :class:`~promptreg.RegistryAuthError`).
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import redis
from redis.exceptions import (
    AskError,
    AuthenticationWrongNumberOfArgsError,
    BusyLoadingError,
    ClusterDownError,
    ClusterError,
    MovedError,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from promptreg.registry.errors import PromptRegistryError, RegistryAuthError, RegistryUnavailableError

REDIS_EXC_MAP: tuple[tuple[type[Exception], type[PromptRegistryError], str], ...] = (
    (redis.AuthenticationError, RegistryAuthError, "redis authentication failed"),
    (AuthenticationWrongNumberOfArgsError, RegistryAuthError, "redis authentication failed"),
    (NoPermissionError, RegistryAuthError, "redis refused the command: permission denied by its ACL"),
    (MasterNotFoundError, RegistryUnavailableError, "no primary: the sentinels name no reachable primary"),
    (SlaveNotFoundError, RegistryUnavailableError, "no replica: the sentinels name no reachable replica"),
    (BusyLoadingError, RegistryUnavailableError, "redis is loading its dataset (LOADING)"),
    (ReadOnlyError, RegistryUnavailableError, "read-only replica: writes must go to the primary"),
    (ClusterDownError, RegistryUnavailableError, "cluster down: a slot is not served (CLUSTERDOWN)"),
    (TryAgainError, RegistryUnavailableError, "cluster slot moving: keys split between nodes (TRYAGAIN)"),
    (MovedError, RegistryUnavailableError, "cluster slot moved (MOVED) and redis-py's retries ran out"),
    (AskError, RegistryUnavailableError, "cluster slot migrating (ASK) and redis-py's retries ran out"),
    (SlotNotCoveredError, RegistryUnavailableError, "cluster slot not covered by any node"),
    (ClusterError, RegistryUnavailableError, "cluster unavailable after redis-py's retries"),
    (OutOfMemoryError, RegistryUnavailableError, "redis is out of memory (maxmemory reached)"),
    (redis.TimeoutError, RegistryUnavailableError, "redis timed out"),
    (redis.ConnectionError, RegistryUnavailableError, "redis is unreachable"),
    (RedisClusterException, RegistryUnavailableError, "redis cluster error"),
)
"""``(redis-py class, promptreg class, what it means)``; the first match wins."""

_CODES_WITHOUT_CLASS = {
    "NOREPLICAS": "not enough replicas in sync to accept writes (min-replicas-to-write)",
    "BUSY": "redis is busy running a script",
}


# The server's replies when a command comes before any AUTH (redis-py sends HELLO first on RESP3).
_NO_PASSWORD = re.compile(r"NOAUTH|Authentication required|HELLO must be called with the client already authenticated")

MAX_DETAIL = 160
"""At most this many characters of redis-py's own words follow the meaning in a message."""


@dataclass(frozen=True)
class RedisTarget:
    """Where a registry's Redis is, as error messages name it: addresses only, never credentials."""

    kind: Literal["single", "sentinel", "cluster"] = "single"
    addresses: tuple[str, ...] = ()
    """``host:port`` of the server (or its socket path), of each sentinel, or of each startup node."""
    service: str | None = None
    """The Sentinel service name (``sentinel`` only)."""

    def __str__(self) -> str:
        where = ", ".join(self.addresses)
        if self.kind == "sentinel":
            return f"sentinels {where}, service {self.service!r}"
        if self.kind == "cluster":
            return f"cluster nodes {where}"
        return where


def translate_redis_error(exc: Exception, target: RedisTarget | None = None) -> PromptRegistryError:
    """The promptreg error for a redis-py exception: one line, which case, where (``target``), then
    redis's own words (shortened, without object dumps)."""
    cause = exc.__cause__
    if isinstance(exc, RedisClusterException) and isinstance(cause, redis.RedisError | RedisClusterException):
        return translate_redis_error(cause, target)  # "cannot be connected: <the cause>": the cause says why
    where = f" ({target})" if target else ""
    if isinstance(exc, MasterNotFoundError):
        return _no_primary(exc, target)
    tls = _tls_failure(exc, target)
    if tls is not None:
        return tls
    if isinstance(exc, RedisClusterException) and "cluster mode is not enabled" in str(exc).lower():
        return RegistryUnavailableError(f"not a cluster{where}: the server runs without cluster mode (use redis://)")
    detail = _detail(str(exc))
    if isinstance(exc, redis.AuthenticationError) and _NO_PASSWORD.search(str(exc)):
        detail = "the server requires a password and none was given"
    for redis_class, error_class, meaning in REDIS_EXC_MAP:
        if isinstance(exc, redis_class):
            return error_class(f"{meaning}{where}: {detail}")
    if isinstance(exc, redis.ResponseError):
        # A pipeline prefixes the server's reply with "Command # n (...) of pipeline caused error: ".
        code = str(exc).rpartition("caused error: ")[2].split(" ", 1)[0]
        if code in _CODES_WITHOUT_CLASS:
            return RegistryUnavailableError(f"{_CODES_WITHOUT_CLASS[code]}{where}: {_detail(str(exc))}")
    return PromptRegistryError(f"redis error{where}: {_detail(str(exc))}")


@contextmanager
def map_redis_errors(target: RedisTarget | None = None) -> Iterator[None]:
    """Raise the promptreg error of any redis-py error raised inside the block (cause kept);
    ``target`` names where the registry connects, for the message."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise translate_redis_error(exc, target) from exc


# Where a Python object's repr starts ("<redis.client.Redis(...)>", "<object object at 0x...>"), not
# a word in angle brackets ("HELLO AUTH <user> <pass>").
_DUMP = re.compile(r"<[A-Za-z_][\w.]*[( ]")


def _split_dumps(text: str) -> tuple[str, list[str]]:
    """``text`` without its ``<...>`` object dumps, and the text after each dump (up to the next)."""
    kept: list[str] = []
    after: list[str] = []
    depth = 0
    for index, char in enumerate(text):
        if depth:
            depth += (char == "<") - (char == ">")
        elif char == "<" and _DUMP.match(text, index):
            depth = 1
            after.append("")
        else:
            kept.append(char)
            if after:
                after[-1] += char
    return "".join(kept), after


def _detail(text: str) -> str:
    """redis-py's words on one line, without object dumps, at most :data:`MAX_DETAIL` characters."""
    short = " ".join(_split_dumps(text)[0].split())
    return short if len(short) <= MAX_DETAIL else short[: MAX_DETAIL - 3].rstrip() + "..."


def _reason(piece: str) -> str:
    """What one sentinel's failure was, from redis-py's ``<client> - kind:Class: message``."""
    piece = re.sub(r"^[\s,-]*(?:[\w.]+:)?\w+(?:Error|Exception)\b:?\s*", "", piece).strip(" ,")
    piece = re.sub(r"^Error -?\d+ connecting to \S+?\.\s+", "", piece)  # the address is named already
    return piece.rstrip(".") or "no answer"


def _no_primary(exc: Exception, target: RedisTarget | None) -> PromptRegistryError:
    """``MasterNotFoundError``: how many sentinels did not answer, and why, instead of their dumps."""
    text = str(exc)
    named = re.search(r"found for ('[^']*'|\"[^\"]*\")", text)
    service = repr(target.service) if target and target.service else (named.group(1) if named else "?")
    sentinels = ", ".join(target.addresses) if target else ""
    failures = _split_dumps(text)[1]
    reasons = list(dict.fromkeys(_reason(piece) for piece in failures))
    why = _detail("; ".join(reasons))
    shown = f" ({sentinels})" if sentinels else ""
    if not failures:
        return RegistryUnavailableError(
            f"no primary for service {service}: the sentinels{shown} name no reachable primary"
        )
    if "AuthenticationError" in text or "AuthorizationError" in text:
        return RegistryAuthError(f"sentinel authentication failed for service {service}{shown}: {why}")
    total = len(target.addresses) if target else len(failures)
    if len(failures) >= total:
        at = f" at {sentinels}" if sentinels else ""
        return RegistryUnavailableError(f"no primary for service {service}: no sentinel answered{at} ({why})")
    return RegistryUnavailableError(
        f"no primary for service {service}: {len(failures)} of {total} sentinels{shown} did not answer ({why}), "
        "the others name no reachable primary"
    )


def _tls_failure(exc: Exception, target: RedisTarget | None) -> PromptRegistryError | None:
    """The error of a failed TLS handshake (redis-py says only "timed out" or its SSL code), else ``None``."""
    if not isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return None
    underlying = exc.__cause__ or exc.__context__
    if target and target.kind == "single" and target.addresses:
        server = target.addresses[0]
    else:
        named = re.search(r"connecting to (\S+?)\.(?:\s|$)", str(exc))
        server = named.group(1) if named else "the server"
    advice = "if that server does not speak TLS, use redis:// instead of rediss://"
    if isinstance(underlying, ssl.SSLCertVerificationError):
        reason = underlying.verify_message or underlying.reason or "not trusted"
        return RegistryUnavailableError(f"TLS certificate of {server} not accepted: {_detail(str(reason))}")
    if isinstance(underlying, ssl.SSLError):
        reason = underlying.reason or underlying.strerror or str(underlying)
        return RegistryUnavailableError(f"TLS handshake with {server} failed ({_detail(str(reason))}): {advice}")
    if isinstance(underlying, TimeoutError) and "handshake" in str(underlying).lower():
        return RegistryUnavailableError(f"TLS handshake with {server} timed out: {advice}")
    return None
