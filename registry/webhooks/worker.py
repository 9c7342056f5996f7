"""The delivery worker: ``promptreg webhooks run`` and ``promptreg serve --webhooks``.

One worker delivers at a time, registry-wide: it holds the registry's lease (it expires after
``lease_ttl`` seconds unless renewed, every third of that, by a thread of its own). A second worker
waits, trying the lease, and takes over within ``lease_ttl`` when the first dies (at once when it
stops cleanly: it gives the lease up). A worker that could not renew in time stops sending before
its lease can expire, and the store refuses its cursor writes once another holds the lease.

The worker reads every endpoint's cursor when it takes the lease, then runs each endpoint's
:class:`~promptreg.registry.webhooks.delivery.EndpointDelivery` in turn: one message per endpoint per
turn, so a failing endpoint (waiting for its retry) never holds up the others. A slow endpoint
holds the turn for at most its connect and read timeouts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import ConfigurationError, PromptRegistryError
from promptreg.registry.webhooks.delivery import (
    DeliveryContext,
    DeliverySettings,
    EndpointDelivery,
    FleetTracker,
    Post,
)
from promptreg.registry.webhooks.errors import LeaseLostError, WebhookNotFoundError
from promptreg.registry.webhooks.models import new_holder
from promptreg.registry.webhooks.signing import read_secret
from promptreg.registry.webhooks.store import WebhookStore, webhook_store
from promptreg.registry.webhooks.transport import post as http_post

logger = logging.getLogger("promptreg.webhooks")


class LeaseKeeper:
    """Takes and renews the lease of one worker. :meth:`held` turns false before the lease can
    expire in the store (at 80 % of the TTL since the last renewal asked), so a worker whose renewals
    stall stops sending before another may start."""

    def __init__(self, store: WebhookStore, holder: str, ttl: float, stop: threading.Event) -> None:
        self.store, self.holder, self.ttl, self._stop = store, holder, ttl, stop
        self._valid_until = 0.0
        self._thread: threading.Thread | None = None

    def held(self) -> bool:
        """Whether this worker may send now."""
        return time.monotonic() < self._valid_until

    def acquire(self) -> bool:
        """Take (or renew) the lease; whether it is held. Raises what the store raises."""
        asked = time.monotonic()
        if self.store.acquire_lease(self.holder, self.ttl):
            self._valid_until = asked + self.ttl * 0.8
            if self._thread is None:
                self._thread = threading.Thread(target=self._renew, name="promptreg-webhooks-lease", daemon=True)
                self._thread.start()
            return True
        self._valid_until = 0.0
        return False

    def lost(self) -> None:
        """The store said another worker holds it."""
        self._valid_until = 0.0

    def release(self) -> None:
        """Give the lease up (never raises: it expires anyway)."""
        held, self._valid_until = self.held(), 0.0
        if held:
            try:
                self.store.release_lease(self.holder)
            except PromptRegistryError as exc:
                logger.warning("webhooks: could not release the lease (it expires by itself): %s", exc)

    def _renew(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            if not self.held():
                continue  # the delivery loop takes it again (or waits for it)
            try:
                if not self.acquire():
                    logger.warning("webhooks: lost the lease to another worker; deliveries stop")
            except PromptRegistryError as exc:  # held() lapses by itself if this goes on
                logger.warning("webhooks: could not renew the lease: %s", exc)


class WebhookWorker:
    """Delivers the audit trail of ``registry`` to its webhook endpoints (module docstring).

    ``store`` defaults to the registry's own (:func:`~promptreg.registry.webhooks.store.webhook_store`);
    ``environ`` is where secrets are read (default ``os.environ``); ``post`` sends one request
    (:func:`~promptreg.registry.webhooks.transport.post`). :meth:`run` delivers until :meth:`stop`;
    :meth:`start` runs it in a daemon thread.
    """

    def __init__(
        self, registry: PromptRegistry, store: WebhookStore | None = None, *, settings: DeliverySettings | None = None,
        environ: Mapping[str, str] | None = None, holder: str | None = None, post: Post = http_post,
    ) -> None:  # fmt: skip
        self.registry = registry
        self.store = store if store is not None else webhook_store(registry)
        self.settings = settings or DeliverySettings()
        self.holder = holder or new_holder()
        """This worker's id in the lease (host, pid, random)."""
        self._stop = threading.Event()
        self.lease = LeaseKeeper(self.store, self.holder, self.settings.lease_ttl, self._stop)
        self.fleet = FleetTracker(registry, self.settings.fleet_timeout)
        self.context = DeliveryContext(registry, self.store, self.settings, self.holder,
                                       os.environ if environ is None else environ, self.fleet, post,
                                       self.lease.held)  # fmt: skip
        self.deliveries: dict[str, EndpointDelivery] = {}
        self._thread: threading.Thread | None = None
        self._refreshed_at: float | None = None
        self._told_waiting = False
        self._delivered = 0

    def check_secrets(self) -> None:
        """Raise :class:`~promptreg.ConfigurationError` naming every endpoint whose secret variable
        is missing or malformed in this worker's environment (``webhooks run`` checks before it starts)."""
        problems = []
        for endpoint in self.store.endpoints():
            try:
                read_secret(self.context.environ, endpoint.secret_env)
            except ConfigurationError as exc:
                problems.append(f"{endpoint.id}: {exc}")
        if problems:
            raise ConfigurationError("; ".join(problems))

    def run(self, *, once: bool = False) -> int:
        """Deliver until :meth:`stop` (``once``: until every endpoint caught up with the registry;
        at once if another worker holds the lease). Returns the messages delivered. Never raises for
        a store or receiver failure (they are logged and retried)."""
        try:
            while not self._stop.is_set():
                if not self.lease.held():
                    self._delivered += sum(d.delivered for d in self.deliveries.values())
                    self.deliveries.clear()  # another worker may have moved the cursors: read them anew
                    self._refreshed_at = None
                    if not self._take_lease(once):
                        if once:
                            return 0
                        self._stop.wait(min(self.settings.lease_ttl / 3, self.settings.poll_interval))
                        continue
                try:
                    wait = self._turn()
                except LeaseLostError:
                    logger.warning("webhooks: %s no longer holds the lease; deliveries stop", self.holder)
                    self.lease.lost()
                    continue
                except PromptRegistryError as exc:  # the store or the registry is unreachable: try again
                    logger.error("webhooks: %s", exc)
                    wait = self.settings.poll_interval
                if (
                    once
                    and self._refreshed_at is not None
                    and all(d.caught_up or d.blocked for d in self.deliveries.values())
                ):
                    break
                self._stop.wait(wait)
            return self._delivered + sum(d.delivered for d in self.deliveries.values())
        finally:
            self.lease.release()

    def _take_lease(self, once: bool) -> bool:
        try:
            if self.lease.acquire():
                logger.info("webhooks: %s holds the delivery lease", self.holder)
                return True
            current = self.store.lease()
        except PromptRegistryError as exc:
            logger.error("webhooks: %s", exc)
            return False
        if current is not None and (once or not self._told_waiting):
            logger.info("webhooks: %s delivers (lease until %s); %s", current.holder, current.expires_at.isoformat(),
                        "nothing to do" if once else "waiting to take over")  # fmt: skip
            self._told_waiting = True
        return False

    def _turn(self) -> float:
        """Run each endpoint that is due once; returns the seconds until one is due again."""
        now = time.monotonic()
        if self._refreshed_at is None or now - self._refreshed_at >= self.settings.poll_interval:
            self._refresh()
        soonest = now + self.settings.poll_interval
        for endpoint_id, delivery in list(self.deliveries.items()):
            if delivery.due > time.monotonic():
                soonest = min(soonest, delivery.due)
                continue
            try:
                delay = delivery.step()
            except WebhookNotFoundError:
                del self.deliveries[endpoint_id]  # removed while delivering
                continue
            except LeaseLostError:
                raise
            except PromptRegistryError as exc:
                logger.error("webhook %s: %s", endpoint_id, exc)
                delay = self.settings.poll_interval
            except Exception as exc:  # a bug must not end the deliveries of every endpoint
                logger.exception("webhook %s: unexpected %s", endpoint_id, type(exc).__name__)
                delay = self.settings.poll_interval
            delivery.due = time.monotonic() + delay
            soonest = min(soonest, delivery.due)
            if self._stop.is_set():
                break
        return max(0.0, soonest - time.monotonic())

    def _refresh(self) -> None:
        endpoints = {endpoint.id: endpoint for endpoint in self.store.endpoints()}
        for gone in set(self.deliveries) - set(endpoints):
            del self.deliveries[gone]
        for endpoint_id, endpoint in endpoints.items():
            if endpoint_id not in self.deliveries:
                cursor = self.store.cursor(endpoint_id)
                if cursor is not None:
                    self.deliveries[endpoint_id] = EndpointDelivery(endpoint, cursor, self.context)
        self._refreshed_at = time.monotonic()

    def start(self) -> None:
        """Run :meth:`run` in a daemon thread (``promptreg serve --webhooks``)."""
        self._thread = threading.Thread(target=self.run, name="promptreg-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop delivering (the message being sent finishes first, up to ``timeout`` seconds), give
        the lease up and stop the fleet waits. Idempotent."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.fleet.close()
