"""Rollouts in the client: the :class:`Split` a lookup with a ``key`` reads, and the keyed view that
holds it.

A lookup without a key reads :attr:`Cache.view <promptreg.client.cache.Cache.view>`, which has no
entry for a (prompt, label) with a rollout, so that lookup costs what it always did and a rollout
pair falls to the miss path, which picks at random. A lookup with a key reads :attr:`Cache.keyed`:
for a label without any rollout it is the very same inner dict as the view's; for a label with
one, a copy whose rollout entries are :class:`Split` s. ``get(name, key=...)`` then costs one more
class test, and for a split a CRC-32 of the key (:func:`promptreg.registry.rollouts.bucket`) and
one comparison: the hash seed and the threshold are computed here, when the rollout enters the
cache, never per lookup.
"""

from __future__ import annotations

from collections.abc import Mapping
from random import random
from sys import intern
from zlib import crc32

from promptreg.client.cached_version import CachedVersion
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.rollouts import percent_of, rollout_seed, threshold

LookupView = dict[str | None, dict[str, CachedVersion]]
KeyedView = dict[str | None, dict[str, "CachedVersion | Split"]]
"""``label -> {name: CachedVersion or Split}``; a label without rollouts shares the view's dict."""


class Split:
    """A running rollout as the client serves it: ``stable`` (the label's version) and ``candidate``,
    which a key whose bucket (:func:`~promptreg.registry.rollouts.bucket`) falls below ``threshold``
    gets (``percent`` of the keys)."""

    __slots__ = ("candidate", "percent", "seed", "stable", "threshold")

    def __init__(self, name: str, label: str, stable: CachedVersion, candidate: CachedVersion, points: int) -> None:
        self.stable = stable
        self.candidate = candidate
        self.percent = percent_of(points)
        self.seed = rollout_seed(name, label, candidate.version)
        self.threshold = threshold(points)

    def pick(self, key: str) -> CachedVersion:
        """The variant ``key`` gets: the same in every process (a CRC-32 of the key, seeded)."""
        if crc32(key.encode("utf-8"), self.seed) % 10000 < self.threshold:
            return self.candidate
        return self.stable

    def pick_random(self) -> CachedVersion:
        """A lookup without a key: the candidate with probability ``percent``."""
        return self.candidate if random() * 100 < self.percent else self.stable

    def __repr__(self) -> str:
        return f"<Split stable v{self.stable.version}, candidate v{self.candidate.version} at {self.percent:g}%>"


def build_view(
    pointers: Mapping[str, Mapping[str, int]], versions: Mapping[tuple[str, int], CachedVersion], default_label: str
) -> LookupView:
    """The lookup view of ``pointers``; raises :class:`~promptreg.RegistryCorruptError` when a
    label points at a version not in ``versions``."""
    view: LookupView = {}
    try:
        for name, labels in pointers.items():
            # Interned keys: a label given as a literal ("production") is interned by the
            # compiler, so the lookup matches by identity and skips comparing the strings.
            name = intern(name)
            for label, number in labels.items():
                try:  # subscripts, not view.get(): this runs once per label of every prompt
                    view[label][name] = versions[name, number]
                except KeyError:
                    if label in view:
                        raise
                    view[intern(label)] = {name: versions[name, number]}
    except KeyError:
        missing = sorted({(n, v) for n, labels in pointers.items() for v in labels.values() if (n, v) not in versions})
        raise RegistryCorruptError(f"labels point at versions that do not exist: {missing[:5]}") from None
    default = view.get(default_label)
    if default is not None:
        view[None] = default
    return view


def split_views(
    view: LookupView,
    rollouts: dict[str, dict[str, tuple[int, int]]],
    versions: dict[tuple[str, int], CachedVersion],
    default_label: str,
) -> KeyedView:
    """The keyed view of a view being built (not published yet): each rollout's entry leaves ``view``
    and becomes a :class:`Split` in a copy of its label's dict. A rollout whose label the view lacks
    is left out (the registry never holds one; a partial file might)."""
    keyed: KeyedView = dict(view)  # type: ignore[arg-type]  # the same inner dicts: CachedVersion only
    for name, labels in rollouts.items():
        for label, (candidate, points) in labels.items():
            by_name = view.get(label)
            stable = None if by_name is None else by_name.get(name)
            found = versions.get((name, candidate))
            if by_name is None or stable is None or found is None:
                continue
            mine = keyed[label]
            if mine is by_name:
                mine = keyed[label] = dict(by_name)
            mine[name] = Split(name, label, stable, found, points)
            del by_name[name]
    if default_label in keyed:
        keyed[None] = keyed[default_label]
    return keyed


# -- in place, for a change message (under the cache's lock; each step one atomic dict operation) --


def move(
    view: LookupView, keyed: KeyedView, default_label: str, name: str, label: str, found: CachedVersion | None
) -> None:
    """Point ``label`` of ``name`` at ``found`` (``None``: delete it) in both views. The label has no
    rollout of ``name`` (the registry refuses plain moves of a label with one)."""
    by_name = view.get(label)
    mine = keyed.get(label)
    if found is not None:
        if by_name is None:  # the label's first prompt: its dict is complete before it is published
            by_name = {name: found}
            view[label] = keyed[label] = by_name  # type: ignore[assignment]
            if label == default_label:
                view[None] = by_name
                keyed[None] = keyed[label]
            return
        by_name[name] = found  # the default label's dict is the same object under None
        if mine is not None and mine is not by_name:
            mine[name] = found
        return
    if by_name is None:
        return
    by_name.pop(name, None)
    if mine is not None and mine is not by_name:
        mine.pop(name, None)
    if not by_name and (mine is by_name or not mine):
        view.pop(label, None)
        keyed.pop(label, None)
        if label == default_label:
            view.pop(None, None)
            keyed.pop(None, None)


def start_split(view: LookupView, keyed: KeyedView, default_label: str, label: str, name: str, split: Split) -> None:
    """Serve ``split`` for ``name`` at ``label``: first in the keyed view (a copy of the label's dict
    when it was shared), then out of the plain view, so a lookup without a key finds either the stable
    version or nothing (and then picks from the split)."""
    by_name = view[label]
    mine = keyed.get(label)
    if mine is None or mine is by_name:
        copied: dict[str, CachedVersion | Split] = dict(by_name)
        copied[name] = split
        keyed[label] = copied
        if label == default_label:
            keyed[None] = copied
    else:
        mine[name] = split
    by_name.pop(name, None)


def end_split(
    view: LookupView, keyed: KeyedView, default_label: str, label: str, name: str, found: CachedVersion, last: bool
) -> None:
    """The rollout of ``name`` at ``label`` ended: ``found`` is what the label serves now. ``last``:
    no other prompt has a rollout on ``label``, so the keyed view shares the plain dict again."""
    by_name = view[label]
    by_name[name] = found
    mine = keyed.get(label)
    if mine is not None and mine is not by_name:
        mine[name] = found
    if last:
        keyed[label] = by_name  # type: ignore[assignment]
        if label == default_label:
            keyed[None] = keyed[label]
