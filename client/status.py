"""The client's status: what state the change feed is in, since when, and the last error.

Modelled on LaunchDarkly's data source status: the feed reports, the client exposes a frozen
snapshot of it through :meth:`promptreg.PromptClient.status`, and :meth:`~promptreg.PromptClient.wait_ready`
waits on it.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from promptreg.registry.errors import (
    ConfigurationError,
    RegistryAuthError,
    RegistryCorruptError,
    RegistryUnavailableError,
)

logger = logging.getLogger("promptreg.client")


class ClientState(StrEnum):
    """Where the client's change feed stands."""

    INITIALIZING = "initializing"
    """No state read from the registry yet. Lookups of a prompt not cached raise
    :class:`~promptreg.RegistryUnavailableError` (not a not-found error) because the client cannot
    know yet."""

    LIVE = "live"
    """Connected and subscribed: the cache holds the registry's state and changes are pushed."""

    STALE = "stale"
    """Lookups serve the last state the client had, which the registry cannot confirm right now: the
    feed lost the registry and reconnects with backoff, or the client started from the
    last-known-good file, or the registry answers but is not trusted (empty, still loading, a
    replica cut off from its primary or still syncing). ``last_error`` says which."""

    CLOSED = "closed"
    """``close()`` was called: the feed is stopped; lookups still serve the last state."""


class ErrorKind(StrEnum):
    """What kind of problem ``last_error`` describes, for alerts and dashboards that should not parse
    the text."""

    NETWORK = "network"
    """The registry could not be reached, or the connection was lost or timed out."""

    AUTH = "auth"
    """The registry refused the credentials, or the user's ACL / grants forbid a command."""

    PROTOCOL = "protocol"
    """A change message or a stored record could not be decoded (ignored; counted in
    ``malformed_messages``)."""

    UNTRUSTED = "untrusted"
    """The registry answers but is not trusted as current: empty, still loading, a replica cut off
    from its primary, a failover under way, or a history other than the one the client followed."""

    CONFIGURATION = "configuration"
    """The installation or the settings cannot work (e.g. psycopg not installed)."""

    NOTICE = "notice"
    """Worth an operator's attention while the client stays ``live`` (a registry not migrated,
    forged notifications ignored)."""

    INTERNAL = "internal"
    """An unexpected exception inside the client (a bug: please report it)."""


def _as_registry_error(error: BaseException) -> BaseException:
    """A driver's exception as the promptreg error its backend's one table makes of it
    (:func:`~promptreg.registry.redis.errors.translate_redis_error`,
    :func:`~promptreg.registry.postgres.conn.translate_postgres_error`); any other as it is. Only a
    driver already imported can have raised one, so nothing is imported for the check."""
    redis_exceptions = sys.modules.get("redis.exceptions")
    if redis_exceptions is not None and isinstance(
        error, redis_exceptions.RedisError | redis_exceptions.RedisClusterException
    ):
        from promptreg.registry.redis.errors import translate_redis_error

        return translate_redis_error(error)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(error, psycopg.Error):
        from promptreg.registry.postgres.conn import translate_postgres_error

        return translate_postgres_error(error)
    return error


def error_kind(error: BaseException) -> ErrorKind:
    """The :class:`ErrorKind` of an exception the feed caught, from its class: a driver's (redis-py,
    psycopg) as its backend translates it, promptreg's own, and the builtins'."""
    error = _as_registry_error(error)
    if isinstance(error, RegistryAuthError):
        return ErrorKind.AUTH
    if isinstance(error, ConfigurationError | ImportError):
        return ErrorKind.CONFIGURATION
    if isinstance(error, RegistryCorruptError):
        return ErrorKind.PROTOCOL
    if isinstance(error, RegistryUnavailableError | OSError | TimeoutError):
        return ErrorKind.NETWORK
    return ErrorKind.INTERNAL


@dataclass(frozen=True, slots=True)
class ClientStatus:
    """A snapshot of the client's status.

    ``since`` is when ``state`` was entered (Unix time). ``rev`` is the registry revision the cache
    holds (0 before anything was loaded). ``last_error`` describes the most recent failure (kept after
    recovery, with ``last_error_at``). ``malformed_messages`` counts change messages that could not be
    decoded and were ignored; ``resyncs`` counts full reloads of the state; ``fallbacks_served``
    counts lookups answered with their inline ``fallback=`` text. ``last_error_kind`` says what kind
    of problem ``last_error`` is (:class:`ErrorKind`; ``None`` while there was none).
    """

    state: ClientState
    since: float
    rev: int
    last_error: str | None
    last_error_at: float | None
    malformed_messages: int
    resyncs: int
    fallbacks_served: int = 0
    last_error_kind: ErrorKind | None = None


