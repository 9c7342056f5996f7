"""Composition: partials that a prompt includes by reference, resolved per (prompt, label).

A text template or a chat message's content may include another prompt's text:

``{{> name}}``        the partial ``name`` at the label being resolved (a ``production`` prompt uses
                      the ``production`` partial, so moving the partial's label changes every
                      dependent served at that label);
``{{> name@label}}``  the partial at a fixed label, whatever label the dependent is resolved at;
``{{> name@3}}``      a fixed version (a reference of digits only is a version number).

A partial is an ordinary *text* prompt; partials may include partials, at most :data:`MAX_DEPTH`
deep. The composed text is the dependent's text with each reference replaced by the partial's
composed text, so a partial's ``{{variables}}`` are variables of the composed prompt.

This module is pure: it resolves over a :class:`Graph`, which each backend (and the client) reads
its own way. :func:`compose` builds one composition; the write-time checks every backend runs inside its
atomic write are in :mod:`promptreg.registry.composition_checks`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple, Protocol

from promptreg.registry.chat import ChatTemplate
from promptreg.registry.compatibility import Interface
from promptreg.registry.errors import (
    CompositionTooLargeError,
    PartialCycleError,
    PartialDepthError,
    PartialNotFoundError,
    PartialTypeError,
)
from promptreg.registry.models import CompatibilityMode, Prompt, PromptVersion
from promptreg.registry.template import text_variables

MAX_DEPTH = 8
"""The deepest chain of partials: a prompt including a partial is depth 1."""

MAX_COMPOSED_CHARS = 4 * 1024 * 1024
"""The longest composed text (each message's content, for a chat version): four times the default
text limit, so a shared block can be included often, and never an exponential blow-up."""

REFERENCE = re.compile(r"\{\{>\s*([A-Za-z0-9][A-Za-z0-9._/-]*)(?:@([A-Za-z0-9][A-Za-z0-9._-]*))?\s*\}\}")
"""``{{> name}}``, ``{{> name@label}}`` or ``{{> name@3}}`` (spaces inside the braces allowed)."""

MARK = "{{>"
"""What every reference starts with: a text without it includes nothing (one ``in`` test)."""


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``{{> ...}}`` of a template: the partial's ``name`` and, at most one of, a fixed ``label``
    or ``version`` (neither: the label the dependent is resolved at)."""

    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        at = "" if self.label is None and self.version is None else f"@{self.label or self.version}"
        return f"{{{{> {self.name}{at}}}}}"


def _made(name: str, at: str | None) -> Reference:
    if at is None:
        return Reference(name)
    if at.isdigit():
        return Reference(name, version=int(at))
    return Reference(name, label=at)


@lru_cache(maxsize=8192)
def split(text: str) -> tuple[tuple[str, ...], tuple[Reference, ...]]:
    """``text`` cut at its references: the literal pieces (one more than the references) and the
    references, in order. Versions are immutable, so each text is cut once (cached by its value)."""
    pieces = REFERENCE.split(text)
    return tuple(pieces[0::3]), tuple(_made(name, at) for name, at in zip(pieces[1::3], pieces[2::3], strict=True))


def references(text: str) -> tuple[Reference, ...]:
    """The references of ``text`` in order of first use, each once."""
    if MARK not in text:
        return ()
    return tuple(dict.fromkeys(split(text)[1]))


def version_references(text: str, messages: Iterable[Mapping[str, str]] | None) -> tuple[Reference, ...]:
    """The references of a version: of its text, or of every chat message's content."""
    if messages is None:
        return references(text)
    found: dict[Reference, None] = {}
    for message in messages:
        content = message.get("content")
        if content is not None:
            found.update(dict.fromkeys(references(content)))
    return tuple(found)


def uses(text: str, messages: Iterable[Mapping[str, str]] | None) -> frozenset[str]:
    """The names of the partials a version includes directly (what the dependents index records)."""
    return frozenset(ref.name for ref in version_references(text, messages))


class Source(Protocol):
    """What composition reads of a version: its text, or its chat messages (``None``: a text one)."""

    @property
    def prompt_text(self) -> str: ...

    @property
    def messages(self) -> tuple[dict[str, str], ...] | None: ...


class Graph(Protocol):
    """The registry as composition reads it (one backend's state at one revision)."""

    def labels(self, name: str) -> Mapping[str, int] | None:
        """The prompt's labels (``None``: no such prompt)."""

    def version(self, name: str, number: int) -> Source | None:
        """One version (``None``: it does not exist)."""

    def has_rollout(self, name: str, label: str) -> bool:
        """Whether ``label`` of ``name`` has a rollout running."""


class WriteGraph(Graph, Protocol):
    """A :class:`Graph` that also says what the write-time checks need."""

    def mode(self, name: str) -> CompatibilityMode:
        """The prompt's compatibility mode."""

    def dependents(self, name: str) -> Iterable[str]:
        """The prompts with any version that includes ``name`` directly (over every version)."""

    def prefetch(self, names: Iterable[str]) -> None:
        """Read these prompts' labels and the versions they point at now, together (a hint: a store
        with round trips reads them in a few instead of a few per prompt)."""


@dataclass(frozen=True, slots=True)
class Composed:
    """A version with every reference resolved, at one label.

    ``partials`` maps every partial included (at any depth) to the version used (a partial included
    at two versions: the first use's, in text order, depth first); ``follows`` are
    the ``(partial, label)`` pairs resolved through a label (what a label move of a partial
    recomposes; a fixed version follows nothing).
    """

    prompt_text: str
    messages: tuple[dict[str, str], ...] | None
    partials: dict[str, int] = field(default_factory=dict)
    follows: frozenset[tuple[str, str]] = frozenset()

    @property
    def interface(self) -> Interface:
        """What a caller passes to render the composed version, and what it gets back."""
        if self.messages is None:
            return Interface("text", text_variables(self.prompt_text), frozenset())
        chat = ChatTemplate(self.messages)
        return Interface("chat", chat.variables, chat.placeholders)


class Included(NamedTuple):
    """One partial resolved at one label, as :func:`compose` includes it: its composed ``text``, the
    ``partials`` it includes in turn (in order of first use), the ``follows`` pairs, every ``names``
    in it and its ``height`` (how deep its own includes go: 0 for none)."""

    text: str
    partials: tuple[tuple[str, int], ...]
    follows: frozenset[tuple[str, str]]
    names: frozenset[str]
    height: int


Memo = dict[tuple[str, str, int], Included]
"""``(label, partial, version) -> Included``: partials resolved on one state of a graph, shared by the
compositions of that state (1,000 dependents of one partial resolve it once)."""


def compose(graph: Graph, name: str, label: str, source: Source, memo: Memo | None = None) -> Composed:
    """``source`` (a version of ``name``) with its references resolved at ``label``.

    ``memo`` shares the partials resolved between compositions on the same state of ``graph`` (a
    fresh dict for each state). Raises :class:`~promptreg.PartialNotFoundError` (a partial, its label
    or its version missing), :class:`~promptreg.PartialTypeError` (a chat partial, or a partial
    label with a rollout), :class:`~promptreg.PartialCycleError` or :class:`~promptreg.PartialDepthError`.
    """
    known: Memo = {} if memo is None else memo

    def resolve(text: str, path: tuple[str, ...], partials: dict[str, int], follows: set[tuple[str, str]]) -> str:
        if MARK not in text:
            return text
        literals, refs = split(text)
        out = [literals[0]]
        size = len(text)
        for ref, literal in zip(refs, literals[1:], strict=True):
            piece = include(ref, path, partials, follows)
            size += len(piece)
            if size > MAX_COMPOSED_CHARS:  # before the text is built: the bound holds at every level
                raise CompositionTooLargeError(name, label, MAX_COMPOSED_CHARS)
            out.append(piece)
            out.append(literal)
        return "".join(out)

    def include(ref: Reference, path: tuple[str, ...], partials: dict[str, int], follows: set[tuple[str, str]]) -> str:
        if ref.name in path:
            raise PartialCycleError(name, label, (*path, ref.name))
        if len(path) > MAX_DEPTH:
            raise PartialDepthError(name, label, (*path, ref.name), MAX_DEPTH)
        number = ref.version
        at = ref.label or label
        if number is None:
            labels = graph.labels(ref.name)
            if labels is None:
                raise PartialNotFoundError(name, label, ref.name, None, None)
            number = labels.get(at)
            if number is None:
                raise PartialNotFoundError(name, label, ref.name, at, None)
            if graph.has_rollout(ref.name, at):
                raise PartialTypeError(
                    name, label, ref.name, f"label {at!r} of {ref.name!r} has a rollout running", rollout=True
                )
            follows.add((ref.name, at))
        found = known.get((label, ref.name, number))
        if found is None:
            found = known[label, ref.name, number] = included(ref.name, number, (*path, ref.name))
        else:  # resolved for another composition: its cycles and depth measured against this path
            repeated = found.names.intersection(path)
            if repeated:
                raise PartialCycleError(name, label, (*path, ref.name, min(repeated)))
            if len(path) + found.height > MAX_DEPTH:
                raise PartialDepthError(name, label, (*path, ref.name), MAX_DEPTH)
        partials.setdefault(ref.name, number)  # one partial at two versions: the first use's, in text order
        for other, version in found.partials:
            partials.setdefault(other, version)
        follows.update(found.follows)
        return found.text

    def included(partial_name: str, number: int, path: tuple[str, ...]) -> Included:
        partial = graph.version(partial_name, number)
        if partial is None:
            if graph.labels(partial_name) is None:
                raise PartialNotFoundError(name, label, partial_name, None, None)
            raise PartialNotFoundError(name, label, partial_name, None, number)
        if partial.messages is not None:
            raise PartialTypeError(name, label, partial_name, f"{partial_name!r} v{number} is a chat prompt")
        inner: dict[str, int] = {}
        inner_follows: set[tuple[str, str]] = set()
        text = _without_final_newline(resolve(partial.prompt_text, path, inner, inner_follows))
        nested = [known[label, other, version] for other, version in inner.items() if (label, other, version) in known]
        height = 1 + max((found.height for found in nested), default=-1) if inner else 0
        names = frozenset({partial_name, *inner})
        return Included(text, tuple(inner.items()), frozenset(inner_follows), names, height)

    partials: dict[str, int] = {}
    follows: set[tuple[str, str]] = set()
    start = (name,)
    if source.messages is None:
        return Composed(resolve(source.prompt_text, start, partials, follows), None, partials, frozenset(follows))
    messages = tuple(
        {**m, "content": resolve(m["content"], start, partials, follows)} if MARK in m.get("content", "") else m
        for m in source.messages
    )
    return Composed(source.prompt_text, messages, partials, frozenset(follows))


def _without_final_newline(text: str) -> str:
    """A partial is included without one final line break: a file's text ends with one, and
    ``{{> safety}} Answer...`` should not break the line."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith("\n") else text


def composes(source: Source) -> bool:
    """Whether a version includes any partial (else it is served as it is)."""
    if source.messages is None:
        return MARK in source.prompt_text
    return any(MARK in m.get("content", "") for m in source.messages)


# -- reading a registry as a graph ----------------------------------------------------------------


class PromptsGraph:
    """A :class:`WriteGraph` over whole prompts: ``load(name)`` gives one (``None``: no such prompt)
    and ``index()`` the dependents index (``partial -> names with a version including it``). Each
    prompt is loaded once. What the JSON file (under its lock) and a backend's plain reads use."""

    def __init__(self, load: Callable[[str], Prompt | None], index: Callable[[], Mapping[str, Iterable[str]]]) -> None:
        self._load = load
        self._index = index
        self._prompts: dict[str, Prompt | None] = {}
        self._dependents: Mapping[str, Iterable[str]] | None = None

    def prompt(self, name: str) -> Prompt | None:
        """The prompt ``name`` (``None``: no such prompt), loaded once."""
        if name not in self._prompts:
            self._prompts[name] = self._load(name)
        return self._prompts[name]

    def labels(self, name: str) -> Mapping[str, int] | None:
        found = self.prompt(name)
        if found is None:
            return None
        if not found.versions:
            return found.labels
        return {**found.labels, "latest": found.versions[-1].version}

    def version(self, name: str, number: int) -> Source | None:
        found = self.prompt(name)
        return None if found is None else found.get_version_by_number(number)

    def has_rollout(self, name: str, label: str) -> bool:
        found = self.prompt(name)
        return found is not None and label in found.rollouts

    def mode(self, name: str) -> CompatibilityMode:
        found = self.prompt(name)
        return "none" if found is None else found.compatibility

    def dependents(self, name: str) -> Iterable[str]:
        if self._dependents is None:
            self._dependents = self._index()
        return self._dependents.get(name, ())

    def prefetch(self, names: Iterable[str]) -> None:
        """Nothing to batch: each prompt is loaded on first use."""


def dependents_index(prompts: Iterable[Prompt]) -> dict[str, set[str]]:
    """``partial -> names with a version including it``, from whole prompts."""
    index: dict[str, set[str]] = {}
    for prompt in prompts:
        for version in prompt.versions:
            for used in uses(version.prompt_text, version.messages):
                index.setdefault(used, set()).add(prompt.name)
    return index


def resolve_version(graph: Graph, name: str, label: str, version: PromptVersion) -> PromptVersion:
    """``version`` composed at ``label``: its text (or messages) with every partial included, and
    :attr:`~promptreg.PromptVersion.partials` set; the version itself when it includes none."""
    if not composes(version):
        return version
    composed = compose(graph, name, label, version)
    return version.model_copy(
        update={"prompt_text": composed.prompt_text, "messages": composed.messages, "partials": composed.partials}
    )


def reference_order(prompts: Iterable[Prompt]) -> dict[str, int]:
    """A rank per prompt such that a prompt comes after every prompt any of its versions includes
    (among ``prompts``), for writers of many prompts at once (import, sync): partials are written
    first. Prompts in a cycle keep their given order after the rest they include."""
    given = list(prompts)
    uses_of = {p.name: {u for v in p.versions for u in uses(v.prompt_text, v.messages)} for p in given}
    rank: dict[str, int] = {}
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in rank or name in visiting or name not in uses_of:
            return
        visiting.add(name)
        for used in sorted(uses_of[name]):
            visit(used)
        visiting.discard(name)
        rank[name] = len(rank)

    for prompt in given:
        visit(prompt.name)
    return rank
