"""OpenTelemetry for :class:`~promptreg.PromptClient`, opt-in: span attributes and metrics.

``PromptClient(..., tracing=True)`` sets, on the span current when :meth:`~promptreg.PromptClient.get`
(or ``render``, which calls it) returns, which prompt version served the call: :func:`prompt_attributes`.
It never starts a span of its own, and does nothing more than ask the span ``is_recording()`` when it
is not. ``metrics=True`` counts lookups and reports the client's state, resyncs, revision and how long
a write took to reach it, through the OpenTelemetry metrics API (meter ``promptreg``).

A client without telemetry pays nothing: :func:`instrument` replaces the client's own *instance*
attributes ``get`` (and the render methods, for ``trace_content``) with wrappers that call the class's
methods; :meth:`Telemetry.close` removes them. This module imports OpenTelemetry only in
:func:`instrument`, so :func:`prompt_attributes` (used by ``prepare()``) needs none.
docs/observability.md: what each attribute and instrument means.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from promptreg.client.cached_version import CachedVersion
from promptreg.client.status import ClientState
from promptreg.registry.errors import InvalidInputError

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

    from promptreg.client.prompt_client import PromptClient

__all__ = [
    "LABEL", "PROMPT_NAME", "PROMPT_VERSION", "RENDERED", "RENDERED_MAX_CHARS", "SHA256", "VARIABLES", "VARIANT",
    "VERSION_NUMBER", "Telemetry", "content_sha256", "instrument", "lookup_attributes", "prompt_attributes",
]  # fmt: skip

PROMPT_NAME = "gen_ai.prompt.name"
"""The prompt's name (OpenTelemetry GenAI semantic conventions)."""
PROMPT_VERSION = "gen_ai.prompt.version"
"""The version number as a string (GenAI conventions: merged in semantic-conventions-genai PR #179)."""
VERSION_NUMBER = "promptreg.prompt.version"
"""The version number, an int."""
LABEL = "promptreg.prompt.label"
"""The label resolved: the one given, or the client's default label (absent for a pinned version)."""
SHA256 = "promptreg.prompt.sha256"
"""The full hex sha256 of the version's template (:func:`content_sha256`)."""
VARIANT = "promptreg.rollout.variant"
"""``"stable"`` or ``"candidate"``, only while a rollout of that label runs in the client."""
VARIABLES = "promptreg.prompt.variables"
"""``trace_content=True`` only: the sorted names of the variables a render was given (never values)."""
RENDERED = "promptreg.prompt.rendered"
"""``trace_content=True`` only: what a render returned (chat: JSON), cut to :data:`RENDERED_MAX_CHARS`."""
RENDERED_MAX_CHARS = 4096
"""The most characters of :data:`RENDERED` (a longer text is cut and ends with ``…``)."""
STATE = "promptreg.client.state"  # the attribute of the instrument of that name: a ClientState value

LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Bucket bounds (s) advised for ``promptreg.client.apply_lag``: a push takes ms, a poll up to a minute."""

_DIGESTS: dict[int, tuple[CachedVersion, str]] = {}
_DIGESTS_MAX = 100_000  # bounds the map for a process that churns through versions; cleared when full


def _content(version: CachedVersion) -> bytes:
    if version.messages is None:
        return version.text_once().encode("utf-8")
    return json.dumps(list(version.messages), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def content_sha256(version: CachedVersion) -> str:
    """The full hex sha256 of ``version``'s template, computed once per cached version.

    A text version: its text, UTF-8 (the very ``sha256`` the Redis backend stores for it). A chat
    version: its messages as canonical JSON (keys sorted, no spaces, UTF-8 kept as is). Neither
    ``config`` nor ``metadata`` is hashed. Kept for every version object the client serves (the
    object's identity is the key: a version number the registry reused after a restore is another
    object); an inline fallback (version 0) is hashed each time, never kept.
    """
    entry = _DIGESTS.get(id(version))
    if entry is not None and entry[0] is version:
        return entry[1]
    digest = hashlib.sha256(_content(version)).hexdigest()
    if version.version != 0:
        if len(_DIGESTS) >= _DIGESTS_MAX:
            _DIGESTS.clear()
        _DIGESTS[id(version)] = (version, digest)  # holding the version keeps its id from being reused
    return digest


def prompt_attributes(
    name: str, version: CachedVersion, label: str | None, variant: str | None
) -> dict[str, str | int]:
    """The attributes that tell which version served a lookup: ``gen_ai.prompt.name``,
    ``gen_ai.prompt.version`` (``str``), ``promptreg.prompt.version`` (``int``),
    ``promptreg.prompt.sha256``, and ``promptreg.prompt.label`` / ``promptreg.rollout.variant`` when
    not ``None``."""
    attributes: dict[str, str | int] = {
        PROMPT_NAME: name,
        PROMPT_VERSION: str(version.version),
        VERSION_NUMBER: version.version,
        SHA256: content_sha256(version),
    }
    if label is not None:
        attributes[LABEL] = label
    if variant is not None:
        attributes[VARIANT] = variant
    return attributes


def lookup_attributes(
    client: PromptClient, name: str, label: str | None, pinned: bool, found: CachedVersion
) -> dict[str, str | int]:
    """:func:`prompt_attributes` of a lookup of ``client``: the label resolved (``None`` for a
    ``pinned`` version) and the rollout variant ``found`` is, while one runs."""
    if pinned:
        return prompt_attributes(name, found, None, None)
    return prompt_attributes(name, found, label or client.default_label, _variant(client, name, label, found))


def _variant(client: PromptClient, name: str, label: str | None, found: CachedVersion) -> str | None:
    split = client._cache.split(name, label) if client._cache.rollouts else None
    return None if split is None else "candidate" if found is split.candidate else "stable"


def _bounded(rendered: object) -> str:
    text = rendered if isinstance(rendered, str) else json.dumps(rendered, ensure_ascii=False, default=str)
    return text if len(text) <= RENDERED_MAX_CHARS else text[: RENDERED_MAX_CHARS - 1] + "…"


# -- metrics: one set of instruments per meter provider, observing every client instrumented on it ---------


class _LookupCounts:
    """Lookups of one client, counted per thread in plain dicts (no lock, no lost increment: each
    thread writes only its own dict), summed when the metric reader collects."""

    def __init__(self) -> None:
        self.local = threading.local()
        self._shards: list[dict[tuple[Any, ...], int]] = []
        self._lock = threading.Lock()

    def shard(self) -> dict[tuple[Any, ...], int]:
        """A new dict for this thread's lookups (at its first lookup): ``local.counts``."""
        counts: dict[tuple[Any, ...], int] = {}
        self.local.counts = counts
        with self._lock:
            self._shards.append(counts)
        return counts

    def totals(self, into: dict[tuple[Any, ...], int], default_label: str) -> None:
        """Add every thread's counts to ``into``, as ``(name, label, version number, variant)``
        (``label``: the one resolved, ``None`` for a pinned version; ``variant``: ``None`` without a
        rollout)."""
        with self._lock:
            shards = list(self._shards)
        for shard in shards:
            for counted, count in shard.copy().items():  # copy(): one C call, no lookup thread runs during it
                name, label, version, number, *rolled = counted
                resolved = None if version is not None else label or default_label
                variant = None if not rolled or not rolled[1] else "candidate" if rolled[0] else "stable"
                key = (name, resolved, number, variant)
                into[key] = into.get(key, 0) + count


