"""The client's two lookup views under random sequences of label moves and rollout messages
(hypothesis): after every message applied in place, the views are exactly what a full state read
of the same pointers and rollouts builds, and every lookup (with and without a key) answers by the
registry's rule."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from promptreg.client.cache import Action, Cache
from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.client.views import Split
from promptreg.registry import PromptVersion
from promptreg.registry.rollouts import picks_candidate
from promptreg.registry.wire import ChangeMessage

NAMES = ("a", "b", "c")
LABELS = ("production", "staging")
VERSIONS = 4
KEYS = tuple(f"user-{i}" for i in range(40))


def _version(name: str, number: int) -> CachedVersion:
    return cached_from_model(PromptVersion(version=number, prompt_text=f"{name} {number}"))


def _fetch(name: str, number: int) -> CachedVersion | None:
    return _version(name, number) if 1 <= number <= VERSIONS else None


class Model:
    """The registry's side: labels and rollouts, moved by the same rules the backends enforce."""

    def __init__(self) -> None:
        self.labels: dict[str, dict[str, int]] = {name: {"production": 1, "latest": VERSIONS} for name in NAMES}
        self.rollouts: dict[str, dict[str, tuple[int, int]]] = {}

    def message(self, rev: int, step: tuple[str, str, str, int, int]) -> ChangeMessage | None:
        """The change message of ``step`` if the registry accepts it (else ``None``), applied here."""
        op, name, label, version, points = step
        labels, running = self.labels[name], self.rollouts.get(name, {})
        if op in ("set_label", "delete_label") and label in running:
            return None  # RolloutActiveError
        if op == "set_label":
            self.labels[name] = {**labels, label: version}
            return _message(rev, op, name, label, version, None)
        if op == "delete_label":
            if label not in labels:
                return None
            self.labels[name] = {k: v for k, v in labels.items() if k != label}
            return _message(rev, op, name, label, None, None)
        if op == "start_rollout":
            if label not in labels or label in running or version == labels[label]:
                return None
            self.rollouts[name] = {**running, label: (version, points)}
            return _message(rev, op, name, label, version, points / 100)
        if label not in running:
            return None  # RolloutNotFoundError
        candidate = running[label][0]
        if op == "set_rollout":
            self.rollouts[name] = {**running, label: (candidate, points)}
            return _message(rev, op, name, label, candidate, points / 100)
        left = {k: v for k, v in running.items() if k != label}
        if left:
            self.rollouts[name] = left
        else:
            del self.rollouts[name]
        if op == "promote_rollout":
            self.labels[name] = {**labels, label: candidate}
            return _message(rev, op, name, label, candidate, None)
        return _message(rev, op, name, label, labels[label], None)  # abort: the label's version


def _message(rev: int, op: str, name: str, label: str, version: int | None, percent: float | None) -> ChangeMessage:
    return ChangeMessage(rev, op, name, label, version, None, None, 0.0, percent=percent)


def _shape(cache: Cache) -> dict[Any, Any]:
    """What each view serves, comparable between two caches (versions by number)."""

    def entry(hit: Any) -> Any:
        if type(hit) is Split:
            return ("split", hit.stable.version, hit.candidate.version, hit.threshold, hit.seed)
        return hit.version

    return {
        "view": {label: {name: entry(v) for name, v in by.items()} for label, by in cache.view.items() if by},
        "keyed": {label: {name: entry(v) for name, v in by.items()} for label, by in cache.keyed.items() if by},
        "rollouts": cache.rollouts,
        "aliases": (
            cache.view.get(None) is cache.view.get("production"),
            cache.keyed.get(None) is cache.keyed.get("production"),
        ),
    }


STEPS = st.tuples(
    st.sampled_from(("set_label", "delete_label", "start_rollout", "set_rollout", "promote_rollout", "abort_rollout")),
    st.sampled_from(NAMES),
    st.sampled_from(LABELS),
    st.integers(1, VERSIONS),
    st.integers(1, 9999),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(STEPS, min_size=1, max_size=40))
def test_views_after_messages_equal_a_full_state_and_answer_by_the_rule(steps: list[Any]) -> None:
    model = Model()
    cache = Cache("production")
    for name in NAMES:
        for number in range(1, VERSIONS + 1):
            cache.add_version(name, _version(name, number))
    cache.replace(1, {name: dict(labels) for name, labels in model.labels.items()})
    cache.settle()
    rev = 1
    for step in steps:
        message = model.message(rev + 1, step)
        if message is None:
            continue
        rev += 1
        assert cache.apply(message, _fetch).action is Action.APPLIED
        fresh = Cache("production")
        for name in NAMES:
            for number in range(1, VERSIONS + 1):
                fresh.add_version(name, _version(name, number))
        fresh.replace(rev, {n: dict(labels) for n, labels in model.labels.items()}, rollouts=dict(model.rollouts))
        assert _shape(cache) == _shape(fresh)
        assert cache.pointers == model.labels and cache.rollouts == model.rollouts
        split_labels = {label for labels in model.rollouts.values() for label in labels}
        for label in set(LABELS) - split_labels:  # no rollout on the label: one dict for both views
            assert cache.keyed.get(label) is cache.view.get(label)
        for name in NAMES:
            for label in LABELS:
                stable = model.labels[name].get(label)
                running = model.rollouts.get(name, {}).get(label)
                for key in KEYS[:8]:
                    got = _lookup(cache, name, label, key)
                    if stable is None:
                        assert got is None
                    elif running is None:
                        assert got == stable
                    else:
                        chosen = picks_candidate(name, label, running[0], running[1] / 100, key)
                        assert got == (running[0] if chosen else stable)


def _lookup(cache: Cache, name: str, label: str, key: str) -> int | None:
    """``get(name, label, key=key)`` as the client's fast path reads the keyed view (``None``: miss)."""
    hit = cache.keyed.get(label, {}).get(name)
    if hit is None:
        return None
    if type(hit) is Split:
        return hit.pick(key).version
    plain = cache.view[label][name]
    assert plain is hit  # a plain entry is the same object in both views
    return int(hit.version)
