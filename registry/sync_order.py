"""Partials in a sync (:mod:`promptreg.registry.sync`): the order files are written in, and the
composition checks of the whole plan made before anything is written.

A prompt file may include other prompts (``{{> name}}``, ``{{> name@label}}``, ``{{> name@3}}``:
:mod:`promptreg.registry.composition`), and every backend refuses a version that includes a prompt
that does not exist yet, or a label move that leaves a dependent without its partial. So:

- :func:`order_files` puts each file after the files of the folder it includes (a topological
  order over the references, otherwise the files' own sorted order), so a partial is created, its
  version added and its labels moved before any prompt including it is written. Files that include
  each other (a cycle, whatever the references pin) are refused before anything is read from the
  registry, naming the chain.
- :func:`check_plan` plays the plan's writes over the registry as composition reads it
  (:class:`PlannedGraph`: the registry with the plan's versions and label moves laid over it) and
  runs the checks each backend runs inside its write (:func:`~promptreg.registry.composition_checks.check_new_version`,
  :func:`~promptreg.registry.composition_checks.check_move`). What only ``force`` lets through (a move
  whose dependents' compatibility refuses it, or that leaves one without its partial) is returned
  per step, for the plan to show and refuse; anything else (a missing partial, a cycle through the
  registry, nesting deeper than the limit, a chat partial) is a :class:`~promptreg.PromptFileError`
  naming the file, before anything is written.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from promptreg.registry.base import PromptRegistry
from promptreg.registry.composition import Source, WriteGraph, uses
from promptreg.registry.composition_checks import check_move, check_new_version
from promptreg.registry.errors import (
    CompositionError,
    IncompatibleDependentError,
    IncompatibleVersionError,
    PartialNotFoundError,
    PromptFileError,
    PromptRegistryError,
)
from promptreg.registry.models import CompatibilityMode, PromptVersion
from promptreg.registry.validation import LATEST


class FileLike(Protocol):
    """What ordering and checking read of a prompt file (:class:`~promptreg.registry.sync.PromptFile`)."""

    @property
    def path(self) -> Path: ...

    @property
    def name(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def messages(self) -> tuple[dict[str, str], ...] | None: ...

    def as_version(self) -> PromptVersion: ...


class StepLike(Protocol):
    """What :func:`check_plan` reads of a planned write (:class:`~promptreg.registry.sync.SyncStep`)."""

    @property
    def action(self) -> str: ...

    @property
    def prompt(self) -> str: ...

    @property
    def path(self) -> Path: ...

    @property
    def version(self) -> int | None: ...

    @property
    def label(self) -> str | None: ...


F = TypeVar("F", bound=FileLike)


def includes(prompt_file: FileLike) -> frozenset[str]:
    """The names of the prompts ``prompt_file`` includes directly."""
    return uses(prompt_file.text, prompt_file.messages)


def order_files(files: Sequence[F]) -> list[F]:
    """``files`` with every file after the files of the folder it includes; otherwise in the order
    given (sorted by name, so a folder without partials syncs as it always did).

    Raises :class:`~promptreg.PromptFileError` naming the first file of a cycle (``a -> b -> a``).
    """
    by_name = {f.name: f for f in files}
    needs = {f.name: sorted(n for n in includes(f) if n in by_name) for f in files}
    _refuse_cycles(by_name, needs)
    position = {f.name: index for index, f in enumerate(files)}
    waiting = {name: len(set(partials)) for name, partials in needs.items()}
    users: dict[str, list[str]] = {}
    for name, partials in needs.items():
        for partial in set(partials):
            users.setdefault(partial, []).append(name)
    # Kahn's algorithm, always taking the first ready file in the given order: stable and deterministic.
    ready = [position[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    ordered: list[F] = []
    while ready:
        placed = files[heapq.heappop(ready)]
        ordered.append(placed)
        for user in users.get(placed.name, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, position[user])
    return ordered


def _refuse_cycles(by_name: Mapping[str, FileLike], needs: Mapping[str, list[str]]) -> None:
    """Raise :class:`~promptreg.PromptFileError` for the first cycle among ``needs`` (depth first,
    with its own stack: a long chain of files cannot exhaust Python's)."""
    done: set[str] = set()
    for start in needs:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        todo: list[Iterator[str]] = [iter(needs[start])]
        while todo:
            following = next(todo[-1], None)
            if following is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                todo.pop()
                continue
            if following in on_path:
                chain = [*path[path.index(following) :], following]
                files = ", ".join(str(by_name[n].path) for n in chain[:-1])
                raise PromptFileError(
                    by_name[chain[0]].path,
                    f"partials include each other: {' -> '.join(chain)} ({files}); nothing was written",
                )
            if following not in done:
                path.append(following)
                on_path.add(following)
                todo.append(iter(needs[following]))


class PlannedGraph:
    """The registry as composition reads it (``base``: :meth:`PromptRegistry._graph`), with the
    plan's writes so far laid over it: prompts created, versions added, labels moved."""

    def __init__(self, base: WriteGraph) -> None:
        self.base = base
        self._labels: dict[str, dict[str, int]] = {}
        self._versions: dict[tuple[str, int], Source] = {}
        self._created: set[str] = set()
        self._uses: dict[str, set[str]] = {}

    def labels(self, name: str) -> Mapping[str, int] | None:
        if name in self._labels:
            return self._labels[name]
        return self.base.labels(name)

    def version(self, name: str, number: int) -> Source | None:
        found = self._versions.get((name, number))
        if found is not None or name in self._created:
            return found
        return self.base.version(name, number)

    def has_rollout(self, name: str, label: str) -> bool:
        return name not in self._created and self.base.has_rollout(name, label)

    def mode(self, name: str) -> CompatibilityMode:
        return "none" if name in self._created else self.base.mode(name)

    def dependents(self, name: str) -> Iterable[str]:
        return {*self.base.dependents(name), *self._uses.get(name, ())}

    def prefetch(self, names: Iterable[str]) -> None:
        self.base.prefetch([name for name in names if name not in self._created])

    def create(self, name: str) -> None:
        """The plan creates ``name`` (no versions, no labels, mode ``none``)."""
        self._created.add(name)
        self._labels[name] = {}

    def add(self, name: str, number: int, source: Source) -> None:
        """The plan adds version ``number`` of ``name`` (``latest`` moves to it)."""
        self._versions[name, number] = source
        self.move(name, LATEST, number)
        for used in uses(source.prompt_text, source.messages):
            self._uses.setdefault(used, set()).add(name)

    def move(self, name: str, label: str, number: int) -> None:
        """The plan moves ``label`` of ``name`` to ``number``."""
        self._labels[name] = {**(self.labels(name) or {}), label: number}


def check_plan(
    registry: PromptRegistry, files: Mapping[str, FileLike], steps: Sequence[StepLike]
) -> dict[int, PromptRegistryError]:
    """Play ``steps`` over the registry and run each backend's composition checks; writes nothing.

    Returns, by index in ``steps``, the label moves only ``force`` lets through: a dependent's
    compatibility mode refuses what the move does to it (:class:`~promptreg.IncompatibleDependentError`),
    the move's own composed interface is refused (:class:`~promptreg.IncompatibleVersionError`), or
    it leaves a prompt without its partial (:class:`~promptreg.PartialNotFoundError`). Raises
    :class:`~promptreg.PromptFileError` (naming the file, the composition error as its cause) for
    what no ``force`` lets through.
    """
    refused: dict[int, PromptRegistryError] = {}
    if not steps:
        return refused
    graph = PlannedGraph(registry._graph())
    for index, step in enumerate(steps):
        if step.action == "create_prompt":
            graph.create(step.prompt)
            continue
        assert step.version is not None  # add_version and set_label steps name their version
        try:
            if step.action == "add_version":
                source = files[step.prompt].as_version()
                check_new_version(graph, step.prompt, step.version, source)
                graph.add(step.prompt, step.version, source)
                continue
            assert step.label is not None
            if step.action == "request_move":
                continue  # moves nothing now: the approval checks the move in its own write
            try:
                check_move(graph, step.prompt, step.label, step.version)
            except (IncompatibleVersionError, PartialNotFoundError) as exc:
                refused[index] = exc
            graph.move(step.prompt, step.label, step.version)
        except CompositionError as exc:
            raise PromptFileError(step.path, f"{exc}; nothing was written") from exc
    return refused


def describe_graph_refusal(error: PromptRegistryError) -> str:
    """The tail of a planned label move that :func:`check_plan` refused, e.g.
    ``  INCOMPATIBLE for bot at production (backward; needs language)``."""
    if isinstance(error, IncompatibleDependentError):
        parts = [error.mode]
        if error.added:
            parts.append(f"needs {', '.join(error.added)}")
        if error.removed:
            parts.append(f"drops {', '.join(error.removed)}")
        return f"  INCOMPATIBLE for {error.dependent} at {error.dependent_label} ({'; '.join(parts)})"
    return f"  REFUSED ({error})"