class _Instruments:
    """The instruments of one meter (creating one twice would drop the second's callbacks)."""

    def __init__(self, meter: Meter) -> None:
        from opentelemetry.metrics import Observation

        self._observation = Observation
        self._lock = threading.Lock()
        self.members: list[Telemetry] = []
        self.retired: dict[tuple[Any, ...], int] = {}  # counts of closed clients: a counter never goes down
        lookups, states = "Lookups served, by prompt, label, version and variant", "Clients in each state (1 or 0)"
        meter.create_observable_counter("promptreg.client.lookups", [self._lookups], "{lookup}", lookups)
        self.apply_lag = meter.create_histogram(
            "promptreg.client.apply_lag",
            "s",
            "Time from a registry write to the client applying it",
            explicit_bucket_boundaries_advisory=LAG_BUCKETS,
        )
        meter.create_observable_up_down_counter("promptreg.client.state", [self._states], "{client}", states)
        meter.create_observable_counter(
            "promptreg.client.resyncs", [self._resyncs], "{resync}", "Full state reloads since the client started"
        )
        meter.create_observable_gauge(
            "promptreg.client.revision", [self._revision], "{revision}", "The registry revision the client serves"
        )

    def join(self, member: Telemetry) -> None:
        with self._lock:
            self.members.append(member)

    def leave(self, member: Telemetry) -> None:
        with self._lock:
            if member in self.members:
                self.members.remove(member)
                if member.counts is not None:
                    member.counts.totals(self.retired, member.client.default_label)

    def _live(self) -> list[Telemetry]:
        with self._lock:
            return list(self.members)

    def _lookups(self, options: CallbackOptions) -> Iterator[Observation]:
        with self._lock:
            totals = dict(self.retired)
            members = list(self.members)
        for member in members:
            if member.counts is not None:
                member.counts.totals(totals, member.client.default_label)
        for (name, label, number, variant), count in totals.items():
            attributes: dict[str, str | int] = {PROMPT_NAME: name, VERSION_NUMBER: number}
            if label is not None:
                attributes[LABEL] = label
            if variant is not None:
                attributes[VARIANT] = variant
            yield self._observation(count, attributes)

    def _states(self, options: CallbackOptions) -> Iterator[Observation]:
        states = [member.client.status().state for member in self._live()]
        if states:
            for state in ClientState:
                yield self._observation(states.count(state), {STATE: state.value})

    def _resyncs(self, options: CallbackOptions) -> Iterator[Observation]:
        members = self._live()
        if members:
            yield self._observation(sum(member.client.status().resyncs for member in members))

    def _revision(self, options: CallbackOptions) -> Iterator[Observation]:
        members = self._live()
        if members:
            yield self._observation(min(member.client.status().rev for member in members))


_BY_PROVIDER: weakref.WeakKeyDictionary[Any, _Instruments] = weakref.WeakKeyDictionary()
_BY_PROVIDER_LOCK = threading.Lock()


def _instruments(provider: MeterProvider) -> _Instruments:
    with _BY_PROVIDER_LOCK:
        found = _BY_PROVIDER.get(provider)
        if found is None:
            found = _BY_PROVIDER[provider] = _Instruments(provider.get_meter("promptreg"))
        return found


# -- the hook ------------------------------------------------------------------------------------------------


class Telemetry:
    """What :func:`instrument` set up on one client; :meth:`close` takes it all away."""

    def __init__(self, client: PromptClient) -> None:
        self.client = client
        self.counts: _LookupCounts | None = None
        self._replaced: list[str] = []
        self._instruments: _Instruments | None = None
        self._unregister: Callable[[], None] | None = None

    def close(self) -> None:
        """Restore the client's methods (lookups are no longer traced nor counted), stop recording the
        apply lag and leave the metric callbacks (the instruments stay: the API cannot remove them;
        lookups counted so far keep being reported). Idempotent."""
        for attribute in self._replaced:
            self.client.__dict__.pop(attribute, None)
        self._replaced = []
        if self._unregister is not None:
            self._unregister()
            self._unregister = None
        if self._instruments is not None:
            self._instruments.leave(self)
            self._instruments = None

    def _replace(self, wrappers: dict[str, Callable[..., Any]]) -> None:
        """Set ``wrappers`` as the client's own instance attributes (its class is left alone).

        A new key in the instance's ``__dict__`` (as a new ``__class__``) makes CPython give up the
        specialized reads of the client's attributes, so an instrumented client's plain lookups stay
        a few ns slower even after :meth:`close`; next to the wrappers' own cost that is noise."""
        for attribute, wrapper in wrappers.items():
            setattr(self.client, attribute, wrapper)
            self._replaced.append(attribute)


