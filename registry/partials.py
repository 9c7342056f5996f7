"""The registry's reads of composition (:mod:`promptreg.registry.composition`): which prompts include
a partial, what moving a partial's label would do to them, and a version resolved at a label.

:class:`PartialReads` is a mixin of :class:`~promptreg.PromptRegistry`; a backend supplies the
graph (:meth:`PartialReads._graph`) and may read the dependents index better than the default
(:meth:`PartialReads._dependents_index`, which loads every prompt: right for the JSON file).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from promptreg.registry.compatibility import CompatibilityReport, check, compare
from promptreg.registry.composition import PromptsGraph, WriteGraph, compose, dependents_index, resolve_version
from promptreg.registry.composition_checks import DependentReport, dependent_reports, served_dependents
from promptreg.registry.errors import CompositionError, PromptNotFoundError, VersionNotFoundError
from promptreg.registry.models import Prompt, PromptVersion
from promptreg.registry.validation import validate_label, validate_name, validate_version_number


class PartialReads:
    """Composition reads shared by every backend (mixed into :class:`~promptreg.PromptRegistry`)."""

    def _get_prompt(self, name: str) -> Prompt | None:  # pragma: no cover - the backend's
        raise NotImplementedError

    def _list_prompts(self) -> list[str]:  # pragma: no cover - the backend's
        raise NotImplementedError

    def _dependents_index(self) -> Mapping[str, Iterable[str]]:
        """``partial -> names with a version including it`` (every prompt read: backends do better)."""
        prompts = (self._get_prompt(name) for name in self._list_prompts())
        return dependents_index(p for p in prompts if p is not None)

    def _graph(self) -> WriteGraph:
        """The registry as composition reads it, for one call (each prompt read once)."""
        return PromptsGraph(self._get_prompt, self._dependents_index)

    def dependents(self, name: str, label: str | None = None) -> dict[str, dict[str, int]]:
        """The prompts whose composition includes ``name``, at any depth: ``dependent -> {label:
        version}`` for each label it serves with ``name`` in it (``label`` given: only those
        following ``name`` at that label, i.e. that its move would change). ``latest`` is left out.
        Raises :class:`~promptreg.PromptNotFoundError`."""
        validate_name(name)
        if label is not None:
            validate_label(label)
        graph = self._graph()
        if graph.labels(name) is None:
            raise PromptNotFoundError(name)
        return served_dependents(graph, name, label)

    def check_dependents(self, name: str, label: str, version: int | None) -> list[DependentReport]:
        """What moving ``label`` of ``name`` to ``version`` (``None``: deleting the label) would do to
        every dependent whose composition follows it, under each dependent's compatibility mode;
        writes nothing (``promptreg check``). Raises :class:`~promptreg.PromptNotFoundError` and
        :class:`~promptreg.VersionNotFoundError`."""
        validate_name(name)
        validate_label(label)
        graph = self._graph()
        if graph.labels(name) is None:
            raise PromptNotFoundError(name)
        if version is not None:
            validate_version_number(version)
            if graph.version(name, version) is None:
                raise VersionNotFoundError(name, version)
        return dependent_reports(graph, name, label, version)

    def _composed_report(
        self, prompt: Prompt, label: str, before: PromptVersion | None, target: PromptVersion
    ) -> CompatibilityReport:
        """``check_compatibility`` of a move where either version includes partials: the composed
        interfaces at ``label`` compared, as the write compares them (the versions as stored when
        one cannot compose there: that move is refused anyway, unless forced)."""
        graph = self._graph()
        try:
            after = compose(graph, prompt.name, label, target).interface
            before_interface = None if before is None else compose(graph, prompt.name, label, before).interface
        except CompositionError:  # the move itself is refused (unless forced): compare them as stored
            return check(prompt.compatibility, before, target)
        return compare(
            prompt.compatibility, before_interface, after, target.version, None if before is None else before.version
        )

    def _resolved(self, name: str, label: str, version: PromptVersion) -> PromptVersion:
        """``version`` composed at ``label`` (what ``get_version(..., resolve=True)`` returns)."""
        return resolve_version(self._graph(), name, label, version)
