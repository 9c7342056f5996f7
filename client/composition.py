"""Partials in the client: every ``(prompt, label)`` whose version includes ``{{> partial}}`` is
served composed, built when the cache is filled and rebuilt when a partial it follows moves.

The lookup view holds the composed version itself (a :class:`ComposedVersion`, a
:class:`~promptreg.CachedVersion` with :attr:`~ComposedVersion.partials`), so ``get()`` of a composed
prompt costs what any lookup costs: composing is done here, on the feed's thread, never on the
lookup path. :class:`Compositions` remembers which entries follow which ``(partial, label)``, so a
change message that moves a partial's label recomposes exactly its dependents, in the same
:meth:`~promptreg.client.cache.Cache.apply` that moves the label: a reader sees the old composition
or the new one, never a partial from one revision in a dependent from another.

An entry that cannot be composed (the registry refuses such states unless a write was forced, e.g.
a partial's label deleted with ``force=True``) is left out of the view: its lookups raise the
:class:`~promptreg.CompositionError` that says why, never the raw ``{{> ...}}`` text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from sys import intern
from typing import TYPE_CHECKING, Any

from promptreg.client.cached_version import CachedVersion
from promptreg.client.pointers import with_change
from promptreg.client.views import KeyedView, LookupView, move
from promptreg.registry.composition import MARK, Composed, Memo, compose
from promptreg.registry.errors import CompositionError, PartialNotFoundError
from promptreg.registry.models import PromptVersion
from promptreg.registry.template import compile_template

if TYPE_CHECKING:
    from promptreg.client.cache import Cache

Pair = tuple[str, str]
"""``(name, label)``."""

PartialFetch = Callable[[str, int], "CachedVersion | None"]
"""Reads a version no label of the state points at (a partial included at a fixed version)."""


class ComposedVersion(CachedVersion):
    """A :class:`~promptreg.CachedVersion` served composed at one label: its text (or messages) with
    every partial included, and :attr:`partials`, each partial's version used. Its other fields
    (``version``, ``created_at``, ``metadata``, ...) are the dependent version's own."""

    __slots__ = ("_partials",)

    @property
    def partials(self) -> dict[str, int]:
        """Every partial included, at any depth, and the version used."""
        found: dict[str, int] = self._partials  # type: ignore[attr-defined]  # set by composed_version
        return found

    def to_model(self) -> PromptVersion:
        return super().to_model().model_copy(update={"partials": dict(self.partials)})


def composes(version: CachedVersion) -> bool:
    """Whether ``version`` includes a partial (its format string holds ``{{>`` exactly when its text
    does: a literal brace is doubled and no placeholder starts so)."""
    if version.messages is None:
        return MARK in version._format
    return any(MARK in m.get("content", "") for m in version.messages)


def composed_version(base: CachedVersion, composed: Composed) -> ComposedVersion:
    """``base`` with the composition's text (or messages) and its partials."""
    built = object.__new__(ComposedVersion)
    for slot in ("version", "created_at", "author", "message", "metadata", "config"):
        object.__setattr__(built, slot, getattr(base, slot))
    object.__setattr__(built, "_partials", dict(composed.partials))
    if composed.messages is None:
        format_string, names = compile_template(composed.prompt_text)
        values: dict[str, Any] = {"_text": composed.prompt_text, "_format": format_string, "_variables": names,
                                  "_chat": None, "messages": None}  # fmt: skip
    else:
        from promptreg.registry.chat import ChatTemplate

        chat = ChatTemplate(composed.messages)
        values = {"_text": "", "_format": chat, "_variables": chat.variables, "_chat": chat,
                  "messages": composed.messages}  # fmt: skip
    for slot, value in values.items():
        object.__setattr__(built, slot, value)
    return built


