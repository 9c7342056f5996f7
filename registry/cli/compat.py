"""The ``promptreg`` commands on compatibility modes: ``check`` (would a label move pass?) and
``compatibility`` (set a prompt's mode). :mod:`promptreg.registry.cli` registers them on its command group."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from promptreg.registry.cli.options import author_option, current_registry, json_option, print_json
from promptreg.registry.cli.partials import (
    any_refused,
    composition_error,
    dependent_rows,
    print_dependent_reports,
)


@click.command()
@click.argument("name")
@click.argument("label")
@click.argument("version", type=click.IntRange(min=1))
@json_option
def check(name: str, label: str, version: int, as_json: bool) -> None:
    """Would moving LABEL of NAME to VERSION pass the prompt's compatibility mode? Writes nothing.

    A deleted label is checked against where it pointed when it was deleted. A VERSION including
    partials ({{> partial}}) is also checked composed at LABEL; when NAME is a partial, the prompts
    including it at LABEL are checked too, each under its own mode. Exits 0 when the move would pass,
    1 when it would be refused (`promptreg label ... --force` moves anyway).
    """
    registry = current_registry(reading=True)
    report = registry.check_compatibility(name, label, version)
    unresolved = composition_error(registry, name, label, version)
    dependents = registry.check_dependents(name, label, version)
    passes = report.compatible and unresolved is None
    if as_json:
        print_json({**asdict(report), "compatible": passes, "composed_error": unresolved,
                    "dependents": dependent_rows(dependents)})  # fmt: skip
    else:
        before = "unset" if report.current_version is None else str(report.current_version)
        prompt = registry.get_prompt(name)
        if report.current_version is not None and prompt is not None and label not in prompt.labels:
            before = f"deleted (was {report.current_version})"
        verdict = "compatible" if passes else "INCOMPATIBLE" if unresolved is None else "REFUSED"
        click.echo(f"{name}: label {label} {before} -> {version}: {verdict} (mode {report.mode})")
        if report.type_change is not None:
            click.echo(f"  type: {' -> '.join(report.type_change)}")
        if report.added:
            click.echo(f"  needs: {', '.join(report.added)}")
        if report.kind_changes:
            click.echo(f"  variable <-> placeholder: {', '.join(report.kind_changes)}")
        if report.removed:
            click.echo(f"  no longer takes: {', '.join(report.removed)}")
        if unresolved is not None:
            click.echo(f"  composed with its partials: REFUSED: {unresolved}")
        print_dependent_reports(name, label, dependents)
    if not passes or any_refused(dependents):
        raise click.exceptions.Exit(1)


@click.command()
@click.argument("name")
@click.argument("mode", type=click.Choice(["none", "backward", "full"]))
@author_option
@click.option("--reason", help="Why (kept in the audit trail).")
@json_option
def compatibility(name: str, mode: Any, author: str | None, reason: str | None, as_json: bool) -> None:
    """Set the compatibility MODE of NAME: none, backward (a label may only move to a version of the
    same type that needs no new input and keeps each variable a variable, each placeholder a
    placeholder) or full (the same type, variables and placeholders)."""
    event = current_registry().set_compatibility(name, mode, author=author, reason=reason)
    if as_json:
        print_json(event.model_dump(mode="json"))
    else:
        click.echo(f"{name}: compatibility {mode}")
