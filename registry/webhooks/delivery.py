"""One endpoint's deliveries (:class:`EndpointDelivery`), the fleet's answers (:class:`FleetTracker`)
and the settings of both (:class:`DeliverySettings`).

An endpoint's cursor says how far it got (:class:`~promptreg.registry.webhooks.models.Position`).
Each :meth:`EndpointDelivery.step` sends at most one message, the next one in revision order: a
message that fails is kept in the cursor (same id, same body) and retried after an exponential
backoff with jitter; after ``max_attempts`` failures it becomes a dead letter and the endpoint
moves on. The cursor is saved after every message (and after a run of skipped ones), so a worker
that dies resends at most the message it was sending: at least once, nothing lost.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import ConfigurationError, InvalidInputError
from promptreg.registry.models import AuditEvent, utcnow
from promptreg.registry.webhooks.errors import LeaseLostError
from promptreg.registry.webhooks.event_types import FLEET_STEP, steps_of
from promptreg.registry.webhooks.messages import (
    FleetOutcome,
    Message,
    event_message,
    fingerprint,
    fleet_message,
    resync_message,
)
from promptreg.registry.webhooks.models import (
    MAX_ERROR_LENGTH,
    Cursor,
    DeadLetter,
    PendingMessage,
    Position,
    WebhookEndpoint,
)
from promptreg.registry.webhooks.signing import read_secret, signature_headers
from promptreg.registry.webhooks.store import WebhookStore
from promptreg.registry.webhooks.transport import Attempt

logger = logging.getLogger("promptreg.webhooks")

FLEET_POLL: Final = 0.05
"""Seconds between looks at a fleet wait still running."""
SECRET_RETRY: Final = 30.0
"""Seconds between tries of an endpoint whose secret variable is missing (logged each time)."""
SKIPS_PER_SAVE: Final = 500
"""Messages skipped (filtered out) in a row before the cursor is saved anyway."""
Post = Callable[..., Attempt]


@dataclass(frozen=True)
class DeliverySettings:
    """How the worker delivers. Seconds everywhere; each must be > 0.

    Retry ``n`` (after the ``n``-th failure) waits ``min(backoff_max, backoff_base * backoff_factor **
    (n - 1))``, less a random part of up to half of it (jitter: workers retrying together spread out).
    """

    poll_interval: float = 1.0
    """How often an endpoint that caught up looks for new audit entries (and endpoints are re-read)."""
    backoff_base: float = 2.0
    backoff_factor: float = 4.0
    backoff_max: float = 600.0
    lease_ttl: float = 15.0
    """How long the lease lasts unless renewed (every third of it): how soon another worker takes over."""
    fleet_timeout: float = 30.0
    """How long a label move waits for the fleet before ``fleet.lagging``."""
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    batch: int = 200
    """Audit entries read at once."""

    def __post_init__(self) -> None:
        for name in ("poll_interval", "backoff_base", "backoff_factor", "backoff_max", "lease_ttl", "fleet_timeout",
                     "connect_timeout", "read_timeout"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
                raise InvalidInputError(f"{name} must be a number of seconds above 0, got {value!r:.40}")
        if self.backoff_factor < 1:
            raise InvalidInputError(f"backoff_factor must be at least 1, got {self.backoff_factor!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or not 1 <= self.batch <= 10_000:
            raise InvalidInputError(f"batch must be an integer from 1 to 10000, got {self.batch!r:.40}")

    def backoff(self, failures: int, jitter: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failure of a message."""
        ceiling = min(self.backoff_max, self.backoff_base * self.backoff_factor ** min(failures - 1, 64))
        return ceiling - ceiling / 2 * jitter()


_WAITING: Final = object()


