"""The write-time checks of composition (:mod:`promptreg.registry.composition`), which every backend
runs inside its atomic write (the JSON file under its lock, PostgreSQL in its transaction, Redis with
the revision they were read at checked by the script), and the reads of the dependents built on the
same walk: which prompts follow a partial's label, and what its move would do to each.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from promptreg.registry.compatibility import CompatibilityReport, compare, refusal_error
from promptreg.registry.composition import (
    Composed,
    Graph,
    Memo,
    Source,
    WriteGraph,
    compose,
    composes,
    version_references,
)
from promptreg.registry.errors import (
    CompositionError,
    IncompatibleDependentError,
    PartialCycleError,
    PartialNotFoundError,
    PartialTypeError,
)
from promptreg.registry.validation import validate_label, validate_name

__all__ = [
    "DependentReport", "check_move", "check_new_version", "check_rollout", "dependent_reports", "dependents_closure",
    "served_dependents",
]  # fmt: skip


class _Overlay:
    """``graph`` with one label moved (or deleted) and, optionally, one version added."""

    def __init__(self, graph: Graph, name: str, label: str | None, target: int | None,
                 added: tuple[int, Source] | None = None) -> None:  # fmt: skip
        self.graph, self.name, self.label, self.target, self.added = graph, name, label, target, added

    def labels(self, name: str) -> Mapping[str, int] | None:
        labels = self.graph.labels(name)
        if name != self.name or self.label is None or labels is None:
            return labels
        moved = dict(labels)
        if self.target is None:
            moved.pop(self.label, None)
        else:
            moved[self.label] = self.target
        return moved

    def version(self, name: str, number: int) -> Source | None:
        if self.added is not None and name == self.name and number == self.added[0]:
            return self.added[1]
        return self.graph.version(name, number)

    def has_rollout(self, name: str, label: str) -> bool:
        return self.graph.has_rollout(name, label)


def dependents_closure(graph: WriteGraph, name: str) -> list[str]:
    """Every prompt that includes ``name`` directly or through other partials (breadth first), by
    any of its versions."""
    seen: dict[str, None] = {}
    todo = list(graph.dependents(name))
    while todo:
        other = todo.pop(0)
        if other == name or other in seen:
            continue
        seen[other] = None
        todo.extend(graph.dependents(other))
    return list(seen)


def served_dependents(graph: WriteGraph, name: str, label: str | None = None) -> dict[str, dict[str, int]]:
    """``dependent -> {label: version}``: the labels whose composition includes ``name`` (at
    ``label``, or at any label when ``None``), at any depth. ``latest`` is left out."""
    found: dict[str, dict[str, int]] = {}
    for dependent, at, version, composed in _including(graph, name):
        if label is None or (name, label) in composed.follows:
            found.setdefault(dependent, {})[at] = version
    return found


def _including(graph: WriteGraph, name: str) -> Iterator[tuple[str, str, int, Composed]]:
    """``(dependent, its label, its version, its composition now)`` for every dependent label whose
    composition includes ``name``, at any depth. ``latest`` moves with every new version and is
    never checked, as for any prompt: it is left out."""
    closure = dependents_closure(graph, name)
    graph.prefetch(closure)
    memo: Memo = {}
    for dependent in closure:
        labels = graph.labels(dependent) or {}
        for at in sorted(labels):
            composed = None if at == "latest" else _composition(graph, dependent, at, memo)
            if composed is not None and name in composed.partials:
                yield dependent, at, labels[at], composed


def _composition(graph: Graph, name: str, label: str, memo: Memo | None = None) -> Composed | None:
    """The composition ``name`` serves at ``label`` (``None``: no such label, or it cannot compose)."""
    labels = graph.labels(name)
    number = None if labels is None else labels.get(label)
    source = None if number is None else graph.version(name, number)
    if source is None:
        return None
    try:
        return compose(graph, name, label, source, memo)
    except CompositionError:
        return None


def check_move(
    graph: WriteGraph,
    name: str,
    label: str,
    target: int | None,
    *,
    force: bool = False,
) -> bool:
    """Check moving ``label`` of ``name`` to ``target`` (``None``: deleting it) against the graph:
    the prompt's own composition there, and every dependent served at a label whose composition
    follows this label. Returns whether the move goes through only by ``force``.

    A missing partial (a dependent left without its partial at that label, or a target including a
    partial that has no such label) is refused unless ``force``; a cycle, a depth over
    :data:`MAX_DEPTH` or a chat partial always. A dependent whose composed interface the move
    changes in a way its compatibility mode refuses is
    :class:`~promptreg.IncompatibleDependentError` unless ``force``.
    """
    after = _Overlay(graph, name, label, target)
    after_memo: Memo = {}  # each state shares its partials between the compositions on it
    forced = False
    if target is not None:
        source = graph.version(name, target)
        if source is not None and composes(source):
            try:
                mine = compose(after, name, label, source, after_memo)
            except PartialNotFoundError:
                if not force:
                    raise
                forced = True
            else:
                before = _composition(graph, name, label)
                mode = graph.mode(name)
                if before is not None and mode != "none":
                    current = (graph.labels(name) or {}).get(label)
                    report = compare(mode, before.interface, mine.interface, target, current)
                    if not report.compatible:
                        if not force:
                            raise refusal_error(name, label, report)
                        forced = True
    for dependent, at, _version, before in _followers(graph, name, label):
        try:
            now = _compose_strict(after, dependent, at, after_memo)
        except PartialNotFoundError as exc:
            if not force:
                raise PartialNotFoundError(dependent, at, exc.partial, exc.partial_label, exc.partial_version,
                                           moved=(name, label)) from None  # fmt: skip
            forced = True
            continue
        report = compare(graph.mode(dependent), before.interface, now.interface)
        if not report.compatible:
            if not force:
                raise IncompatibleDependentError(dependent, at, name, label, report.mode, report.added,
                                                 report.removed, dependent_reasons(report))  # fmt: skip
            forced = True
    return forced


def _followers(graph: WriteGraph, name: str, label: str) -> Iterator[tuple[str, str, int, Composed]]:
    """:func:`_including`, for the compositions that follow ``label`` of ``name`` (its move changes
    them; ``follows`` holds the pairs of every depth)."""
    moved = (name, label)
    return (found for found in _including(graph, name) if moved in found[3].follows)


def _compose_strict(graph: Graph, name: str, label: str, memo: Memo | None = None) -> Composed:
    labels = graph.labels(name) or {}
    number = labels[label]
    source = graph.version(name, number)
    assert source is not None  # a label points at a version that exists
    return compose(graph, name, label, source, memo)


def dependent_reasons(report: CompatibilityReport) -> list[str]:
    """Why a partial's move changes a dependent's composed interface, one phrase per reason."""
    why = []
    if report.added:
        why.append(f"it would need {', '.join(report.added)}, which its callers do not pass today")
    if report.kind_changes:
        why.append(f"{', '.join(report.kind_changes)} would switch between a {{{{variable}}}} and a placeholder")
    if report.removed:
        why.append(f"it would no longer take {', '.join(report.removed)}")
    return why


def check_rollout(graph: WriteGraph, name: str, label: str, candidate: int) -> None:
    """Refuse a rollout on a label a composition follows, or of a version that includes partials:
    a composition is one text, not a split (:class:`~promptreg.PartialTypeError`)."""
    labels = graph.labels(name) or {}
    for number in (labels.get(label), candidate):
        source = None if number is None else graph.version(name, number)
        if source is not None and composes(source):
            why = f"v{number} includes partials: a rollout cannot split a composition"
            raise PartialTypeError(name, label, name, why)
    users = served_dependents(graph, name, label)
    if users:
        first = sorted(users)[0]
        raise PartialTypeError(first, label, name, f"label {label!r} of {name!r} is included by {first!r}: "
                               "a partial's label cannot be split by a rollout")  # fmt: skip


def check_new_version(graph: Graph, name: str, number: int, source: Source) -> None:
    """Check a version about to be added: every partial it includes exists (with the fixed label or
    version it names), and, at every label where its partials are all found, it composes (no
    cycle, no depth over :data:`MAX_DEPTH`, no chat partial). Raises as :func:`compose`, and
    :class:`~promptreg.InvalidNameError` for a reference whose name or label breaks the rules of names
    (too long: the pattern alone does not bound it)."""
    refs = version_references(source.prompt_text, source.messages)
    if not refs:
        return
    after = _Overlay(graph, name, None, None, (number, source))
    labels: set[str] = set()
    for ref in refs:
        validate_name(ref.name)
        if ref.label is not None:
            validate_label(ref.label)
        if ref.name == name:
            raise PartialCycleError(name, None, (name, name))
        found = graph.labels(ref.name)
        if found is None:
            raise PartialNotFoundError(name, None, ref.name, None, None)
        if ref.version is not None:
            if graph.version(ref.name, ref.version) is None:
                raise PartialNotFoundError(name, None, ref.name, None, ref.version)
        elif ref.label is not None:
            if ref.label not in found:
                raise PartialNotFoundError(name, None, ref.name, ref.label, None)
        else:
            labels.update(found)
    for label in sorted(labels or {"latest"}):
        try:
            compose(after, name, label, source)
        except PartialNotFoundError:
            continue  # that partial may be given this label later; the move of this version checks it
        except PartialTypeError as exc:
            if not exc.rollout:  # a rollout ends; the move of this version checks it
                raise


@dataclass(frozen=True, slots=True)
class DependentReport:
    """How moving a partial's label changes one dependent at one label (:func:`dependent_reports`):
    ``report`` compares its composed interface before and after; ``error`` says why it would no
    longer compose (a missing partial, a cycle, ...), else ``None``."""

    dependent: str
    label: str
    version: int
    report: CompatibilityReport | None
    error: str | None = None


def dependent_reports(graph: WriteGraph, name: str, label: str, target: int | None) -> list[DependentReport]:
    """What moving ``label`` of ``name`` to ``target`` (``None``: deleting it) does to every
    dependent whose composition follows it; writes nothing (what ``promptreg check`` shows)."""
    after = _Overlay(graph, name, label, target)
    after_memo: Memo = {}
    found: list[DependentReport] = []
    for dependent, at, version, before in _followers(graph, name, label):
        try:
            now = _compose_strict(after, dependent, at, after_memo)
        except CompositionError as exc:
            found.append(DependentReport(dependent, at, version, None, str(exc)))
            continue
        found.append(DependentReport(dependent, at, version, compare(graph.mode(dependent), before.interface,
                                                                     now.interface)))  # fmt: skip
    return found
