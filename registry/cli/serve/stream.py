"""The change stream of ``promptreg serve``: the registry's audit log as Server-Sent Events.

One :class:`ChangeHub` per server follows the registry: its push-fed :class:`~promptreg.PromptClient`
wakes it on every change it applies, and the hub reads the writes since the last one it sent from
the registry's log (:meth:`~promptreg.PromptRegistry.changes_since`, one read however many
subscribers), encodes each once and hands the same bytes to every subscriber's queue. A subscriber
that resumes (``Last-Event-ID``) is replayed from the same log first; when the log cannot fill the
gap (trimmed, too long, or a registry restored to an older revision) it gets a ``resync`` event and
should read the state anew. A subscriber too slow to keep up is closed; its reconnect resumes.

Wire format, one event per write::

    id: 42
    event: change
    data: {"rev": 42, "action": "set_label", "prompt": "critic", "label": "production", ...}

plus ``event: ready`` (``id`` and ``data.rev``: where a fresh stream starts), ``event: resync`` and a
comment line (``: heartbeat``) every ``heartbeat`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import PromptRegistryError
from promptreg.registry.models import AuditEvent

logger = logging.getLogger("promptreg.serve")

REPLAY_LIMIT = 10_000
"""The most events a resume replays; further behind, it gets ``resync``."""
QUEUE_LIMIT = 10_000
"""Events waiting for one subscriber; past it the subscriber is closed (it resumes on reconnect)."""

SAFETY_POLL_SECONDS = 1.0
"""How often the hub reads the log when nothing woke it."""

_CLOSE = b""
_HEARTBEAT = b": heartbeat\n\n"


def encode_event(event: AuditEvent) -> bytes:
    """One SSE ``change`` event."""
    data = json.dumps(event.model_dump(mode="json"), separators=(",", ":"))
    return f"id: {event.rev}\nevent: change\ndata: {data}\n\n".encode()


def control_event(kind: str, rev: int, **extra: Any) -> bytes:
    """A ``ready`` or ``resync`` event at revision ``rev``."""
    data = json.dumps({"rev": rev, **extra}, separators=(",", ":"))
    return f"id: {rev}\nevent: {kind}\ndata: {data}\n\n".encode()


class _Subscriber:
    __slots__ = ("after", "queue")

    def __init__(self, after: int) -> None:
        self.queue: asyncio.Queue[tuple[int, bytes, bool]] = asyncio.Queue(QUEUE_LIMIT)
        self.after = after  # live events at or below this revision were replayed already


class ChangeHub:
    """Follows the registry's log and fans each write out to every stream subscriber."""

    def __init__(
        self, registry: PromptRegistry, start_rev: int, loop: asyncio.AbstractEventLoop, heartbeat: float = 15.0
    ) -> None:
        self._registry = registry
        self._rev = start_rev
        self._loop = loop
        self._heartbeat = heartbeat
        self._subscribers: set[_Subscriber] = set()
        self._wake = threading.Event()
        self._closed = False
        self._failing = False
        self._listeners: list[Callable[[AuditEvent], None]] = []
        self._thread = threading.Thread(target=self._follow, name="promptreg-serve-hub", daemon=True)
        self._thread.start()
        # One timer beats for every stream (a timeout per stream and event would cost a task each).
        loop.call_soon_threadsafe(self._beat_all)

    @property
    def rev(self) -> int:
        """The revision of the last write the hub sent."""
        return self._rev

    def poke(self, *_: object) -> None:
        """Something changed (called from the client's listener thread): read the log."""
        self._wake.set()

    def add_listener(self, listener: Callable[[AuditEvent], None]) -> None:
        """Call ``listener(event)`` on the hub's thread for every write it reads (before fan-out)."""
        self._listeners.append(listener)

    def _beat_all(self) -> None:
        if self._closed:
            return
        self._fan_out([(0, _HEARTBEAT, True)])
        self._loop.call_later(self._heartbeat, self._beat_all)

    def close(self) -> None:
        """Stop following and end every stream."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._loop.call_soon_threadsafe(self._fan_out, [(0, _CLOSE, True)])

    def _follow(self) -> None:
        while not self._closed:
            # Woken by the client on every change it applies; a change that moves no pointer (a
            # compatibility mode) wakes nobody, so the log is also read once a second (one read of
            # the revision when nothing happened).
            self._wake.wait(SAFETY_POLL_SECONDS)
            self._wake.clear()
            if self._closed:
                return
            try:
                self._read_log()
            except PromptRegistryError as exc:  # logged once per outage; retried every 0.5 s
                if not self._failing:
                    logger.warning("promptreg serve: cannot read the change log (retrying): %s", exc)
                self._failing = True
                self._wake.clear()
                threading.Event().wait(0.5)
                self._wake.set()
            else:
                if self._failing:
                    logger.warning("promptreg serve: reading the change log again")
                self._failing = False

    def _read_log(self) -> None:
        events = self._registry.changes_since(self._rev, limit=REPLAY_LIMIT)
        if events is None:  # the log cannot fill the gap: everyone reads the state anew
            current = self._registry.revision()
            self._rev = current
            self._loop.call_soon_threadsafe(self._fan_out, [(current, control_event("resync", current), True)])
            return
        if not events:
            return
        for event in events:
            for listener in self._listeners:
                try:
                    listener(event)
                except Exception:  # a listener's bug must not stop the stream
                    logger.exception("promptreg serve: change listener failed")
        self._rev = events[-1].rev
        self._loop.call_soon_threadsafe(self._fan_out, [(e.rev, encode_event(e), False) for e in events])

    def _fan_out(self, items: list[tuple[int, bytes, bool]]) -> None:
        for subscriber in list(self._subscribers):
            try:
                for item in items:
                    subscriber.queue.put_nowait(item)
            except asyncio.QueueFull:
                logger.warning("promptreg serve: a stream subscriber fell %d events behind; closed", QUEUE_LIMIT)
                self._subscribers.discard(subscriber)
                while not subscriber.queue.empty():
                    subscriber.queue.get_nowait()
                subscriber.queue.put_nowait((0, _CLOSE, True))

    async def subscribe(self, last_event_id: int | None) -> AsyncIterator[bytes]:
        """The events of one stream: a replay after ``last_event_id`` (or ``ready``), then live ones."""
        subscriber = _Subscriber(self._rev)
        self._subscribers.add(subscriber)  # first, so nothing written during the replay is missed
        try:
            yield b"retry: 1000\n\n"
            if last_event_id is None:
                yield control_event("ready", subscriber.after)
            else:
                replay = await asyncio.to_thread(self._replay, last_event_id)
                if replay is None:
                    current = await asyncio.to_thread(self._registry.revision)
                    subscriber.after = current
                    yield control_event("resync", current)
                else:
                    for rev, data in replay:
                        yield data
                        subscriber.after = max(subscriber.after, rev)
                    subscriber.after = max(subscriber.after, last_event_id)
            while True:
                rev, data, control = await subscriber.queue.get()
                if data is _HEARTBEAT:
                    yield data
                    continue
                if data == _CLOSE:
                    return
                if rev <= subscriber.after and not control:
                    continue  # replayed already
                subscriber.after = rev if control else max(subscriber.after, rev)
                yield data
        finally:
            self._subscribers.discard(subscriber)

    def _replay(self, after: int) -> list[tuple[int, bytes]] | None:
        events = self._registry.changes_since(after, limit=REPLAY_LIMIT)
        return None if events is None else [(e.rev, encode_event(e)) for e in events]

    @property
    def subscribers(self) -> int:
        """How many streams are open."""
        return len(self._subscribers)