class FleetTracker:
    """The fleet's answer to each label move, waited for once (in a background thread, so the
    endpoints' deliveries go on) and shared by every endpoint: ``wait_for_fleet(rev, timeout=...)``."""

    def __init__(self, registry: PromptRegistry, timeout: float) -> None:
        self.registry = registry
        self.timeout = timeout
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="promptreg-webhooks-fleet")
        self._futures: OrderedDict[tuple[int, str], Future[FleetOutcome | None]] = OrderedDict()

    def outcome(self, event: AuditEvent) -> FleetOutcome | object | None:
        """The answer for ``event`` (``None``: no client reports, so no fleet event), or the marker
        ``_WAITING`` while the wait runs. Raises what the wait raised (it is tried again next time)."""
        key = (event.rev, fingerprint(event))
        future = self._futures.get(key)
        if future is None:
            future = self._futures[key] = self._executor.submit(self._wait, event.rev)
            while len(self._futures) > 64:
                self._futures.popitem(last=False)
        if not future.done():
            return _WAITING
        try:
            return future.result()
        except Exception:
            del self._futures[key]
            raise

    def _wait(self, rev: int) -> FleetOutcome | None:
        result = self.registry.wait_for_fleet(rev, timeout=self.timeout)
        if not (result.reached or result.lagging or result.gone):
            return None
        members = {m.client_id: m for m in self.registry.fleet()} if result.lagging else {}
        return FleetOutcome(result, [members[c] for c in result.lagging if c in members])

    def close(self) -> None:
        """Stop waiting (a wait running ends by its timeout, in its daemon thread)."""
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class DeliveryContext:
    """What every endpoint's delivery shares: the worker's registry, store, settings and lease."""

    registry: PromptRegistry
    store: WebhookStore
    settings: DeliverySettings
    holder: str
    environ: Mapping[str, str]
    fleet: FleetTracker
    post: Post
    holds_lease: Callable[[], bool] = field(default=lambda: True)


def read_after(registry: PromptRegistry, rev: int, limit: int) -> list[AuditEvent] | None:
    """The audit entries after ``rev``, oldest first, at most ``limit`` of them; ``None`` when the
    log no longer holds the first one or the history is older than ``rev``."""
    events = registry.changes_since(rev, limit=limit)
    if events is None and registry.revision() - rev > limit:
        # A long backlog: changes_since refuses more than its limit at once; read it a page at a time.
        page = registry._changes_since(rev, limit)
        events = page if page and page[0].rev == rev + 1 else None
    return events


