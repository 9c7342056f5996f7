"""Fleet presence: a :class:`~client.PromptClient` on Redis says who it is and which revision it
serves.

A :class:`PresenceReporter` is a small daemon thread (``promptreg-presence-<namespace>``) with a
connection of its own: nothing here runs on the lookup path or the listener's connection. It reports
at start, when :meth:`PresenceReporter.poke` sees a new revision or state (the listener calls it
after it applied a change: that report is the client's *acknowledgement*, which
:meth:`registry.PromptRegistry.wait_for_fleet` waits for), and every ``report_interval`` seconds
otherwise. Reports are at least :data:`ACK_COALESCE` seconds apart: a change after a quiet time is
acknowledged at once, and in a burst of writes (a CI sync, a run of moves) one report at the end of
each window acknowledges every change in it. A burst then costs each client one report per
``ACK_COALESCE``, not one per write: every report is a write to Redis from every process of a fleet,
and sent together they compete for the CPU with the change still reaching the others. A failed report
is logged (one warning per outage) and retried at the next interval; it never raises into the
application. On :meth:`PresenceReporter.stop` the record is removed. The keys and their cost are
described in :mod:`registry.redis_fleet`.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from redis.exceptions import NoPermissionError

from registry.fleet import FleetMember, host_part, validate_client_name, validate_report_interval
from registry.redis_fleet import prune, remove, report
from registry.redis_store import RedisPromptRegistry
from registry.topology import subscriber_for

logger = logging.getLogger("promptreg.client")

try:
    LIBRARY_VERSION = metadata.version("promptreg")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    LIBRARY_VERSION = "unknown"

ACK_COALESCE = 0.025
"""The least time between two reports: a change within it of the last report waits for the window's
end, and one report acknowledges every change made meanwhile."""
_HOST = socket.gethostname()  # a report per change: not a system call each time

StateProbe = Callable[[], tuple[str, int]]
"""Returns the client's ``(state, revision served)``; called on the reporter's thread."""


def new_client_id() -> str:
    """``<host>:<pid>:<8 hex digits>``: stable for this process, unique across restarts and forks."""
    return f"{host_part(socket.gethostname())}:{os.getpid()}:{secrets.token_hex(4)}"


def presence_connection(registry: RedisPromptRegistry) -> Any:
    """A client for the reports: its own connection to the primary (or, on a cluster, the cluster
    client itself, which routes the namespace's hash tag to the node that holds it)."""
    if registry.cluster:
        return registry.redis
    return subscriber_for(registry.redis, replica=False)


class PresenceReporter:
    """Reports one client's presence from a thread of its own (module docstring)."""

    def __init__(
        self,
        registry: RedisPromptRegistry,
        probe: StateProbe,
        *,
        client_id: str,
        client_name: str | None,
        label: str,
        interval: float,
    ) -> None:
        self.registry = registry
        self.keys = registry.keys
        self.client_id = client_id
        self.client_name = client_name
        self.label = label
        self.interval = interval
        self.started_at = datetime.now(UTC)
        self.reports = 0
        """Reports written so far (for tests and curious operators)."""
        self._probe = probe
        self._conn: Any = None
        self._reported: tuple[str, int] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"promptreg-presence-{self.keys.namespace}", daemon=True)

    def start(self) -> None:
        """Start the thread; the first report is sent at once."""
        self._thread.start()

    def poke(self) -> None:
        """Report now if the state or revision changed since the last report (cheap: a tuple compare).

        Called by the client after every message its listener handled.
        """
        if not self._wake.is_set() and self._probe() != self._reported:
            self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and remove this client's record (best effort, never raises)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        conn = self._conn
        if conn is None:
            return
        try:
            if self.reports:
                remove(conn, self.keys, self.client_id)
        except Exception as exc:  # the record then expires by itself
            logger.debug("promptreg: could not remove the presence record: %s", exc)
        finally:
            if conn is not self.registry.redis:
                conn.close()
            self._conn = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the report: a change during it wakes the next one at once
            try:
                self._report()
            except Exception as exc:  # never into the application: log, retry at the next interval
                self._failed(exc)
            reported = time.monotonic()
            if self._wake.wait(self.interval) and not self._stop.is_set():
                # A change: reported at once, unless the last report is younger than ACK_COALESCE
                # (a burst): then at the window's end, for every change made meanwhile.
                self._stop.wait(max(0.0, ACK_COALESCE - (time.monotonic() - reported)))

    def _report(self) -> None:
        state, rev = self._probe()
        now = datetime.now(UTC)
        if self._conn is None:
            self._conn = presence_connection(self.registry)
            prune(self._conn, self.keys, int(time.time() * 1000))
        member = FleetMember(
            client_id=self.client_id,
            client_name=self.client_name,
            host=_HOST,
            pid=os.getpid(),
            label=self.label,
            library_version=LIBRARY_VERSION,
            state=state,
            rev=rev,
            started_at=self.started_at,
            last_seen=now,
            report_interval=self.interval,
        )
        report(self._conn, self.keys, member)
        self._reported = (state, rev)
        self.reports += 1
        if self._failing:
            self._failing = False
            logger.info("promptreg: presence reports resumed")

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, NoPermissionError):
            hint = " (the connection's ACL user may not write {ns}:fleet keys: see `promptreg acl`)"
        else:
            hint = ""
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        logger.log(level, "promptreg: presence report failed%s: %s; retrying every %g s", hint, exc, self.interval)


class FleetPresence:
    """A client's fleet identity and, on Redis with ``fleet_report=True``, its reporter.

    Validates the client's options; :meth:`start` does nothing on other backends or when disabled,
    and :meth:`poke` / :meth:`stop` are then free. Raises :class:`~registry.InvalidInputError` for a
    bad ``client_name`` or ``report_interval``.
    """

    def __init__(self, enabled: bool, client_name: str | None, interval: float) -> None:
        self.enabled = bool(enabled)
        self.client_name = validate_client_name(client_name)
        self.interval = validate_report_interval(interval)
        self.client_id = new_client_id()
        self.reporter: PresenceReporter | None = None

    def start(self, registry: object, probe: StateProbe, label: str) -> None:
        """Start reporting if enabled and ``registry`` is a :class:`~registry.RedisPromptRegistry`."""
        if self.enabled and isinstance(registry, RedisPromptRegistry):
            self.reporter = PresenceReporter(
                registry, probe, client_id=self.client_id, client_name=self.client_name, label=label,
                interval=self.interval,
            )  # fmt: skip
            self.reporter.start()

    def poke(self) -> None:
        """Report now if the revision or state changed (see :meth:`PresenceReporter.poke`)."""
        reporter = self.reporter
        if reporter is not None:
            reporter.poke()

    def stop(self) -> None:
        """Stop reporting and remove the record."""
        reporter, self.reporter = self.reporter, None
        if reporter is not None:
            reporter.stop()

    def forked(self, registry: object, probe: StateProbe, label: str) -> FleetPresence:
        """For a forked child: a new member (new id) and reporter (the parent's thread is not here)."""
        child = FleetPresence(self.enabled, self.client_name, self.interval)
        if self.reporter is not None:
            child.start(registry, probe, label)
        return child