class _State:
    """The cache's state as composition reads it (a :class:`~promptreg.registry.composition.Graph`)."""

    def __init__(
        self,
        pointers: Mapping[str, Mapping[str, int]],
        versions: Mapping[tuple[str, int], CachedVersion],
        rollouts: Mapping[str, Mapping[str, Any]],
        fetch: PartialFetch | None,
        *,
        strict: bool = True,
    ) -> None:
        self.pointers, self.versions, self.rollouts, self.fetch = pointers, versions, rollouts, fetch
        self.strict = strict
        self.fetched: dict[tuple[str, int], CachedVersion] = {}
        self.memo: Memo = {}
        """The partials resolved on this state, shared by its compositions (one partial, 1,000 dependents)."""

    def labels(self, name: str) -> Mapping[str, int] | None:
        return self.pointers.get(name)

    def version(self, name: str, number: int) -> CachedVersion | None:
        found = self.versions.get((name, number)) or self.fetched.get((name, number))
        if found is None and self.fetch is not None and name in self.pointers:
            try:  # I/O on the feed's thread; applying a message, its errors make the feed resync
                found = self.fetch(name, number)
            except Exception:
                if self.strict:
                    raise
                return None  # a full state (a snapshot loaded during an outage): that entry waits
            if found is not None:
                self.fetched[name, number] = found
        return found

    def has_rollout(self, name: str, label: str) -> bool:
        return label in self.rollouts.get(name, {})


class Moved(Mapping[str, Mapping[str, int]]):
    """``pointers`` with one prompt's labels replaced (the state a change message makes)."""

    def __init__(self, pointers: Mapping[str, Mapping[str, int]], name: str, labels: Mapping[str, int] | None) -> None:
        self._pointers, self._name, self._labels = pointers, name, labels

    def __getitem__(self, name: str) -> Mapping[str, int]:
        if name == self._name:
            if self._labels is None:
                raise KeyError(name)
            return self._labels
        return self._pointers[name]

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __iter__(self) -> Any:
        return iter(self._pointers)

    def __len__(self) -> int:
        return len(self._pointers)


Outcome = tuple[CachedVersion | None, frozenset[Pair], CompositionError | None]
"""What one entry serves (``None``: nothing, it cannot compose), the pairs it follows, and why not."""


class Compositions:
    """Which entries of the view are composed, what each follows, and which cannot compose."""

    __slots__ = ("broken", "followers", "follows")

    def __init__(self) -> None:
        self.follows: dict[Pair, frozenset[Pair]] = {}
        """``(name, label) -> the (partial, label) pairs its composition follows``."""
        self.followers: dict[Pair, set[Pair]] = {}
        """The inverse: ``(partial, label) -> the entries following it``."""
        self.broken: dict[Pair, CompositionError] = {}
        """Entries left out of the view, and why (what their lookups raise)."""

    def record(self, pair: Pair, follows: frozenset[Pair], error: CompositionError | None) -> None:
        """Remember what ``pair`` follows now (replacing what it followed) and whether it broke."""
        if self.follows.get(pair) == follows and follows:  # a partial moved: still the same pairs followed
            if error is None:
                self.broken.pop(pair, None)
            else:
                self.broken[pair] = error
            return
        for old in self.follows.pop(pair, ()):
            found = self.followers.get(old)
            if found is not None:
                found.discard(pair)
                if not found:
                    del self.followers[old]
        if follows:
            self.follows[pair] = follows
            for new in follows:
                self.followers.setdefault(new, set()).add(pair)
        if error is None:
            self.broken.pop(pair, None)
        else:
            self.broken[pair] = error

    def affected(self, name: str, label: str | None) -> set[Pair]:
        """The entries a change of ``name`` (at ``label``; ``None``: the prompt appeared) recomposes."""
        found: set[Pair] = set()
        if label is not None:
            found.update(self.followers.get((name, label), ()))
        for (partial, _at), entries in self.followers.items():  # a missing prompt recorded under any label
            if partial == name and label is None:
                found.update(entries)
        return found


def outcome(state: _State, name: str, label: str, version: CachedVersion) -> Outcome:
    """What ``name`` serves at ``label`` when its label points at ``version``."""
    if not composes(version):
        return version, frozenset(), None
    try:
        composed = compose(state, name, label, version, state.memo)
    except CompositionError as exc:
        follows: frozenset[Pair] = frozenset()
        if isinstance(exc, PartialNotFoundError):  # recomposed when the partial (or its label) appears
            follows = frozenset({(exc.partial, exc.partial_label or label)})
        return None, follows, exc
    return composed_version(version, composed), composed.follows, None


