"""Whether the Redis server the client reads can be trusted as current: ``ROLE``.

A replica keeps answering reads when its link to the primary is down (``replica-serve-stale-data``,
on by default) and during its first sync it holds nothing yet; a primary that is still reading its
AOF answers ``LOADING``. A client on such a server would serve a state the registry does not hold,
so the feed holds its cache instead (status ``stale``) and rechecks.

``ROLE`` is one cheap command. A connection whose ACL user may not run it (``NOPERM``), or a server
where it is renamed away, is not an error: the check is skipped for good and the client works as
before (it then cannot tell a cut-off replica from a primary; the README says so).
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.exceptions import BusyLoadingError, NoPermissionError, ResponseError

logger = logging.getLogger("promptreg.client")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class RoleCheck:
    """Asks the server for its ``ROLE``; remembers when it may not."""

    def __init__(self) -> None:
        self.supported = True
        """``False`` once the server refused ``ROLE`` (ACL ``NOPERM`` or unknown command)."""

    def problem(self, client: redis.Redis) -> str | None:
        """Why the server cannot be trusted as current right now, or ``None``.

        Raises redis-py connection errors (the feed treats them as an outage).
        """
        if not self.supported:
            return None
        try:
            role: Any = client.execute_command("ROLE")  # type: ignore[no-untyped-call]
        except BusyLoadingError:
            return "redis is loading its dataset (LOADING): serving the last state"
        except NoPermissionError as exc:
            self._unsupported(exc)
            return None
        except ResponseError as exc:
            if "unknown command" not in str(exc).lower():
                raise
            self._unsupported(exc)
            return None
        if not role or _text(role[0]) != "slave":
            return None  # a primary (or a sentinel, which the client does not talk to)
        host, port, state = _text(role[1]), role[2], _text(role[3])
        if state != "connected":
            return f"replica of {host}:{port} not in sync with its primary (link {state!r}): serving the last state"
        return None

    def _unsupported(self, exc: Exception) -> None:
        self.supported = False
        logger.info("promptreg: ROLE is not allowed on this connection (%s); the replica check is skipped", exc)