class EndpointDelivery:
    """The deliveries of one endpoint, from its cursor on (module docstring)."""

    def __init__(self, endpoint: WebhookEndpoint, cursor: Cursor, context: DeliveryContext) -> None:
        self.endpoint = endpoint
        self.cursor = cursor
        self.context = context
        self.due = 0.0
        """When (monotonic) the worker runs :meth:`step` next."""
        self.caught_up = False
        """Whether the last step found nothing to send (``--once`` ends when every endpoint has)."""
        self.blocked = False
        """Whether its secret variable is missing (nothing is sent; ``--once`` does not wait for it)."""
        self.delivered = 0
        self.dead = 0
        self._events: deque[AuditEvent] = deque()
        self._unsaved = 0

    def step(self) -> float:
        """Send the next message, or see that there is none; returns the seconds until the next step.
        Raises :class:`~promptreg.registry.webhooks.errors.LeaseLostError`,
        :class:`~promptreg.registry.webhooks.errors.WebhookNotFoundError` (removed) and what the
        registry and the store raise."""
        pending = self.cursor.pending
        if pending is not None:
            self.caught_up = False
            wait = pending.next_attempt_at - time.time()
            if wait > 0:
                return wait
            return self._send(Message(pending.id, pending.type, pending.rev, pending.body, pending.after),
                              pending.attempts)  # fmt: skip
        found = self._next()
        if isinstance(found, Message):
            self.caught_up = False
            return self._send(found, 0)
        if found is None:
            self._flush()
            self.caught_up = True
            return self.context.settings.poll_interval
        self.caught_up = False
        return FLEET_POLL

    # -- which message is next --------------------------------------------------------------------

    def _next(self) -> Message | object | None:
        while True:
            while self._events and self._events[0].rev <= self.cursor.rev:
                self._events.popleft()
            if self._events and self._events[0].rev != self.cursor.rev + 1:
                self._events.clear()  # the cursor jumped (a resync): read again from it
            if not self._events:
                if self._unsaved >= SKIPS_PER_SAVE:
                    self._flush()
                fetched = self._fetch()
                if isinstance(fetched, Message):
                    return fetched
                if not fetched:
                    return None
                self._events.extend(fetched)
                continue
            event = self._events[0]
            steps = steps_of(event)
            for index in range(self.cursor.step, len(steps)):
                last = index == len(steps) - 1
                after = Position(rev=event.rev, fingerprint=fingerprint(event)) if last else Position(
                    rev=self.cursor.rev, step=index + 1, fingerprint=self.cursor.fingerprint)  # fmt: skip
                kind = steps[index]
                if kind == FLEET_STEP:
                    if self.endpoint.wants_fleet():
                        outcome = self.context.fleet.outcome(event)
                        if outcome is _WAITING:
                            return _WAITING
                        if isinstance(outcome, FleetOutcome) and self.endpoint.wants(outcome.type):
                            return fleet_message(self.endpoint, event, outcome, index, after, utcnow())
                elif self.endpoint.wants(kind):
                    return event_message(self.endpoint, event, kind, index, after)
                self.cursor = Cursor(**after.model_dump())  # filtered out: nothing to send
                self._unsaved += 1

    def _fetch(self) -> list[AuditEvent] | Message:
        registry, cursor = self.context.registry, self.cursor
        current = registry.revision()
        if cursor.rev > current:
            return resync_message(self.endpoint, cursor, current, "the registry's history is older than the cursor "
                                  "(a restore)", utcnow())  # fmt: skip
        if cursor.rev == current:
            return []
        check = cursor.fingerprint is not None and cursor.rev >= 1
        events = read_after(registry, cursor.rev - 1 if check else cursor.rev, self.context.settings.batch)
        if events is None:
            return resync_message(self.endpoint, cursor, current, "the audit log no longer holds the entries after "
                                  "the cursor", utcnow())  # fmt: skip
        if check:
            if not events or fingerprint(events[0]) != cursor.fingerprint:
                return resync_message(self.endpoint, cursor, current, "the history was rewritten (a restore)",
                                      utcnow())  # fmt: skip
            events = events[1:]
        return events

    # -- sending ----------------------------------------------------------------------------------

    def _send(self, message: Message, failures: int) -> float:
        context, endpoint = self.context, self.endpoint
        try:
            key = read_secret(context.environ, endpoint.secret_env)
        except ConfigurationError as exc:
            self.blocked = True
            logger.error("webhook %s (%s): %s; its deliveries wait", endpoint.id, endpoint.display_url, exc)
            return SECRET_RETRY
        self.blocked = False
        if not context.holds_lease():
            raise LeaseLostError(context.holder)
        body = message.body.encode("utf-8")
        headers = signature_headers(key, message.id, int(time.time()), body)
        attempt = context.post(endpoint.url, body, headers, connect_timeout=context.settings.connect_timeout,
                               read_timeout=context.settings.read_timeout)  # fmt: skip
        done = Cursor(**message.after.model_dump())
        if attempt.ok:
            self._save(done)
            self.delivered += 1
            logger.info("webhook %s: delivered %s (rev %d, %s) to %s: HTTP %s in %.0f ms [%s]", endpoint.id,
                        message.type, message.rev, message.id, endpoint.display_url, attempt.status,
                        attempt.elapsed * 1000, context.holder)  # fmt: skip
            return 0.0
        failures += 1
        error = (attempt.error or "failed")[:MAX_ERROR_LENGTH]
        if failures >= endpoint.max_attempts:
            letter = DeadLetter(endpoint=endpoint.id, id=message.id, type=message.type, rev=message.rev,
                                body=message.body, attempts=failures, error=error)  # fmt: skip
            context.store.add_dead_letter(letter, done, context.holder)
            self.cursor, self._unsaved = done, 0
            self.dead += 1
            logger.warning("webhook %s: %s (rev %d, %s) dead-lettered after %d attempts: %s", endpoint.id,
                           message.type, message.rev, message.id, failures, error)  # fmt: skip
            return 0.0
        delay = context.settings.backoff(failures)
        pending = PendingMessage(id=message.id, type=message.type, rev=message.rev, body=message.body,
                                 attempts=failures, next_attempt_at=time.time() + delay, last_error=error,
                                 after=message.after)  # fmt: skip
        self._save(self.cursor.model_copy(update={"pending": pending}))
        logger.warning("webhook %s: %s (rev %d) attempt %d of %d failed: %s; retry in %.1f s", endpoint.id,
                       message.type, message.rev, failures, endpoint.max_attempts, error, delay)  # fmt: skip
        return delay

    def _save(self, cursor: Cursor) -> None:
        self.context.store.save_cursor(self.endpoint.id, cursor, self.context.holder)
        self.cursor, self._unsaved = cursor, 0

    def _flush(self) -> None:
        if self._unsaved:
            self._save(self.cursor)
