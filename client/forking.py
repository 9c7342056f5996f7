"""Fork safety: what every open :class:`~promptreg.PromptClient` of a process does after ``os.fork()``.

The hooks are registered once with :func:`os.register_at_fork`, so no lookup ever checks the pid
(``os.getpid()`` costs about twice a whole lookup):

- in the child, each client gets new locks, restarts its listener on connections of its own and
  becomes a new fleet member (a new ``client_id``);
- in the parent, each client that reports presence stops reporting, its record is removed, and its
  lookups read a :class:`ForkedParentCache` whose first use puts the cache back and resumes the
  reports. A parent then counts in the fleet only once it serves again: a pre-fork master
  (``gunicorn --preload``) that only forks workers is not waited for (:mod:`promptreg.client.presence`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptreg.client.cache import Cache
    from promptreg.client.prompt_client import PromptClient

logger = logging.getLogger("promptreg.client")

LIVE_CLIENTS: weakref.WeakSet[PromptClient] = weakref.WeakSet()
"""The clients not closed yet: those the hooks act on."""


class ForkedParentCache:
    """What a parent's lookups read after a fork, until the first one: any attribute read calls
    ``first_use`` (which puts ``cache`` back in its place and resumes the reports; later lookups
    then read the cache directly, at their usual cost) and answers from ``cache``."""

    __slots__ = ("_cache", "_first_use")

    def __init__(self, cache: Cache, first_use: Callable[[], None]) -> None:
        self._cache = cache
        self._first_use = first_use

    def __getattr__(self, item: str) -> Any:
        self._first_use()
        return getattr(self._cache, item)


def _after_fork_in_child() -> None:
    for client in list(LIVE_CLIENTS):
        try:
            client._after_fork_in_child()
        except Exception:  # never break the child over a client
            logger.exception("promptreg: could not restart a client after fork")


def _after_fork_in_parent() -> None:
    for client in list(LIVE_CLIENTS):
        try:
            client._after_fork_in_parent()
        except Exception:  # never break the parent over a client
            logger.exception("promptreg: could not pause a client's fleet reports after fork")


os.register_at_fork(after_in_child=_after_fork_in_child, after_in_parent=_after_fork_in_parent)
