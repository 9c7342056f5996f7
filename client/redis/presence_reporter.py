"""The reporter of a client's fleet presence on Redis (the design: :mod:`promptreg.client.presence`).

:class:`PresenceReporter` writes on a :class:`~promptreg.client.redis.presence_link.PresenceLink`
under one lock. Its methods: what the client calls (``poke``, ``pause``, ``resume``, ``stop``);
what the listener runs inside ``poke`` (a report written without waiting, or left to its next call
through :func:`promptreg.client.feeds.call_idle_by`, or to the thread); the thread's loop.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from redis.exceptions import NoPermissionError

from promptreg.client.feeds import call_idle_by
from promptreg.client.redis.presence_link import PresenceLink, ReportPacker, presence_client, reply_error
from promptreg.registry.fleet import MAX_HOST, MAX_LIBRARY_VERSION, FleetMember, reportable
from promptreg.registry.redis.store import RedisPromptRegistry

logger = logging.getLogger("promptreg.client")

try:  # the distribution's name (PyPI's "promptreg" is another project)
    LIBRARY_VERSION = reportable(metadata.version("promptreg-live"), MAX_LIBRARY_VERSION)
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    LIBRARY_VERSION = "unknown"

ACK_COALESCE = 0.025
"""The least time between two reports: a change within it of the last report waits for the window's
end, and one report acknowledges every change made meanwhile."""
REPLY_TIMEOUT = 10.0
"""Seconds the thread waits for the replies of its reports (the listener never waits for any)."""
MAX_UNREAD = 16
"""Replies the listener lets be missing before it leaves the reports to the thread, whose wait for
them then finds a server that stopped answering."""
MOVED_AWAY = ("READONLY", "MOVED", "ASK", "CLUSTERDOWN")
"""Error replies of a server that does not hold the namespace for writes any more: reconnect."""
COLLECT_AT = 8
"""Replies missing from which the listener reads them before its next report (one ``recv()`` for
several reports); it also reads them at its first wake-up without a change."""
# A report per change: not a system call each time. Escaped and cut as readers require of a record
# (promptreg.registry.fleet): a host name the OS allows but a reader refuses would drop this client from the fleet.
_HOST = reportable(socket.gethostname(), MAX_HOST)

StateProbe = Callable[[], tuple[str, int]]
"""Returns the client's ``(state, revision served)``; called on the listener's and the reporter's threads."""


_REPORTERS: weakref.WeakSet[PresenceReporter] = weakref.WeakSet()


def _before_fork() -> None:
    # A flag, not a pid compared at each write (a system call): a child keeps it set on the copies
    # of its parent's reporters (they write nothing there, not even from the client's fork hooks,
    # which run before any other), the parent clears it.
    for reporter in list(_REPORTERS):
        reporter._forking = True


def _after_fork_in_parent() -> None:
    for reporter in list(_REPORTERS):
        reporter._forking = False


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent)


