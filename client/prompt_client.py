"""``PromptClient``: label resolution inside the process, kept fresh by push."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, cast
from zlib import crc32

from promptreg.client.cache import Cache, ChangeEvent
from promptreg.client.cached_version import CachedVersion
from promptreg.client.feeds import FeedContext
from promptreg.client.forking import LIVE_CLIENTS, ForkedParentCache
from promptreg.client.lookups import Lookups, keyword_only_after_label
from promptreg.client.presence import FleetPresence, served_probe
from promptreg.client.rendering import Rendering
from promptreg.client.snapshot import LastKnownGood
from promptreg.client.sources import open_source, registry_from_environment
from promptreg.client.status import ClientState, ClientStatus, StatusTracker
from promptreg.client.subset import PromptSubset
from promptreg.registry.errors import (
    InvalidInputError,
    RegistryUnavailableError,
)
from promptreg.registry.factory import NAMESPACE_ENV, redact_url
from promptreg.registry.fleet import DEFAULT_REPORT_INTERVAL
from promptreg.registry.redis.topology import RedisClient
from promptreg.registry.validation import (
    DEFAULT_NAMESPACE,
    validate_label,
    validate_namespace,
)

if TYPE_CHECKING:
    from promptreg.client.telemetry import Telemetry

logger = logging.getLogger("promptreg.client")

LABEL_ENV = "PROMPTREG_LABEL"
"""The environment variable holding the default label (when ``default_label`` is not given)."""
DEFAULT_LABEL = "production"

ChangeCallback = Callable[[ChangeEvent], object]


class PromptClient(Lookups, Rendering):
    """Resolves prompt labels in-process, with no I/O on lookup, kept current by the registry's pushes.

    ``url`` is a registry URL as the factory takes it (``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://``, ``redis+cluster://``, ``postgresql://``, ``file://``;
    :mod:`promptreg.registry.redis.topology`), or a
    redis-py client the application configured (see :meth:`from_redis`). Without ``url``, the client
    follows the registry the environment names, as
    :meth:`~promptreg.PromptRegistryFactory.create_from_config` does: ``$PROMPTREG_URL``, else
    :data:`~promptreg.registry.factory.DEFAULT_URL` (``./.promptreg/registry.json``), and for a Redis or
    PostgreSQL URL ``$PROMPTREG_NAMESPACE`` unless ``namespace`` is given (a file has no namespace).
    ``read_from="replica"`` (or ``?read_from=replica`` in a Sentinel URL) reads and subscribes on a
    replica Sentinel names (``slave_for``) instead of the primary. ``default_label`` (else
    ``$PROMPTREG_LABEL``, else ``production``) is what :meth:`get` resolves when no label is given.
    ``namespace`` (else ``$PROMPTREG_NAMESPACE``, else ``promptreg``) selects the Redis keys.
    ``snapshot_path`` names the last-known-good file: written after changes, read at start when the
    registry cannot be reached. The constructor waits up to ``start_timeout`` seconds for the first
    state, never raises for an unreachable registry, and starts a daemon listener thread; check
    :meth:`status` or :meth:`wait_ready`.
    ``poll_interval`` is the safety poll of the revision (and subscriber ping) on a quiet channel.
    ``prompts`` (default ``None``: every prompt) is an iterable of the prompt names the client serves,
    exact or ``"prefix/*"`` patterns: it reads, caches and applies changes only for those, so its
    start-up and memory scale with what the service uses; a lookup of any other prompt raises
    :class:`~promptreg.PromptNotFoundError` saying the client does not serve it.
    On Redis it reports its presence (:attr:`client_id`, ``client_name``, state, revision served) every
    ``report_interval`` s and after each change, off the lookup path; ``fleet_report=False``: no report.
    ``tracing=True`` sets the prompt's name, version, label, content hash and rollout variant on the
    current OpenTelemetry span at each lookup (``trace_content=True`` adds the variable names and the
    rendered text); ``metrics=True`` counts lookups and measures how long changes take to arrive
    (``meter_provider``, else the global one). Both need the ``otel`` extra; off, nothing of
    OpenTelemetry is imported and lookups cost what they always did (docs/observability.md).
    When the constructor (or :meth:`wait_ready`) returns with the client ``live``, its first report
    is written: :meth:`~promptreg.PromptRegistry.fleet` lists it.

    The client is safe to share between threads and survives ``os.fork()``: a child gets its own
    connections, listener and fleet id. A process counts in the fleet only while it serves: after a
    fork the parent's client stops reporting (its record is removed) until the parent serves a lookup
    through it again, so a pre-fork master (``gunicorn --preload``) that only forks workers is not
    waited for by :meth:`~promptreg.PromptRegistry.wait_for_fleet`; the child reports as a new member.
    Raises :class:`~promptreg.InvalidInputError` for an unsupported URL or a malformed label or
    namespace.
    """

    def __init__(
        self,
        url: str | RedisClient | None = None,
        *,
        default_label: str | None = None,
        snapshot_path: str | os.PathLike[str] | None = None,
        start_timeout: float = 5.0,
        namespace: str | None = None,
        poll_interval: float = 30.0,
        prompts: Iterable[str] | None = None,
        read_from: str | None = None,
        fleet_report: bool = True,
        client_name: str | None = None,
        report_interval: float = DEFAULT_REPORT_INTERVAL,
        tracing: bool = False,
        metrics: bool = False,
        trace_content: bool = False,
        meter_provider: Any = None,
    ) -> None:
        started = time.monotonic()
        self._telemetry: Telemetry | None = None
        self._presence = FleetPresence(fleet_report, client_name, report_interval)
        label = default_label or os.environ.get(LABEL_ENV) or DEFAULT_LABEL
        self._default_label = validate_label(label)
        if url is None:
            url, namespace = registry_from_environment(namespace)
        else:
            namespace = namespace or os.environ.get(NAMESPACE_ENV)
        self._namespace = validate_namespace(namespace or DEFAULT_NAMESPACE)
        if not poll_interval > 0:
            raise InvalidInputError(f"poll_interval must be > 0 seconds, got {poll_interval!r}")
        self._url = url if isinstance(url, str) else repr(url)  # redis-py's repr shows no password
        self._cache = Cache(self._default_label, None if prompts is None else PromptSubset(prompts))
        # What lookups read: the cache itself, or (in a parent after a fork) the tripwire that puts it
        # back at the first lookup (promptreg.client.forking.ForkedParentCache). The rest of the client reads _cache.
        self._lookup_cache = self._cache
        self._status = StatusTracker(rev=lambda: self._cache.rev)
        self._callbacks: tuple[ChangeCallback, ...] = ()
        self._callbacks_lock = threading.Lock()
        path = None if snapshot_path is None else Path(snapshot_path)
        self._last_known_good = None if path is None else LastKnownGood(path, self._namespace)
        self._closed = False
        self._registry, self._feed = open_source(url, self._namespace, self._context(), poll_interval, read_from)
        self._status.add_listener(self._status_changed)
        # The reporter connects while the state is read, so the first report is one round trip after live.
        self._presence.start(self._registry, served_probe(self._status, self._cache), self._default_label)
        LIVE_CLIENTS.add(self)
        self._start(start_timeout)
        self._presence.client_started()
        if tracing or metrics or trace_content:  # only then is OpenTelemetry imported (docs/observability.md)
            from promptreg.client.telemetry import instrument

            self._telemetry = instrument(
                self, tracing=tracing or trace_content, metrics=metrics, trace_content=trace_content,
                meter_provider=meter_provider,
            )  # fmt: skip
        if self._status.state is ClientState.LIVE:
            self._presence.wait_reported(max(0.0, start_timeout - (time.monotonic() - started)))

    @classmethod
    def from_redis(cls, redis_client: RedisClient, **options: Any) -> PromptClient:
        """A client on a redis-py client the application already configured: ``redis.Redis``, one
        from ``Sentinel.master_for`` / ``slave_for``, or a ``redis.cluster.RedisCluster``.

        ``options`` are the constructor's. The given connection is used for reads as it is (closing
        the :class:`PromptClient` does not close it); the listener subscribes on a connection of its
        own to the same server, Sentinel service or slot owner. Raises what the constructor raises.
        """
        return cls(redis_client, **options)

    # -- lookups (the hot path) -----------------------------------------------------------------

    def get(  # the parameters after label are keyword-only by contract: see _GET_SIGNATURE
        self,
        name: str,
        label: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: str | None = None,
    ) -> CachedVersion:
        """The version ``label`` (default: the client's default label) of prompt ``name`` points at.

        ``label="latest"`` is the newest version. Labelled lookups never do I/O: they read the cache
        and take no lock. While a rollout runs on the label (:meth:`~promptreg.PromptRegistry.start_rollout`),
        ``key`` (a user or session id, a ``str``) picks the variant: the same key gets the same
        variant in every process and after restarts, and raising the percentage only moves keys
        from the stable version to the candidate; without a key each lookup picks at random with
        the percentage. ``key`` changes nothing when no rollout runs. A pinned ``version`` not
        cached yet is read from the registry once, then cached for ever. Raises
        :class:`~promptreg.PromptNotFoundError`,
        :class:`~promptreg.LabelNotFoundError`, :class:`~promptreg.VersionNotFoundError`,
        :class:`~promptreg.InvalidNameError` for a malformed name or label, and
        :class:`~promptreg.RegistryUnavailableError` when the answer needs the registry and it
        cannot be reached (a pinned version not cached; any miss before the first state arrived).

        ``fallback`` is the last resort for that last case only: instead of raising
        :class:`~promptreg.RegistryUnavailableError`, the text is returned as a
        :class:`~promptreg.CachedVersion` with ``version == 0`` and ``metadata == {"fallback": True}``
        (counted in :attr:`ClientStatus.fallbacks_served`). A prompt or label the client's state
        says does not exist still raises: a typo is never masked.

        Pass ``key``, ``version`` and ``fallback`` by keyword (declared positional for speed:
        :func:`~promptreg.client.lookups.keyword_only_after_label`).
        A lookup never checks for a fork: the fleet rule after a fork costs it nothing
        (:mod:`promptreg.client.forking`).
        """
        # After a fork, in the parent, _lookup_cache is a one-shot tripwire: its first use puts the
        # cache back and resumes the fleet reports; from then on this is the same two subscripts.
        if version is None:
            if key is None:
                try:
                    return self._lookup_cache.view[label][name]
                except (KeyError, TypeError):
                    pass
            else:  # the keyed view: the plain one, with each rollout as a Split (client/views.py)
                try:
                    hit = self._lookup_cache.keyed[label][name]
                    if hit.__class__ is CachedVersion:
                        return hit
                    if crc32(key.encode(), hit.seed) % 10000 < hit.threshold:  # type: ignore[union-attr]
                        return hit.candidate  # type: ignore[union-attr]
                    return hit.stable  # type: ignore[union-attr]
                except (KeyError, TypeError, AttributeError, ValueError):
                    pass
        if fallback is None:
            return self._lookup_miss(name, label, version, key)
        try:
            return self._lookup_miss(name, label, version, key)
        except RegistryUnavailableError as exc:
            return self._fallback(name, fallback, exc)

    def pointers(self) -> tuple[int, dict[str, dict[str, int]]]:
        """``(rev, {name: {label: version}})``: the revision the cache holds and every cached
        prompt's labels (``latest``: its newest version), copied; for listing what the client serves."""
        rev, pointers = self._cache.pointers_copy()
        return rev, {name: dict(labels) for name, labels in pointers.items()}

    # -- change notification ---------------------------------------------------------------------

    def on_change(self, callback: ChangeCallback) -> Callable[[], None]:
        """Call ``callback(event)`` for every change applied (a :class:`ChangeEvent` each).

        Callbacks run on the listener thread after the change is visible to :meth:`get`, with no
        lock held; keep them short. An exception in a callback is logged and ignored. After a
        resync, the events describe the difference between the old and the new state. Returns a
        function that unregisters the callback.
        """
        with self._callbacks_lock:
            self._callbacks = (*self._callbacks, callback)

        def unregister() -> None:
            with self._callbacks_lock:
                callbacks = list(self._callbacks)
                if callback in callbacks:
                    callbacks.remove(callback)
                self._callbacks = tuple(callbacks)

        return unregister

    def _notify(self, events: list[ChangeEvent]) -> None:
        for callback in self._callbacks:
            for event in events:
                try:
                    callback(event)
                except Exception:
                    logger.exception("promptreg: on_change callback %r raised; ignored", callback)

    # -- status ------------------------------------------------------------------------------------

    def status(self) -> ClientStatus:
        """The feed's state (initializing, live, stale, closed), since when, the cache's revision,
        the last error, and counters. Never raises."""
        return self._status.snapshot(self._cache.rev)

    def on_status(self, callback: Callable[[ClientStatus], None]) -> Callable[[], None]:
        """Call ``callback(status)`` with the new :class:`ClientStatus` on every change of state
        (``initializing`` -> ``live`` -> ``stale`` -> ``live`` ... -> ``closed``).

        Callbacks run with no lock held, on the thread that changed the state (the listener thread,
        or the one calling :meth:`close`); an exception in one is logged and ignored. Returns a
        function that unregisters the callback.
        """
        return self._status.add_listener(callback)

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the client is ``live``; ``False`` if ``timeout`` passed first or it was closed.

        On Redis with fleet reports, ``True`` also means the client's first report as ``live`` was
        written (or failed and was logged): :meth:`~promptreg.PromptRegistry.fleet` lists it (within
        ``timeout``; a report that takes longer does not turn the answer into ``False``).
        """
        started = time.monotonic()
        if not self._status.wait_live(timeout):
            return False
        self._presence.wait_reported(None if timeout is None else max(0.0, timeout - (time.monotonic() - started)))
        return True

    @property
    def default_label(self) -> str:
        """The label :meth:`get` resolves when none is given."""
        return self._default_label

    @property
    def client_id(self) -> str:
        """This client's id in the fleet view: ``<host>:<pid>:<random hex>`` (a forked child gets its own)."""
        return self._presence.client_id

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the listener, write the last-known-good file if it is behind, close connections.

        Idempotent. Lookups keep answering from the last state after ``close()``.
        """
        if self._closed:
            return
        self._closed = True
        LIVE_CLIENTS.discard(self)
        self._presence.stop()
        if self._telemetry is not None:
            self._telemetry.close()
        self._feed.stop()
        self._status.closed()
        if self._last_known_good is not None:
            self._last_known_good.write(self._cache, self._status, force=True)
        self._feed.close()
        self._registry.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        status = self.status()
        return f"<PromptClient {redact_url(self._url)} {status.state.value} rev={status.rev}>"

    # -- internals -----------------------------------------------------------------------------------

    def _context(self) -> FeedContext:
        return FeedContext(self._cache, self._status, self._notify, self._idle, lambda: bool(self._callbacks))

    def _start(self, start_timeout: float) -> None:
        started = time.monotonic()
        # The last-known-good file is loaded first: the registry's state replaces it as soon as it
        # is read, and an empty registry at boot then cannot replace it (an outage, not a state).
        last_known_good = self._last_known_good
        from_file = last_known_good is not None and last_known_good.load(self._cache, self._status)
        self._feed.start()
        self._feed.first_attempt.wait(start_timeout)
        if self._status.state is ClientState.LIVE:
            return
        if from_file and last_known_good is not None:
            logger.warning(
                "promptreg: registry %s not live (%s); serving the last-known-good file %s (rev %d)",
                redact_url(self._url),
                self._status.snapshot(self._cache.rev).last_error,
                last_known_good.path,
                self._cache.rev,
            )
            return
        self._status.wait_live(max(0.0, start_timeout - (time.monotonic() - started)))
        if not self._cache.loaded:
            logger.warning(
                "promptreg: no state from %s within %g s and no last-known-good file; lookups raise "
                "RegistryUnavailableError (or return their fallback=) until the registry is reached",
                redact_url(self._url), start_timeout,
            )  # fmt: skip

    def _status_changed(self, status: ClientStatus) -> None:
        self._presence.poke()  # live (or stale) is reported at once, not at the listener's next message

    def _idle(self) -> None:
        self._presence.poke()  # after every message the listener handled: a new revision is acknowledged
        if self._last_known_good is not None:
            self._last_known_good.write_if_due(self._cache, self._status)

    def _after_fork_in_child(self) -> None:
        if self._closed:
            return
        self._lookup_cache = self._cache  # the child serves: no tripwire inherited from a forked parent
        self._callbacks_lock = threading.Lock()
        self._cache.after_fork()
        self._status.after_fork("process forked: reconnecting")
        self._feed = self._feed.forked(self._context())
        self._feed.start()
        self._presence = self._presence.forked(
            self._registry, served_probe(self._status, self._cache), self._default_label
        )

    def _after_fork_in_parent(self) -> None:
        # Flags only (no I/O, no lock): the reporter removes the record on its own thread, and the
        # tripwire resumes it at the parent's next lookup.
        if not self._closed and self._presence.pause():
            self._lookup_cache = cast(Cache, ForkedParentCache(self._cache, self._first_lookup_after_fork))

    def _first_lookup_after_fork(self) -> None:
        if self._lookup_cache is not self._cache:  # a race between two lookups repeats this harmlessly
            self._lookup_cache = self._cache
            self._presence.resume()


PromptClient.get.__signature__ = keyword_only_after_label(PromptClient.get)  # type: ignore[attr-defined]