def instrument(
    client: PromptClient,
    *,
    tracing: bool,
    metrics: bool,
    trace_content: bool,
    meter_provider: MeterProvider | None = None,
) -> Telemetry:
    """Hook OpenTelemetry into ``client`` (module docstring); :meth:`Telemetry.close` undoes it.

    ``meter_provider``: where the metrics go (default: the global one, ``metrics.get_meter_provider()``;
    set it before creating the client). Raises :class:`~promptreg.InvalidInputError` when
    ``opentelemetry-api`` is not installed, or ``trace_content`` is asked without ``tracing``.
    """
    try:
        from opentelemetry import metrics as otel_metrics
        from opentelemetry import trace
    except ImportError as exc:
        raise InvalidInputError(
            "tracing and metrics need the OpenTelemetry API: pip install 'promptreg-live[otel]'"
        ) from exc
    if trace_content and not tracing:
        raise InvalidInputError("trace_content=True needs tracing=True")
    telemetry = Telemetry(client)
    if metrics:
        telemetry.counts = _LookupCounts()
        instruments = _instruments(meter_provider or otel_metrics.get_meter_provider())
        telemetry._unregister = client.on_change(_apply_lag_recorder(instruments))
        instruments.join(telemetry)
        telemetry._instruments = instruments
    original = type(client).get.__get__(client)
    wrappers = {"get": _lookup(client, original, trace.get_current_span if tracing else None, telemetry.counts)}
    if trace_content:
        for method in ("render", "render_text", "render_chat"):
            bound = getattr(type(client), method).__get__(client)
            wrappers[method] = _render(bound, _own_keywords(bound), trace.get_current_span)
    telemetry._replace(wrappers)
    return telemetry


def _apply_lag_recorder(instruments: _Instruments) -> Callable[[Any], None]:
    histogram = instruments.apply_lag

    def record(event: Any) -> None:
        at = event.at
        if at is not None:
            histogram.record(max(0.0, time.time() - at), {LABEL: event.label} if event.label is not None else None)

    return record


def _lookup(
    client: PromptClient,
    original: Callable[..., CachedVersion],
    current_span: Callable[[], Any] | None,
    counts: _LookupCounts | None,
) -> Callable[..., CachedVersion]:
    """The wrapper of ``get``: one function per configuration, so the lookup path has no branch on
    it. Its parameters are ``get``'s own, positional (no ``*args``/``**kwargs`` dict per call)."""
    cache = client._cache
    if counts is None:
        assert current_span is not None

        def traced_get(
            name: str, label: str | None = None, key: str | None = None, version: int | None = None,
            fallback: str | None = None,
        ) -> CachedVersion:  # fmt: skip
            found = original(name, label, key, version, fallback)
            span = current_span()
            if span.is_recording():
                span.set_attributes(lookup_attributes(client, name, label, version is not None, found))
            return found

        return traced_get

    local, shard = counts.local, counts.shard

    def counted_get(
        name: str, label: str | None = None, key: str | None = None, version: int | None = None,
        fallback: str | None = None,
    ) -> CachedVersion:  # fmt: skip
        found = original(name, label, key, version, fallback)
        # Counted by what the caller passed and the object served; labels, numbers and the variant
        # are worked out when the reader collects (_LookupCounts.totals), not per lookup.
        if cache.rollouts and version is None:  # a rollout may have picked: note which variant
            running = cache.split(name, label)
            candidate = running is not None and found is running.candidate
            counted: tuple[Any, ...] = (name, label, version, found.version, candidate, running is not None)
        else:
            counted = (name, label, version, found.version)
        try:
            mine = local.counts
        except AttributeError:
            mine = shard()
        mine[counted] = mine.get(counted, 0) + 1
        if current_span is not None:
            span = current_span()
            if span.is_recording():
                span.set_attributes(lookup_attributes(client, name, label, version is not None, found))
        return found

    return counted_get


def _own_keywords(method: Callable[..., Any]) -> frozenset[str]:
    """The keyword-only parameters of a render method (``label``, ``version``...): not template values."""
    parameters = inspect.signature(method).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)


def _render(original: Callable[..., Any], own: frozenset[str], current_span: Callable[[], Any]) -> Callable[..., Any]:
    def traced_render(name: str, variables: Mapping[str, Any] | None = None, /, **options: Any) -> Any:
        rendered = original(name, variables, **options)  # its get() already set the version's attributes
        span = current_span()
        if span.is_recording():
            names = {key for key in options if key not in own}
            if isinstance(variables, Mapping):
                names.update(key for key in variables if isinstance(key, str))
            span.set_attributes({VARIABLES: sorted(names), RENDERED: _bounded(rendered)})
        return rendered

    return traced_render
