"""redis-py exceptions translated to promptreg errors, by class, in one table.

:data:`REDIS_EXC_MAP` is read top to bottom and the first class that matches wins, so the more
specific classes come first (``MovedError`` is an ``AskError``, ``BusyLoadingError`` and
``MasterNotFoundError`` are ``ConnectionError``\\ s, ``AuthenticationError`` is one too).
:func:`map_redis_errors` applies it at the boundary of every Redis call the registry makes. The
message says which case it was ("read-only replica", "cluster slot moving", ...), never a password.
Two server replies have no class in redis-py (``NOREPLICAS`` from ``min-replicas-to-write``, and
``BUSY`` from a long script): only those are recognised by their error code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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

from registry.errors import PromptRegistryError, RegistryAuthError, RegistryUnavailableError

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


def translate_redis_error(exc: Exception) -> PromptRegistryError:
    """The promptreg error for a redis-py exception (message: which case, then redis's words)."""
    for redis_class, error_class, meaning in REDIS_EXC_MAP:
        if isinstance(exc, redis_class):
            return error_class(f"{meaning}: {exc}")
    if isinstance(exc, redis.ResponseError):
        # A pipeline prefixes the server's reply with "Command # n (...) of pipeline caused error: ".
        code = str(exc).rpartition("caused error: ")[2].split(" ", 1)[0]
        if code in _CODES_WITHOUT_CLASS:
            return RegistryUnavailableError(f"{_CODES_WITHOUT_CLASS[code]}: {exc}")
    return PromptRegistryError(f"redis error: {exc}")


@contextmanager
def map_redis_errors() -> Iterator[None]:
    """Raise the promptreg error of any redis-py error raised inside the block (cause kept)."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise translate_redis_error(exc) from exc
