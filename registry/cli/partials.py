"""What the ``promptreg`` commands say about partials (``{{> name}}``, see docs/composition.md).

``show`` and ``render`` resolve a version's partials at its label by default, as a client serves
it (``show --raw``: the version as stored); ``show NAME --dependents`` lists the prompts including
NAME, ``list --uses PARTIAL`` only those, and ``check`` the dependents a move of a partial's label
changes (:meth:`~promptreg.PromptRegistry.check_dependents`). The command modules call the
functions here; ``history`` lives in :mod:`~promptreg.registry.cli.history`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.options import print_json
from promptreg.registry.compatibility import CompatibilityReport
from promptreg.registry.composition import PromptsGraph, compose, composes, uses, version_references
from promptreg.registry.composition_checks import DependentReport
from promptreg.registry.errors import CompositionError, PartialNotFoundError
from promptreg.registry.models import PromptVersion
from promptreg.registry.validation import LATEST


def get_shown(
    registry: PromptRegistry, name: str, label: str | None, version: int | None, *, raw: bool | None = None
) -> PromptVersion:
    """The version ``show`` and ``render`` print: with its partials resolved at ``label`` (a version
    number: at ``latest``), unless ``raw``. For ``show`` (``raw`` given), a composition that fails
    says ``--raw`` shows the version as stored."""
    try:
        return registry.get_version(name, label=label, version=version, resolve=not raw)
    except CompositionError as exc:
        if raw is not None:
            exc.args = (f"{exc} (--raw shows the version as stored)",)
        raise


@contextmanager
def force_hint() -> Iterator[None]:
    """A label move (or deletion) refused for a missing partial says that ``--force`` makes it
    (every such refusal of a move is one ``force`` lets through)."""
    try:
        yield
    except PartialNotFoundError as exc:
        exc.args = (f"{exc} (--force to move anyway)",)
        raise


def partials_lines(found: PromptVersion, label: str | None, *, raw: bool) -> list[str]:
    """``show``'s lines about partials: the versions used (``partials: safety v2, style v1 (resolved
    at production)``), or, for the stored version, its references (``includes: {{> safety}}``)."""
    if raw:
        refs = version_references(found.prompt_text, found.messages)
        return [f"includes: {', '.join(map(str, refs))} (not resolved: --raw)"] if refs else []
    if not found.partials:
        return []
    at = label if label is not None else LATEST
    used = ", ".join(f"{name} v{number}" for name, number in sorted(found.partials.items()))
    return [f"partials: {used} (resolved at {at})"]


def show_dependents(registry: PromptRegistry, name: str, label: str | None, as_json: bool) -> None:
    """``show NAME --dependents``: the prompts whose composition includes NAME (at any depth), with
    the labels (and versions) that serve it (``label``: only those following NAME's ``label``)."""
    found = registry.dependents(name, label)
    if as_json:
        print_json({"name": name, "label": label, "dependents": found})
        return
    at = "" if label is None else f" at {label}"
    if not found:
        click.echo(f"no prompt includes {name}{at}")
        return
    click.echo(f"prompts including {name}{at}:")
    for dependent, labels in sorted(found.items()):
        through = _through(registry, name, dependent, labels.values(), found)
        click.echo(f"  {dependent}  {_labels(labels)}" + (f"  (through {', '.join(through)})" if through else ""))


def _through(
    registry: PromptRegistry, name: str, dependent: str, versions: Iterable[int], users: Mapping[str, object]
) -> list[str]:
    """The partials through which ``dependent`` includes ``name`` when none of its ``versions``
    includes it directly (empty when one does)."""
    via: set[str] = set()
    for number in set(versions):
        version = registry.get_version(dependent, version=number)
        direct = uses(version.prompt_text, version.messages)
        if name in direct:
            return []
        via |= {partial for partial in direct if partial in users}
    return sorted(via)


def _labels(labels: Mapping[str, int]) -> str:
    return " ".join(f"{label}={number}" for label, number in sorted(labels.items()))


def uses_note(labels: Mapping[str, int], partial: str) -> str:
    """The tail of a ``list --uses`` line: ``  (includes safety at production, staging)``."""
    return f"  (includes {partial} at {', '.join(sorted(labels))})"


def dependent_rows(reports: Iterable[DependentReport]) -> list[dict[str, Any]]:
    """``check --json``'s ``dependents``: one object per dependent label the move changes, with the
    compatibility report's fields (``compatible`` false, and ``error`` set, when it would no longer
    compose)."""
    rows = []
    for found in sorted(reports, key=_order):
        row: dict[str, Any] = {"dependent": found.dependent, "label": found.label, "version": found.version}
        if found.report is not None:
            row.update(asdict(found.report))
            row["version"] = found.version  # the dependent's version, not the report's target
            del row["current_version"]  # a dependent's report compares compositions, not versions
        row["compatible"] = refused_reason(found) is None
        row["error"] = found.error
        rows.append(row)
    return rows


def composition_error(registry: PromptRegistry, name: str, label: str, version: int) -> str | None:
    """Why ``version`` would not compose at ``label`` (refused unless forced), or ``None``: what
    ``check`` adds to :meth:`~promptreg.PromptRegistry.check_compatibility`, which compares the
    composed interfaces when the move involves partials but does not refuse."""
    prompt = registry.get_prompt(name)
    target = None if prompt is None else prompt.get_version_by_number(version)
    if prompt is None or target is None or not composes(target):
        return None
    try:
        compose(PromptsGraph(registry.get_prompt, dict), name, label, target)  # compose reads no index
    except CompositionError as exc:
        return str(exc)
    return None


def _order(found: DependentReport) -> tuple[str, str]:
    return found.dependent, found.label


def refused_reason(found: DependentReport) -> str | None:
    """Why the move would be refused for this dependent (``None``: it passes)."""
    if found.error is not None:
        return found.error
    if found.report is not None and not found.report.compatible:
        return f"mode {found.report.mode}"
    return None


def print_dependent_reports(name: str, label: str, reports: list[DependentReport]) -> None:
    """``check``'s lines about the prompts including NAME whose composition follows LABEL."""
    if not reports:
        return
    click.echo(f"  prompts including {name} at {label}: {len(reports)}")
    for found in sorted(reports, key=_order):
        where = f"    {found.dependent} at {found.label} (v{found.version}): "
        if found.error is not None:
            click.echo(where + f"REFUSED: {found.error}")
            continue
        report = found.report
        assert report is not None  # a report or an error, never neither
        verdict = "compatible" if report.compatible else "INCOMPATIBLE"
        details = _details(report)
        click.echo(where + f"{verdict} (mode {report.mode})" + (f": {'; '.join(details)}" if details else ""))


def _details(report: CompatibilityReport) -> list[str]:
    details = [f"needs {', '.join(report.added)}"] if report.added else []
    if report.kind_changes:
        details.append(f"variable <-> placeholder: {', '.join(report.kind_changes)}")
    if report.removed:
        details.append(f"no longer takes {', '.join(report.removed)}")
    return details


def any_refused(reports: Iterable[DependentReport]) -> bool:
    """Whether the move would be refused (without ``--force``) for any of the dependents."""
    return any(refused_reason(found) is not None for found in reports)
