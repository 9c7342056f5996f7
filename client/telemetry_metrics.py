"""The metrics of :mod:`promptreg.client.telemetry` (``metrics=True``): one set of instruments per
meter provider, observing every client instrumented on it, and the lookup counts they read."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from promptreg.client.status import ClientState

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Meter, MeterProvider, Observation

    from promptreg.client.telemetry import Telemetry

PROMPT_NAME = "gen_ai.prompt.name"
VERSION_NUMBER = "promptreg.prompt.version"
LABEL = "promptreg.prompt.label"
VARIANT = "promptreg.rollout.variant"
STATE = "promptreg.client.state"  # the attribute of the instrument of that name: a ClientState value
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Bucket bounds (s) advised for ``promptreg.client.apply_lag``: a push takes ms, a poll up to a minute."""


class LookupCounts:
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


class Instruments:
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


_BY_PROVIDER: weakref.WeakKeyDictionary[Any, Instruments] = weakref.WeakKeyDictionary()
_BY_PROVIDER_LOCK = threading.Lock()


def instruments_of(provider: MeterProvider) -> Instruments:
    with _BY_PROVIDER_LOCK:
        found = _BY_PROVIDER.get(provider)
        if found is None:
            found = _BY_PROVIDER[provider] = Instruments(provider.get_meter("promptreg"))
        return found