class PresenceReporter:
    """Reports one client's presence: acknowledgements from the listener, the rest from a thread of
    its own (module docstring)."""

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
        self._forking = False  # a fork is under way; for good in a child: the connection is the parent's
        _REPORTERS.add(self)
        self._lock = threading.Lock()  # the connection, and what was reported on it: one writer at a time
        self._link: PresenceLink | None = None
        self._packer: ReportPacker | None = None
        self._reported: tuple[str, int] | None = None
        self._sent_at = -math.inf  # time.monotonic() of the last report written (or attempted, by the thread)
        self._listed = False  # whether our record may be in Redis (removed on pause and stop)
        self._pruned = False
        self._repair = False  # the index is not a sorted set: the next report replaces it
        self._started = started  # the client's constructor returned: report even an unfinished state
        self._first_pending = True  # the thread still waits to send its first report
        self._paused = False  # a forked parent that has served no lookup since: no record, no report
        self._pending = False  # a change waits for the end of the window: the thread reports it
        self._armed = False  # the thread wakes by itself at the window's end: a pending change needs no wake-up
        self._live_reported = threading.Event()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._failing = False
        self._confirming = False  # a report was sent since the last failure: its replies say whether it passed
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
        """Acknowledge a new state or revision, if any: write the report now (on the calling thread,
        without waiting), or leave it to the thread at the window's end (module docstring).

        Called by the client after every message its listener handled and on every change of status.
        Never waits on the connection and never raises.
        """
        if self._paused or self._forking:
            return
        current = self._probe()
        if not self._live_reported.is_set():  # the first live report is the thread's (wait_reported)
            if current != self._reported and not self._wake.is_set():
                self._wake.set()
            return
        if current != self._reported:
            if self._pending:
                return  # the thread reports it at the window's end, with whatever came meanwhile
            due = self._sent_at + ACK_COALESCE
            if time.monotonic() < due:
                if call_idle_by(due):  # on the listener: it calls again at the window's end, and reports then
                    return
            elif self._write(current):
                return
            self._pending = True  # elsewhere, or the listener could not write: the thread reports it
            if not self._armed:
                self._wake.set()
        else:
            link = self._link
            if link is not None and link.unread:  # read the replies of the last reports (errors, repair)
                self._write(None)

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
        if not self._lock.acquire(timeout=timeout):
            return  # the thread is stuck in a report: the record expires by itself
        try:
            link, self._link = self._link, None
            if link is None:
                return
            try:
                if self._listed and self._packer is not None and not self._forking:
                    link.collect()
                    link.send(*self._packer.remove())
                    link.collect(timeout)
                    self._listed = False
            except Exception as exc:  # the record then expires by itself
                logger.debug("promptreg: could not remove the presence record: %s", exc)
            finally:
                link.close()
        finally:
            self._lock.release()

    # -- on the listener (or any thread calling poke) ----------------------------------------------

    def _write(self, current: tuple[str, int] | None) -> bool:
        """Report ``current`` (``None``: only read the replies that arrived) without waiting; whether
        it was done. ``False`` leaves it to the thread: it holds the connection, the connection is
        down or not answering, or this is a forked child (the connection is the parent's)."""
        if not self._lock.acquire(False):
            return False
        try:
            link = self._link
            if link is None or self._paused or self._forking or link.unread > MAX_UNREAD:
                return False
            try:
                if current is None or link.unread >= COLLECT_AT:
                    errors = link.collect()
                    if errors or self._failing:
                        self._settle(errors)
                        if self._link is not link:
                            return False  # dropped: the thread connects again
                    if current is None and self._repair and self._reported is not None:
                        current = self._reported  # the index was replaced by a string: put ours back now
                if current is not None:
                    self._send(link, current)
            except Exception as exc:
                self._broken(exc)
                return False
            return True
        finally:
            self._lock.release()

    # -- under the lock, on either thread ------------------------------------------------------------

    def _send(self, link: PresenceLink, current: tuple[str, int]) -> None:
        repair = self._repair
        data = self._packer.report(current[0], current[1], time.time(), repair)  # type: ignore[union-attr]
        self._listed = True  # set first: a reply lost after the write still leaves a record to remove
        # Also set first: a poke meanwhile compares with what it says (a newer state only is reported).
        self._reported = current
        self._sent_at = time.monotonic()
        link.send(data, 3 if repair else 2)
        if repair:
            self._repair = False
        self._confirming = self._failing
        self.reports += 1

    def _settle(self, errors: list[str]) -> None:
        """The error replies read: an index of the wrong type is replaced, the rest logged; a server
        that no longer holds the namespace for writes (a replica now, a slot moved) drops the link."""
        failed = [text for text in errors if not text.startswith("WRONGTYPE")]
        if len(failed) < len(errors):
            self._repair = True
        if any(text.startswith(MOVED_AWAY) for text in failed):
            self._broken(reply_error(failed[-1]))  # the next connection asks Sentinel, or the cluster, again
        elif failed:
            self._reported = None  # reported again at the next change or interval
            self._failed(reply_error(failed[-1]))
        elif self._failing and self._confirming and self._link is not None and not self._link.unread:
            self._failing = self._confirming = False  # every reply of a report since the failure: no error
            logger.info("promptreg: presence reports resumed")

    def _broken(self, exc: Exception) -> None:
        """The connection failed: drop it (the thread opens another), report again, log."""
        link, self._link = self._link, None
        if link is not None:
            link.close()
        self._reported = None
        self._failed(exc)

    # -- the thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        self._locked(self._connect)  # while the client reads its first state: not on its start-up's path
        # The first record says live (or what the client has when its constructor gave up waiting):
        # an "initializing" record of a client about to be live would only be one more write.
        while not self._stop.is_set():
            self._wake.clear()  # before the test: a poke after it wakes the wait below at once
            if self._started or self._paused or self._probe()[0] == "live":
                break
            self._wake.wait()
        self._first_pending = False
        confirm = True  # the first report, and each periodic one: its replies waited for
        while not self._stop.is_set():
            self._wake.clear()  # before the checks: a poke after them ends the waits below at once
            if self._paused:
                self._locked(self._withdraw)
                self._wake.wait()  # until resume() or stop()
                confirm = True
                continue
            changed = self._pending
            if confirm or changed or not self._live_reported.is_set():
                self._pending = False
                self._locked(self._report, confirm or not self._live_reported.is_set())
            confirm = self._sleep(changed)

    def _sleep(self, changed: bool) -> bool:
        """Wait for the next thing to do; whether it is the periodic report (a report acknowledging
        changes otherwise, or a pause, resume or stop)."""
        if changed:  # changes come: wake at this window's end, by the timer, for those made meanwhile
            self._armed = True
            self._stop.wait(max(0.0, self._sent_at + ACK_COALESCE - time.monotonic()))
            self._armed = False
            return False
        while not self._stop.is_set() and not self._pending:  # checked after _armed was cleared
            left = self._sent_at + self.interval - time.monotonic()
            if left <= 0:
                return True
            if self._wake.wait(left):
                if self._pending:  # a change after a quiet time: now, or at the window's end
                    self._stop.wait(max(0.0, self._sent_at + ACK_COALESCE - time.monotonic()))
                return False
        return False

    def _locked(self, work: Callable[..., object], *args: Any) -> None:
        with self._lock:
            try:
                work(*args)
            except Exception as exc:  # never into the application: log, retry at the next interval
                self._broken(exc)

    def _connect(self) -> PresenceLink:
        if self._packer is None:
            self._packer = ReportPacker(self.keys, self._member())
        link = self._link
        if link is None:
            link = PresenceLink(presence_client(self.registry))
            if not self._pruned:
                try:
                    link.send(*self._packer.prune(int(time.time() * 1000)))
                    self._repair = any(e.startswith("WRONGTYPE") for e in link.collect(REPLY_TIMEOUT, self._stop))
                except Exception:
                    link.close()
                    raise
                self._pruned = True
            self._link = link
        return link

    def _report(self, confirm: bool) -> None:
        """Report the current state; with ``confirm``, wait for the replies (a failure is logged)."""
        self._sent_at = time.monotonic()  # an attempt too: a failure is retried after the interval
        current = self._probe()
        try:
            link = self._connect()
            # The replies of earlier reports: waited for too when many are missing (the listener left
            # this report because of them), so a server that stopped answering is found here.
            self._settle(link.collect(REPLY_TIMEOUT if confirm or link.unread > MAX_UNREAD else 0.0, self._stop))
            link = self._connect()  # again, if that dropped it
            current = self._probe()
            self._send(link, current)
            if confirm:
                self._settle(link.collect(REPLY_TIMEOUT, self._stop))
        except Exception as exc:  # never into the application: log, retry at the next interval
            self._broken(exc)
        if confirm and current[0] == "live":
            self._live_reported.set()  # written, or failed and logged

    def _withdraw(self) -> None:
        if self._listed:
            link = self._connect()
            assert self._packer is not None
            link.collect()
            link.send(*self._packer.remove())
            link.collect(REPLY_TIMEOUT, self._stop)  # an index of the wrong type holds nothing of ours
            self._listed = False
            self._reported = None  # the next report, after resume(), is sent whatever the state

    def _member(self) -> FleetMember:
        """This client's record but for the fields every report fills in (the packer's template)."""
        return FleetMember(
            client_id=self.client_id, client_name=self.client_name, host=_HOST, pid=os.getpid(), label=self.label,
            library_version=LIBRARY_VERSION, state="initializing", rev=0, started_at=self.started_at,
            last_seen=self.started_at, report_interval=self.interval,
        )  # fmt: skip

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, NoPermissionError):
            hint = " (the connection's ACL user may not write {ns}:fleet keys: see `promptreg acl`)"
        else:
            hint = ""
        level = logging.DEBUG if self._failing else logging.WARNING
        self._failing = True
        self._confirming = False
        logger.log(level, "promptreg: presence report failed%s: %s; retrying within %g s", hint, exc, self.interval)