class StatusTracker:
    """Thread-safe holder of the status; the feed writes it, user threads read and wait on it."""

    def __init__(self, rev: Callable[[], int] = lambda: 0) -> None:
        self._cond = threading.Condition()
        self._rev = rev  # the cache's revision, for the statuses handed to listeners
        self._listeners: tuple[Callable[[ClientStatus], None], ...] = ()
        self._listeners_lock = threading.Lock()
        self._changed = False
        self._state = ClientState.INITIALIZING
        self._since = time.time()
        self._last_error: str | None = None
        self._last_error_at: float | None = None
        self._last_error_kind: ErrorKind | None = None
        self._malformed = 0
        self._resyncs = 0
        self._fallbacks = 0

    @property
    def state(self) -> ClientState:
        """The current state."""
        return self._state

    def snapshot(self, rev: int) -> ClientStatus:
        """A frozen copy of the status, with the cache's revision ``rev``."""
        with self._cond:
            return ClientStatus(
                self._state,
                self._since,
                rev,
                self._last_error,
                self._last_error_at,
                self._malformed,
                self._resyncs,
                self._fallbacks,
                self._last_error_kind,
            )

    def _enter(self, state: ClientState) -> None:
        if self._state is not state and self._state is not ClientState.CLOSED:
            self._state = state
            self._since = time.time()
            self._changed = True
            self._cond.notify_all()

    def add_listener(self, listener: Callable[[ClientStatus], None]) -> Callable[[], None]:
        """Call ``listener(status)`` after every change of state; returns a function that removes it."""
        with self._listeners_lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._listeners_lock:
                listeners = list(self._listeners)
                if listener in listeners:
                    listeners.remove(listener)
                self._listeners = tuple(listeners)

        return remove

    def _announce(self) -> None:
        # Called after the condition's lock is released: listeners run with no lock held, each in its
        # own try/except, on the thread that changed the state (the listener thread, or close()).
        with self._cond:
            if not self._changed:
                return
            self._changed = False
        if not self._listeners:
            return
        status = self.snapshot(self._rev())
        for listener in self._listeners:
            try:
                listener(status)
            except Exception:
                logger.exception("promptreg: on_status listener %r raised; ignored", listener)

    def live(self) -> None:
        """The feed holds the registry's state and is subscribed."""
        with self._cond:
            self._enter(ClientState.LIVE)
        self._announce()

    def resynced(self) -> None:
        """Count one full reload."""
        with self._cond:
            self._resyncs += 1

    def stale(self, reason: str | None = None, kind: ErrorKind = ErrorKind.UNTRUSTED) -> None:
        """Serving state the feed cannot currently confirm. Before any data, stays ``initializing``."""
        with self._cond:
            if reason is not None:
                self._record(reason, kind)
            if self._state is not ClientState.INITIALIZING:
                self._enter(ClientState.STALE)
        self._announce()

    def serving_snapshot(self) -> None:
        """The cache was filled from the last-known-good file, not from the registry."""
        with self._cond:
            self._enter(ClientState.STALE)
        self._announce()

    def error(self, error: BaseException | str) -> None:
        """Record a failure of the feed and leave ``live`` (an initializing client stays initializing)."""
        if isinstance(error, str):
            self.stale(error, ErrorKind.NETWORK)
        else:
            self.stale(f"{type(error).__name__}: {error}", error_kind(error))

    def note(self, text: str) -> bool:
        """Record a condition worth an operator's attention in ``last_error`` without leaving ``live``
        (e.g. a registry not migrated); returns whether it differs from the last one recorded."""
        with self._cond:
            new = text != self._last_error
            self._record(text, ErrorKind.NOTICE)
            return new

    def _record(self, text: str, kind: ErrorKind) -> None:
        self._last_error = text
        self._last_error_at = time.time()
        self._last_error_kind = kind

    def malformed(self, detail: str) -> int:
        """Count one change message that could not be decoded; returns the count so far."""
        with self._cond:
            self._malformed += 1
            self._record(detail, ErrorKind.PROTOCOL)
            return self._malformed

    def fallback_served(self) -> int:
        """Count one lookup answered with its inline fallback; returns the count so far."""
        with self._cond:
            self._fallbacks += 1
            return self._fallbacks

    def closed(self) -> None:
        """The client was closed; final."""
        with self._cond:
            self._enter(ClientState.CLOSED)
        self._announce()

    def wait_live(self, timeout: float | None) -> bool:
        """Block until ``live`` (True) or ``closed`` / timeout (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._state is not ClientState.LIVE:
                if self._state is ClientState.CLOSED:
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def after_fork(self, reason: str) -> None:
        """In a forked child: new lock (the parent's may have been held at fork), state stale."""
        self._cond = threading.Condition()
        if self._state is ClientState.LIVE:
            self._state = ClientState.STALE
            self._since = time.time()
        self._record(reason, ErrorKind.NOTICE)
