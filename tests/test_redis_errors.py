"""redis-py exceptions are translated by class, in one table, to a message that says which case."""

from __future__ import annotations

import pytest
from redis.exceptions import (
    AskError,
    BusyLoadingError,
    ClusterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from registry import PromptRegistryError, RegistryUnavailableError
from registry.redis_errors import translate_redis_error


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (BusyLoadingError("LOADING Redis is loading"), "loading"),
        (ReadOnlyError("You can't write against a read only replica."), "read-only replica"),
        (ClusterDownError("CLUSTERDOWN The cluster is down"), "cluster down"),
        (TryAgainError("TRYAGAIN"), "TRYAGAIN"),
        (MovedError("3999 127.0.0.1:6381"), "MOVED"),
        (AskError("3999 127.0.0.1:6381"), "ASK"),
        (MasterNotFoundError("No master found for 'svc'"), "no primary"),
        (OutOfMemoryError("OOM command not allowed"), "out of memory"),
        (RedisTimeoutError("Timeout reading from socket"), "timed out"),
        (RedisConnectionError("Connection refused"), "unreachable"),
        (ResponseError("Command # 1 (EVALSHA x) of pipeline caused error: NOREPLICAS Not enough"), "min-replicas"),
    ],
)
def test_unavailable_cases_say_which(exc: Exception, says: str) -> None:
    error = translate_redis_error(exc)
    assert type(error) is RegistryUnavailableError and says in str(error)


def test_other_replies_are_generic_registry_errors() -> None:
    error = translate_redis_error(ResponseError("ERR something else"))
    assert type(error) is PromptRegistryError
