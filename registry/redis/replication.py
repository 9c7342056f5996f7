"""Write durability across a failover: ``WAIT n timeout`` after a write script, on its own connection.

Redis replicates asynchronously: a write acknowledged by the primary can be lost if the primary
fails before a replica has it. ``WAIT n`` after the write blocks until ``n`` replicas confirmed
every write made *on that connection* (or the timeout), so the script and the ``WAIT`` must share
one connection: a pipeline on a plain or Sentinel-managed client, and on a cluster a pipeline on the
node that owns the registry's slot (redis-py's own node client), retried when the slot moved
(``MOVED``/``ASK``/``TRYAGAIN`` mean the script did not run).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, Concatenate, ParamSpec, TypeVar

from redis.exceptions import AskError, TryAgainError

from promptreg.registry.errors import PrimaryChangedError, ReplicationTimeoutError

P = ParamSpec("P")
R = TypeVar("R")
CLUSTER_ATTEMPTS = 5
"""Tries of a write on a cluster when its slot moved between routing and running."""


def run_and_wait(
    client: Any, script: Callable[..., Any], keys: list[str], args: list[Any], replicas: int, timeout: float
) -> tuple[list[Any], int]:
    """Run ``script`` then ``WAIT replicas timeout`` on one connection; ``(script result, replicas that
    confirmed)``. Raises redis-py errors (the caller translates them)."""
    millis = max(1, int(timeout * 1000))
    if not hasattr(client, "get_node_from_key"):  # redis.Redis (plain or Sentinel-managed)
        return _pipelined(client, script, keys, args, replicas, millis)
    for attempt in range(CLUSTER_ATTEMPTS):
        node = client.get_node_from_key(keys[0])
        try:
            return _pipelined(client.get_redis_connection(node), script, keys, args, replicas, millis)
        except (AskError, TryAgainError):  # MovedError is an AskError: the script did not run
            if attempt == CLUSTER_ATTEMPTS - 1:
                raise
            client.nodes_manager.initialize()
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _pipelined(
    client: Any, script: Callable[..., Any], keys: list[str], args: list[Any], replicas: int, millis: int
) -> tuple[list[Any], int]:
    pipe = client.pipeline(transaction=False)
    script(keys=keys, args=args, client=pipe)
    pipe.execute_command("WAIT", replicas, millis)
    result, confirmed = pipe.execute()
    return result, int(confirmed)


def durable(method: Callable[Concatenate[Any, P], R]) -> Callable[Concatenate[Any, P], R]:
    """Wrap a write method: raise :class:`~promptreg.ReplicationTimeoutError` (holding the applied
    write) when its ``WAIT`` got fewer confirmations than the registry's ``wait_replicas``, and
    :class:`~promptreg.PrimaryChangedError` when the sentinels stopped naming the node it ran on."""

    @functools.wraps(method)
    def wrapper(self: Any, /, *args: P.args, **kwargs: P.kwargs) -> R:
        self._confirmed.count = None
        self._confirmed.doubt = None
        result = method(self, *args, **kwargs)
        confirmed = self._confirmed.count
        if self._confirmed.doubt is not None:
            raise PrimaryChangedError(result, self._confirmed.doubt, confirmed or 0, self.wait_replicas)
        if confirmed is not None and confirmed < self.wait_replicas:
            raise ReplicationTimeoutError(result, confirmed, self.wait_replicas)
        return result

    return wrapper
