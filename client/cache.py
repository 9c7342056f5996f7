"""The cache lookups read: one mapping, swapped whole for a full state, and the rules that update it.

Lookups read :attr:`Cache.view`, a two-level dict keyed label first: ``label -> {name:
CachedVersion}``, with the client's default label also under the key ``None`` (the very same inner
dict), so ``get(name, label)`` is two dict subscripts with keys the caller already has: no tuple to
build, no ``label or default`` and no branch on the lookup path. ``latest`` is an ordinary label.
Label first, because the outer dict holds a handful of labels and stays in the CPU cache: with very
many prompts a lookup touches one cold hash table (the label's), where ``name -> {label: ...}``
touched two (the outer table, then the prompt's own inner dict). A full state builds new dicts and
assigns ``view`` once. A change message updates the one entry it moves in place (and
:attr:`Cache.pointers` likewise), under the GIL one atomic dict operation each, after the version it
points at is cached: a reader sees the entry before or after the move, never a missing version. In
place, because a copy per message is O(prompts): at 100k prompts 13 ms of CPU for every change in
every process of a fleet (``benchmarks/apply.py``).

A prompt without labels is in :attr:`Cache.pointers` but in no inner dict of the view.

This module does no I/O: the feeds read the registry and hand the results here, which keeps the
revision rules testable without threads or sockets.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from sys import intern

from promptreg.client.cached_version import CachedVersion
from promptreg.client.composition import Compositions, PartialFetch, compose_view, install, plan_change
from promptreg.client.pointers import (
    ChangeEvent,
    Pointers,
    Rollouts,
    StatePointers,
    diff_pointers,
    diff_rollouts,
    message_events,
    pointer_change,
    referenced_pairs,
    with_change,
)
from promptreg.client.subset import PromptSubset
from promptreg.client.views import KeyedView, Split, build_view, end_split, move, split_views, start_split
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.rollouts import points_of
from promptreg.registry.wire import ROLLOUT_OPERATIONS, ChangeMessage

__all__ = [
    "Action", "ApplyResult", "Cache", "ChangeEvent", "LookupView", "Pointers", "StatePointers", "VersionFetch",
    "diff_pointers", "pointer_change", "with_change",
]  # fmt: skip

LookupView = dict[str | None, dict[str, CachedVersion]]
"""``label -> {name: CachedVersion}``, plus the default label's dict under ``None``; a (prompt,
label) with a rollout is not in it (it is in :attr:`Cache.keyed`, :mod:`promptreg.client.views`)."""

VersionFetch = Callable[[str, int], CachedVersion | None]
"""Reads one version from the registry (``None`` if it does not exist); may raise on I/O."""


class Action(Enum):
    """What :meth:`Cache.apply` did with a message."""

    APPLIED = "applied"
    IGNORED = "ignored"
    """Older than the state just loaded: a write already in the snapshot."""
    RESYNC = "resync"
    """A gap, a revision going backwards or a message that cannot be applied: reload everything."""


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """The outcome of :meth:`Cache.apply`."""

    action: Action
    reason: str | None = None
    events: tuple[ChangeEvent, ...] = ()


class Cache:
    """The client's state: the lookup view, the revision it reflects, and every version seen.

    One thread (the feed) writes; any thread reads :attr:`view`, :attr:`rev` and :attr:`versions`
    without a lock. ``versions`` maps ``(name, number)`` to a :class:`~promptreg.CachedVersion` and only grows:
    versions are immutable, so each is read from the registry at most once.
    """

    __slots__ = (
        "_default_label", "_held", "_identities", "_lock", "_settled", "compositions", "fetch_partial", "generation",
        "keyed", "loaded", "pointers", "rev", "rollouts", "subset", "versions", "view", "write_id",
    )  # fmt: skip

    def __init__(self, default_label: str, subset: PromptSubset | None = None) -> None:
        self._default_label = default_label
        self.subset = subset
        """The prompts this cache holds (``None``: all); messages about others only advance :attr:`rev`."""
        self._lock = threading.Lock()
        self._settled = False
        self._held = False
        self.view: LookupView = {}
        self.keyed: KeyedView = {}
        """What a lookup with a ``key`` reads: the view, with each rollout as a :class:`Split`."""
        self.rev = 0
        self.pointers: Pointers = {}
        self.rollouts: Rollouts = {}
        """``name -> {label: (candidate, basis points)}``: the rollouts running (copied on change)."""
        self.versions: dict[tuple[str, int], CachedVersion] = {}
        self._identities: dict[tuple[str, int], str] = {}
        self.write_id: str | None = None
        """The id of the registry write that made :attr:`rev` (``''``: none recorded; ``None``:
        unknown, e.g. a state from a file or a snapshot): with :attr:`rev`, which history the cache
        holds. A change message applies only on top of the write it names as its predecessor."""
        self.loaded = False
        """Whether any full state (registry, file or last-known-good snapshot) has been loaded."""
        self.generation = 0
        """Counts every change of state (a full state or an applied message): equal means unchanged."""
        self.compositions = Compositions()
        """Which entries of the view are composed from partials (:mod:`promptreg.client.composition`)."""
        self.fetch_partial: PartialFetch | None = None
        """Reads a version a partial is included at and no label points at (set by the feed)."""

    # -- versions ----------------------------------------------------------------------------

    def add_version(self, name: str, version: CachedVersion) -> CachedVersion:
        """Remember ``version`` for ever; returns the instance kept (the first one seen)."""
        return self.versions.setdefault((name, version.version), version)

    def missing_versions(self, pointers: Mapping[str, Mapping[str, int]]) -> set[tuple[str, int]]:
        """The ``(name, number)`` pairs ``pointers`` refers to that are not cached yet.

        When ``pointers`` is a :class:`StatePointers` whose history does not hold the write the cache
        is at (a restore, a failover that lost writes, a registry the cache cannot place), every
        version cached so far is forgotten first: a number may stand for another text there. The
        view keeps serving the old state until :meth:`replace` swaps in the new one.
        """
        history = getattr(pointers, "history", None)
        if history is not None and self.versions and not self.continues(history):
            self.versions = {}
            self._identities = {}
        return referenced_pairs(pointers, self.versions)

    def continues(self, history: Mapping[int, str]) -> bool:
        """Whether a registry whose writes have the ids ``history`` (``rev -> write id``) holds the
        write the cache is at, hence the whole history the cache followed."""
        return self.write_id is not None and history.get(self.rev) == self.write_id

    def identity(self, name: str, version: CachedVersion) -> str:
        """The content identity of a cached version: the first 16 hex digits of its text's sha256
        (what the registry stores, and change messages carry as ``sha``); computed once."""
        pair = (name, version.version)
        known = self._identities.get(pair)
        if known is None:
            text = version.text_once()
            known = self._identities[pair] = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
        return known

    def pointers_copy(self) -> tuple[int, Pointers]:
        """``(rev, pointers)`` copied under the lock, for a reader that iterates them on another thread
        (messages update :attr:`pointers` in place; its inner dicts are never changed, only replaced)."""
        with self._lock:
            return self.rev, dict(self.pointers)

    def state_copy(self) -> tuple[int, Pointers, Rollouts]:
        """``(rev, pointers, rollouts)`` copied under the lock (as :meth:`pointers_copy`)."""
        with self._lock:
            return self.rev, dict(self.pointers), self.rollouts

    # -- full state ---------------------------------------------------------------------------

    def replace(
        self,
        rev: int,
        pointers: Pointers,
        *,
        only_if_empty: bool = False,
        versions: dict[tuple[str, int], CachedVersion] | None = None,
        events: bool = True,
        rollouts: Rollouts | None = None,
    ) -> list[ChangeEvent] | None:
        """Replace the whole state with the registry's state at revision ``rev``.

        Every version ``pointers`` refers to must be cached already (:meth:`add_version`), or be in
        ``versions``; raises :class:`~promptreg.RegistryCorruptError` otherwise. ``versions``, when
        given, replaces every version remembered so far: the registry's history changed (a restore),
        so a version number may now stand for another text; the cache may keep that very dict. A
        full state is authoritative and is taken even when its revision is lower (the registry was
        restored). With ``only_if_empty`` nothing happens if a state was loaded before (returns
        ``None``). ``rollouts`` are the state's rollouts (default: ``pointers.rollouts`` of a
        :class:`StatePointers`, else none). Returns the changes as events (:func:`diff_pointers`), or
        ``[]`` without computing
        them when ``events`` is false (no one listens: at 100k prompts the difference costs more than
        the swap).
        """
        store = self.versions
        history = getattr(pointers, "history", None)
        write_id = None if history is None else history.get(rev)
        if versions is not None:
            if store:  # keep the instances that did not change (``get(...) is`` stays true)
                store = {pair: _same_or(store.get(pair), version) for pair, version in versions.items()}
            else:  # a first load: the dict is taken as it is (the caller built it for this call)
                store = versions
        if rollouts is None:
            rollouts = getattr(pointers, "rollouts", None) or {}
        subset = self.subset
        if subset is not None:  # a file, a snapshot or the 0.1.0 read may hold more than the client serves
            pointers = {name: labels for name, labels in pointers.items() if name in subset}
            rollouts = {name: labels for name, labels in rollouts.items() if name in subset}
        view = build_view(pointers, store, self._default_label)  # outside the lock: lookups never wait for it
        compositions = compose_view(view, pointers, store, rollouts, self.fetch_partial)
        keyed = split_views(view, rollouts, store, self._default_label) if rollouts else dict(view)
        with self._lock:
            if only_if_empty and self.loaded:
                return None
            old_pointers, old_rollouts = self.pointers, self.rollouts
            self.versions = store
            self.keyed = keyed  # type: ignore[assignment]  # without rollouts: the view itself
            self.view = view
            self.compositions = compositions
            self.pointers = pointers
            self.rollouts = rollouts
            self.rev = rev
            self.write_id = write_id
            if versions is not None:
                self._identities = {}
            self.generation += 1
            self.loaded = True
            self._settled = False
            self._held = False
        if not events:
            return []
        moves = diff_pointers(old_pointers, pointers, rev)
        return moves + diff_rollouts(old_rollouts, rollouts, pointers, rev, moves)

    def settle(self) -> None:
        """The messages buffered while the last full state was read are drained.

        From now on a message at or below :attr:`rev` means the registry went back (restore,
        failover to a lagging replica): :meth:`classify` asks for a resync.
        """
        self._settled = True

    def hold(self) -> None:
        """Keep the state but trust no message on top of it: every message asks for a resync.

        The feed holds the cache while the registry cannot be trusted (empty, loading, a replica cut
        off from its primary); the next :meth:`replace` ends the hold.
        """
        self._held = True

    # -- change messages ------------------------------------------------------------------------

    def classify(self, rev: int) -> tuple[Action, str | None]:
        """Decide what a message with revision ``rev`` means for the current state.

        ``rev`` one above the cache's applies. Higher is a gap. Equal or lower is expected only for
        writes made between SUBSCRIBE and the state read (they are in the state already); once
        that backlog is drained (:meth:`settle`, or a message applied on top of the state), it
        means the registry's history went back (restore, failover). A held cache resyncs on any
        message.
        """
        current = self.rev
        if not self.loaded:
            return Action.RESYNC, "message before any state was loaded"
        if self._held:
            return Action.RESYNC, f"message rev {rev} while the registry is not trusted"
        if rev == current + 1:
            return Action.APPLIED, None
        if rev > current + 1:
            return Action.RESYNC, f"gap: message rev {rev} after rev {current}"
        if not self._settled:
            return Action.IGNORED, None
        return Action.RESYNC, f"registry went back: message rev {rev} at or below rev {current}"

    def apply(self, message: ChangeMessage, fetch: VersionFetch) -> ApplyResult:
        """Apply one change message if it is the next revision; otherwise say why not.

        ``fetch`` is called (outside the lock) when the message points at a version not cached; its
        I/O errors propagate. A message that cannot be applied (bad name, missing field, version not
        in the registry) asks for a resync, which restores the registry's truth.
        """
        action, reason = self.classify(message.rev)
        if action is not Action.APPLIED:
            return ApplyResult(action, reason)
        after = message.previous_write_id
        if after is not None and after != self.write_id:
            return ApplyResult(Action.RESYNC, f"history diverged: message rev {message.rev} follows write "
                               f"{after!r}, the cache holds write {self.write_id!r} at rev {self.rev}")  # fmt: skip
        subset = self.subset
        if subset is not None and message.prompt not in subset:
            with self._lock:  # not served here: only the revision moves, so the next message applies
                if self._held or message.rev != self.rev + 1:
                    return ApplyResult(*self.classify(message.rev))
                if after is not None and after != self.write_id:
                    return ApplyResult(Action.RESYNC, "the state was replaced while applying")
                self.rev = message.rev
                self.write_id = message.write_id
                self._settled = True
            return ApplyResult(Action.APPLIED)
        try:
            label, number = pointer_change(message, self.pointers.get(message.prompt))
        except InvalidInputError as exc:
            return ApplyResult(Action.RESYNC, f"cannot apply message rev {message.rev}: {exc}")
        name = message.prompt
        cached = None if number is None else self.versions.get((name, number))
        sha = message.sha
        if cached is not None and sha is not None and self.identity(name, cached) != sha:
            # The registry holds another text under this number: the cache followed another history.
            self.versions.pop((name, cached.version), None)
            return ApplyResult(Action.RESYNC, f"message rev {message.rev}: {name} v{number} is another text now")
        if number is not None and cached is None:
            found = fetch(name, number)
            if found is None:
                return ApplyResult(Action.RESYNC, f"message rev {message.rev} points at missing {name} v{number}")
            if sha is not None:
                self._identities[name, number] = sha
            self.add_version(name, found)
        plan = None  # the compositions the change makes, built before it is published
        if message.op not in ROLLOUT_OPERATIONS:
            plan = plan_change(self, name, label, number)
        with self._lock:
            if self._held or message.rev != self.rev + 1:  # the state was replaced or held while fetching
                return ApplyResult(*self.classify(message.rev))
            if after is not None and after != self.write_id:
                return ApplyResult(Action.RESYNC, "the state was replaced while fetching")
            old = self.pointers.get(name)
            if message.op in ROLLOUT_OPERATIONS:
                refused = self._rollout(message, intern(name), intern(label or ""), old)
                if refused is not None:
                    return ApplyResult(Action.RESYNC, f"cannot apply message rev {message.rev}: {refused}")
            else:
                self.pointers[name] = with_change(old, label, number)
                if label is not None:
                    found = None if number is None else self.versions[name, number]
                    move(self.view, self.keyed, self._default_label, intern(name), intern(label), found)
                if plan:
                    install(plan, self.compositions, self.view, self.keyed, self._default_label)
            self.rev = message.rev
            self.write_id = message.write_id
            self.generation += 1
            self._settled = True
        return ApplyResult(Action.APPLIED, None, tuple(message_events(message, old, label, number, self.rollouts)))

    def _rollout(self, message: ChangeMessage, name: str, label: str, labels: dict[str, int] | None) -> str | None:
        """Apply a rollout's message (under the lock); a reason to resync instead, or ``None``."""
        stable = None if labels is None else labels.get(label)
        if stable is None or message.version is None:
            return f"a rollout of {name} {label!r}, a label the cache does not hold"
        running = dict(self.rollouts.get(name, {}))
        if message.op in ("start_rollout", "set_rollout"):
            if message.percent is None:
                return "a rollout without a percentage"
            points = min(max(points_of(message.percent), 1), 9999)
            split = Split(name, label, self.versions[name, stable], self.versions[name, message.version], points)
            start_split(self.view, self.keyed, self._default_label, label, name, split)
            running[label] = (message.version, points)
        else:
            running.pop(label, None)
            now = stable
            if message.op == "promote_rollout":
                now = message.version
                self.pointers[name] = with_change(labels, label, now)
            last = not any(label in others for other, others in self.rollouts.items() if other != name)
            end_split(self.view, self.keyed, self._default_label, label, name, self.versions[name, now], last)
        rollouts = {other: others for other, others in self.rollouts.items() if other != name}
        if running:
            rollouts[name] = running
        self.rollouts = rollouts  # copied on change: a reader iterating the old one is not disturbed
        return None

    def split(self, name: str, label: str | None = None) -> Split | None:
        """The rollout ``name`` has at ``label`` (``None``: the default label) as lookups serve it."""
        hit = self.keyed.get(label, {}).get(name)
        return hit if type(hit) is Split else None

    def after_fork(self) -> None:
        """In a forked child: a fresh lock (the parent's feed may have held it at fork time)."""
        self._lock = threading.Lock()


def _same_or(old: CachedVersion | None, new: CachedVersion) -> CachedVersion:
    """``old`` if it is the same version as ``new`` (same content, time, author, message, metadata)."""
    fields = ("created_at", "author", "message", "metadata", "messages", "config")
    same = old is not None and all(getattr(old, f) == getattr(new, f) for f in fields)
    if old is not None and same and old.text_once() == new.text_once():  # no text kept twice to compare
        return old
    return new
