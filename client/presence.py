"""Fleet presence: a :class:`~promptreg.PromptClient` on Redis says who it is and which revision it
serves.

A :class:`PresenceReporter` is a small daemon thread (``promptreg-presence-<namespace>``) with a
connection of its own: nothing here runs on the lookup path or the listener's connection. It reports
at start, when :meth:`PresenceReporter.poke` sees a new revision or state (the listener calls it
after it applied a change: that report is the client's *acknowledgement*, which
:meth:`promptreg.PromptRegistry.wait_for_fleet` waits for), and every ``report_interval`` seconds
otherwise. Reports are at least :data:`ACK_COALESCE` seconds apart: a change after a quiet time is
acknowledged at once, and in a burst of writes (a CI sync, a run of moves) one report at the end of
each window acknowledges every change in it. A burst then costs each client one report per
``ACK_COALESCE``, not one per write: every report is a write to Redis from every process of a fleet,
and sent together they compete for the CPU with the change still reaching the others. A failed report
is logged (one warning per outage) and retried at the next interval; it never raises into the
application. On :meth:`PresenceReporter.stop` the record is removed. The keys and their cost are
described in :mod:`promptreg.registry.redis.fleet`.

**The first report.** The thread starts with the client and opens its connection while the client
reads its first state; it writes the first record as soon as the client is ``live`` (or when the
constructor returns without being live: then with the state it has), and the client's constructor
and :meth:`~promptreg.PromptClient.wait_ready` wait for that record (:meth:`PresenceReporter.wait_reported`)
before they say ``live``: the one round trip of a report (``SET`` + ``ZADD`` in one pipeline) is all
a start-up waits for.

**After a fork** (``os.fork()``, ``multiprocessing`` with the fork start method, ``gunicorn
--preload``), a process counts in the fleet only while it serves:

- the child is a new member (its own id), reporting from its own thread as soon as it restarts;
- the parent's client stops reporting, and its record is removed at once (:meth:`PresenceReporter.pause`),
  until the parent serves a lookup again through that client (``get``, ``render``, ``render_text``,
  ``render_chat``): that lookup resumes the reports (:meth:`PresenceReporter.resume`), the first one
  at once. A pre-fork master that only forks workers is then not a fleet member, and
  ``wait_for_fleet`` (``promptreg label ... --wait``) does not wait for it. Its listener still runs:
  it applies every change and serves the current state if it ever serves again. The lookup path
  pays nothing for this: see :meth:`promptreg.PromptClient.get`.
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

from promptreg.client.cache import Cache
from promptreg.client.status import StatusTracker
from promptreg.registry.fleet import (
    MAX_HOST,
    MAX_LIBRARY_VERSION,
    FleetMember,
    host_part,
    reportable,
    validate_client_name,
    validate_report_interval,
)
from promptreg.registry.redis.fleet import prune, remove, report
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.redis.topology import subscriber_for

logger = logging.getLogger("promptreg.client")

try:  # the distribution's name (PyPI's "promptreg" is another project)
    LIBRARY_VERSION = reportable(metadata.version("promptreg-live"), MAX_LIBRARY_VERSION)
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    LIBRARY_VERSION = "unknown"

ACK_COALESCE = 0.025
"""The least time between two reports: a change within it of the last report waits for the window's
end, and one report acknowledges every change made meanwhile."""
# A report per change: not a system call each time. Escaped and cut as readers require of a record
# (promptreg.registry.fleet): a host name the OS allows but a reader refuses would drop this client from the fleet.
_HOST = reportable(socket.gethostname(), MAX_HOST)

StateProbe = Callable[[], tuple[str, int]]
"""Returns the client's ``(state, revision served)``; called on the reporter's thread."""


def served_probe(status: StatusTracker, cache: Cache) -> StateProbe:
    """What a report says, read from the status and the cache themselves: acknowledgements flow one
    way (feed -> cache and status -> reporter), never back through the client."""
    return lambda: (status.state.value, cache.rev)


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
        started: bool = False,
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
        self._listed = False  # whether our record may be in Redis (removed on pause and stop)
        self._started = started  # the client's constructor returned: report even an unfinished state
        self._first_pending = True  # the thread still waits to send its first report
        self._paused = False  # a forked parent that has served no lookup since: no record, no report
        self._live_reported = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"promptreg-presence-{self.keys.namespace}", daemon=True)

    def start(self) -> None:
        """Start the thread: it connects at once and sends the first report when the client is
        ``live`` (or after :meth:`client_started`)."""
        self._thread.start()

    def client_started(self) -> None:
        """The client's constructor returned: report from now on, whatever the client's state."""
        self._started = True
        if self._first_pending:  # else the first report is out: a wake now would only repeat it
            self._wake.set()

    def poke(self) -> None:
        """Report now if the state or revision changed since the last report (cheap: a tuple compare).

        Called by the client after every message its listener handled and on every change of status.
        """
        if not self._paused and not self._wake.is_set() and self._probe() != self._reported:
            self._wake.set()

    def wait_reported(self, timeout: float | None) -> bool:
        """Wait until a report sent while the client was ``live`` finished (written, or failed and
        logged), or reporting paused or stopped; ``False`` if ``timeout`` passed first."""
        return self._live_reported.wait(timeout)

    def pause(self) -> None:
        """Stop reporting and remove the record (on the thread, at once) until :meth:`resume`.

        Called in a parent process right after a fork (module docstring); cheap and safe there: it
        sets flags, and the thread does the I/O.
        """
        self._paused = True
        self._live_reported.set()  # nobody waits for a report that will not come
        self._wake.set()

    def resume(self) -> None:
        """Report again, the first report at once (the client served a lookup after :meth:`pause`)."""
        if self._paused:
            self._paused = False
            self._wake.set()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and remove this client's record (best effort, never raises)."""
        self._stop.set()
        self._wake.set()
        self._live_reported.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        conn = self._conn
        if conn is None:
            return
        try:
            if self._listed:
                remove(conn, self.keys, self.client_id)
                self._listed = False
        except Exception as exc:  # the record then expires by itself
            logger.debug("promptreg: could not remove the presence record: %s", exc)
        finally:
            if conn is not self.registry.redis:
                conn.close()
            self._conn = None

    def _run(self) -> None:
        try:
            self._connect()  # while the client reads its first state: not on its start-up's path
        except Exception as exc:
            self._failed(exc)
        # The first record says live (or what the client has when its constructor gave up waiting):
        # an "initializing" record of a client about to be live would only be one more write.
        while not self._stop.is_set():
            self._wake.clear()  # before the test: a poke after it wakes the wait below at once
            if self._started or self._paused or self._probe()[0] == "live":
                break
            self._wake.wait()
        self._first_pending = False
        while not self._stop.is_set():
            self._wake.clear()  # before the report: a change during it wakes the next one at once
            state: str | None = None
            try:
                if self._paused:
                    self._withdraw()
                else:
                    state, rev = self._probe()
                    self._report(state, rev)
            except Exception as exc:  # never into the application: log, retry at the next interval
                self._failed(exc)
            if state == "live":
                self._live_reported.set()
            reported = time.monotonic()
            if self._wake.wait(self.interval) and not self._stop.is_set():
                # A change: reported at once, unless the last report is younger than ACK_COALESCE
                # (a burst): then at the window's end, for every change made meanwhile.
                self._stop.wait(max(0.0, ACK_COALESCE - (time.monotonic() - reported)))

    def _connect(self) -> Any:
        if self._conn is None:
            self._conn = presence_connection(self.registry)
            prune(self._conn, self.keys, int(time.time() * 1000))
        return self._conn

    def _report(self, state: str, rev: int) -> None:
        now = datetime.now(UTC)
        conn = self._connect()
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
        self._listed = True  # set first: a reply lost after the write still leaves a record to remove
        # Also set first: a poke while the write is in flight compares with what it says, and wakes
        # the thread only for a newer state (not for a second copy of this report).
        previous, self._reported = self._reported, (state, rev)
        try:
            report(conn, self.keys, member)
        except BaseException:
            self._reported = previous
            raise
        self.reports += 1
        if self._failing:
            self._failing = False
            logger.info("promptreg: presence reports resumed")

    def _withdraw(self) -> None:
        if self._listed:
            remove(self._connect(), self.keys, self.client_id)
            self._listed = False
            self._reported = None  # the next report, after resume(), is sent whatever the state

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
    and the other methods are then free. Raises :class:`~promptreg.InvalidInputError` for a bad
    ``client_name`` (empty, longer than 100 characters, or holding a character that is not
    printable: a newline or a terminal escape would be printed by ``promptreg fleet``, and readers
    skip such a record) or ``report_interval``.
    """

    def __init__(self, enabled: bool, client_name: str | None, interval: float) -> None:
        self.enabled = bool(enabled)
        self.client_name = validate_client_name(client_name)
        self.interval = validate_report_interval(interval)
        self.client_id = new_client_id()
        self.reporter: PresenceReporter | None = None

    def start(self, registry: object, probe: StateProbe, label: str, *, started: bool = False) -> None:
        """Start reporting if enabled and ``registry`` is a :class:`~promptreg.RedisPromptRegistry`.

        The first report waits for the client to be ``live``, or for :meth:`client_started` (at once
        with ``started=True``).
        """
        if self.enabled and isinstance(registry, RedisPromptRegistry):
            self.reporter = PresenceReporter(
                registry, probe, client_id=self.client_id, client_name=self.client_name, label=label,
                interval=self.interval, started=started,
            )  # fmt: skip
            self.reporter.start()

    def client_started(self) -> None:
        """The client's constructor returned (see :meth:`PresenceReporter.client_started`)."""
        reporter = self.reporter
        if reporter is not None:
            reporter.client_started()

    def poke(self) -> None:
        """Report now if the revision or state changed (see :meth:`PresenceReporter.poke`)."""
        reporter = self.reporter
        if reporter is not None:
            reporter.poke()

    def wait_reported(self, timeout: float | None) -> bool:
        """Wait for the first report of the ``live`` client (:meth:`PresenceReporter.wait_reported`);
        ``True`` at once when nothing reports."""
        reporter = self.reporter
        return True if reporter is None else reporter.wait_reported(timeout)

    def pause(self) -> bool:
        """In a parent after a fork: stop reporting until :meth:`resume`; ``False`` (nothing done)
        when nothing reports."""
        reporter = self.reporter
        if reporter is None:
            return False
        reporter.pause()
        return True

    def resume(self) -> None:
        """Report again after :meth:`pause` (the parent served a lookup)."""
        reporter = self.reporter
        if reporter is not None:
            reporter.resume()

    def stop(self) -> None:
        """Stop reporting and remove the record."""
        reporter, self.reporter = self.reporter, None
        if reporter is not None:
            reporter.stop()

    def forked(self, registry: object, probe: StateProbe, label: str) -> FleetPresence:
        """For a forked child: a new member (new id) and reporter (the parent's thread is not here),
        reporting at once: the child serves the state it inherited while it reconnects."""
        child = FleetPresence(self.enabled, self.client_name, self.interval)
        if self.reporter is not None:
            child.start(registry, probe, label, started=True)
        return child
