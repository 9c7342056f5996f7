"""Fleet presence: a :class:`~promptreg.PromptClient` on Redis says who it is and which revision it
serves.

A :class:`PresenceReporter` (:mod:`promptreg.client.redis.presence_reporter`) writes the client's
record on a connection of its own (:class:`~promptreg.client.redis.presence_link.PresenceLink`):
nothing here runs on the lookup path or on the listener's connection. A report is ``SET`` + ``ZADD``,
sent in one write (the keys and their cost are described in :mod:`promptreg.registry.redis.fleet`).
Reports come from two threads:

- **The listener acknowledges each change itself.** After every message it handled, the client
  calls :meth:`PresenceReporter.poke`: if the state or the revision served changed, the listener
  writes the report there and then (the *acknowledgement*, which
  :meth:`promptreg.PromptRegistry.wait_for_fleet` waits for), without waiting for its replies and
  without waking another thread: the record from a template, one ``send()``. The replies are read
  later, without waiting either: one ``recv()`` before a report once several are missing, and at
  the listener's first wake-up without a change (at least once a second), so an error reply is found
  within about a second. Measured in a process woken per message (``benchmarks/apply.py``): a second
  thread woken per message to write a report (the design before) cost about 400 us of CPU per
  message, more than the rest of the client (the acknowledging client 4.6-5.2x a bare redis-py
  subscriber's CPU); the listener's own report costs tens of us (1.6-1.8x; without reports 1.2-1.35x).
- **A small daemon thread** (``promptreg-presence-<namespace>``) connects, writes the first record,
  reports every ``report_interval`` seconds without a change (waiting for the replies: a connection
  that stopped answering is found there), removes the record when paused, reconnects after a
  failure, and writes the reports the listener cannot (below). It sleeps otherwise.

Reports are at least :data:`ACK_COALESCE` seconds apart: a change after a quiet time is acknowledged
at once, and in a burst of writes (a CI sync, a run of moves) one report at the end of each window
acknowledges every change in it. The listener writes that one too: it asks its feed to call it
again at the window's end (:func:`promptreg.client.feeds.call_idle_by`: its next wait for a message
ends then). A burst then costs each client one report per ``ACK_COALESCE``, not one per write: every
report is a write to Redis from every process of a fleet, and sent together they compete for the
CPU with the change still reaching the others. A report is left to the thread (marked pending; the
thread is woken unless its timer already ends at the window's end) when ``poke`` was not called by
a listener (a change of status on another thread), while the thread holds the connection, while the
connection is down, and while more than :data:`~promptreg.client.redis.presence_reporter.MAX_UNREAD`
replies are missing (a server that stopped answering). The listener never waits on the connection
and never raises: a failure there drops the connection, and the thread opens another. A failed
report is logged (one warning per outage) and retried at the next interval or change; it never
raises into the application. An index of the wrong type is replaced by the next report, at once.
On :meth:`PresenceReporter.stop` the record is removed.

**The first report.** The thread starts with the client and opens its connection while the client
reads its first state; it writes the first record as soon as the client is ``live`` (or when the
constructor returns without being live: then with the state it has), and the client's constructor
and :meth:`~promptreg.PromptClient.wait_ready` wait for that record (:meth:`PresenceReporter.wait_reported`)
before they say ``live``: the one round trip of a report (``SET`` + ``ZADD`` in one write, both
replies read) is all a start-up waits for. Until a ``live`` report was written (or failed and was
logged) every report is the thread's, its replies waited for.

**After a fork** (``os.fork()``, ``multiprocessing`` with the fork start method, ``gunicorn
--preload``), a process counts in the fleet only while it serves:

- the child is a new member (its own id), reporting from its own thread as soon as it restarts (the
  parent's reporter, copied into the child, writes nothing there: a flag set before every fork, and
  cleared in the parent only, says so without a system call per write);
- the parent's client stops reporting, and its record is removed at once (:meth:`PresenceReporter.pause`),
  until the parent serves a lookup again through that client (``get``, ``render``, ``render_text``,
  ``render_chat``): that lookup resumes the reports (:meth:`PresenceReporter.resume`), the first one
  at once. A pre-fork master that only forks workers is then not a fleet member, and
  ``wait_for_fleet`` (``promptreg label ... --wait``) does not wait for it. Its listener still runs:
  it applies every change and serves the current state if it ever serves again. The lookup path
  pays nothing for this: see :meth:`promptreg.PromptClient.get`.
"""

from __future__ import annotations

import os
import secrets
import socket

from promptreg.client.cache import Cache
from promptreg.client.redis.presence_reporter import (
    ACK_COALESCE,
    LIBRARY_VERSION,
    PresenceReporter,
    StateProbe,
)
from promptreg.client.status import StatusTracker
from promptreg.registry.fleet import host_part, validate_client_name, validate_report_interval
from promptreg.registry.redis.store import RedisPromptRegistry

__all__ = ["ACK_COALESCE", "LIBRARY_VERSION", "FleetPresence", "PresenceReporter", "StateProbe", "new_client_id",
           "served_probe"]  # fmt: skip


def served_probe(status: StatusTracker, cache: Cache) -> StateProbe:
    """What a report says, read from the status and the cache themselves: acknowledgements flow one
    way (feed -> cache and status -> reporter), never back through the client."""
    return lambda: (status.state.value, cache.rev)


def new_client_id() -> str:
    """``<host>:<pid>:<8 hex digits>``: stable for this process, unique across restarts and forks."""
    return f"{host_part(socket.gethostname())}:{os.getpid()}:{secrets.token_hex(4)}"


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