def compose_view(
    view: dict[str | None, dict[str, CachedVersion]],
    pointers: Mapping[str, Mapping[str, int]],
    versions: Mapping[tuple[str, int], CachedVersion],
    rollouts: Mapping[str, Mapping[str, Any]],
    fetch: PartialFetch | None,
) -> Compositions:
    """Compose every entry of a view being built (not published yet), in place; an entry that
    cannot compose leaves the view. Returns what the entries follow."""
    found = Compositions()
    # One pass over the versions (each once, where the view has one entry per label), in C where it
    # can: at 100k prompts a registry without partials pays a few ms here, not a call per entry.
    composing = {
        pair for pair, version in versions.items()
        if (MARK in version._format if version.messages is None else composes(version))
    }  # fmt: skip
    if not composing:
        return found
    state = _State(pointers, versions, rollouts, fetch, strict=False)
    for name in sorted({name for name, _number in composing}):
        for label, number in (pointers.get(name) or {}).items():
            by_name = view.get(label)
            if (name, number) not in composing or by_name is None or name not in by_name:
                continue
            served, follows, error = outcome(state, name, label, by_name[name])
            found.record((name, label), follows, error)
            if served is None:
                del by_name[name]
            else:
                by_name[name] = served
    return found


def recompose(
    compositions: Compositions,
    pairs: Iterable[Pair],
    pointers: Mapping[str, Mapping[str, int]],
    versions: Mapping[tuple[str, int], CachedVersion],
    rollouts: Mapping[str, Mapping[str, Any]],
    fetch: PartialFetch | None,
) -> list[tuple[Pair, Outcome]]:
    """What each entry of ``pairs`` serves on the state ``pointers`` (a change applied), computed
    before the change is published (the caller installs the outcomes under the cache's lock)."""
    state = _State(pointers, versions, rollouts, fetch)
    done: list[tuple[Pair, Outcome]] = []
    for name, label in sorted(pairs):
        number = (pointers.get(name) or {}).get(label)
        version = None if number is None else versions.get((name, number))
        if version is None:
            done.append(((name, label), (None, frozenset(), None)))
            continue
        done.append(((name, label), outcome(state, name, label, version)))
    return done


def plan_change(cache: Cache, name: str, label: str | None, number: int | None) -> list[tuple[Pair, Outcome]] | None:
    """The compositions a change message of ``name`` (``label`` now at ``number``) makes, computed
    before it is published; ``None`` when it concerns none (nothing composed follows it, and the
    version it points at includes no partial)."""
    compositions = cache.compositions
    if not (compositions.followers or compositions.follows) and (
        number is None or not composes(cache.versions[name, number])
    ):
        return None
    moved = Moved(cache.pointers, name, with_change(cache.pointers.get(name), label, number))
    pairs = compositions.affected(name, label)
    if label is not None:
        pairs.add((name, label))
    return recompose(compositions, pairs, moved, cache.versions, cache.rollouts, cache.fetch_partial)


def install(
    plan: list[tuple[Pair, Outcome]], compositions: Compositions, view: LookupView, keyed: KeyedView, default: str
) -> None:
    """Serve what ``plan`` computed (under the cache's lock, after the change's own move)."""
    for (name, label), (served, follows, error) in plan:
        compositions.record((name, label), follows, error)
        move(view, keyed, default, intern(name), intern(label), served)


def pinned(cache: Cache, name: str, version: CachedVersion) -> CachedVersion:
    """A pinned version (``get(name, version=n)``) that includes partials, composed with the partials
    at ``latest`` (as ``get_version(name, version=n, resolve=True)`` resolves it): built per call,
    since no change message says when it would change. Raises the
    :class:`~promptreg.CompositionError` that prevents it."""
    state = _State(cache.pointers, cache.versions, cache.rollouts, cache.fetch_partial)
    return composed_version(version, compose(state, name, "latest", version))
