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
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from promptreg.client.cached_version import CachedVersion
from promptreg.client.telemetry_metrics import Instruments, LookupCounts, instruments_of
from promptreg.registry.errors import InvalidInputError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider

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


# -- the hook ------------------------------------------------------------------------------------------------


class Telemetry:
    """What :func:`instrument` set up on one client; :meth:`close` takes it all away."""

    def __init__(self, client: PromptClient) -> None:
        self.client = client
        self.counts: LookupCounts | None = None
        self._replaced: list[str] = []
        self._instruments: Instruments | None = None
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
        telemetry.counts = LookupCounts()
        instruments = instruments_of(meter_provider or otel_metrics.get_meter_provider())
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


def _apply_lag_recorder(instruments: Instruments) -> Callable[[Any], None]:
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
    counts: LookupCounts | None,
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
        # are worked out when the reader collects (LookupCounts.totals), not per lookup.
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
