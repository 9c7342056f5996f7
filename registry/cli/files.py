"""The ``promptreg`` commands that bring prompts in and out: ``sync``, ``export``, ``import``.

``sync`` makes the registry match a folder of prompt files; ``export`` / ``import`` move the
whole registry through a JSON file. :mod:`promptreg.registry.cli` registers them on its command group,
whose error handling turns every library error into one ``error: ...`` line.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from promptreg.registry.backup import MAX_EXPORT_BYTES, apply_import, export_registry, plan_import
from promptreg.registry.cli.options import author_option, current_registry, json_option, print_json, read_input
from promptreg.registry.cli.partials import force_hint
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.sync import apply_sync, plan_sync
from promptreg.registry.validation import validate_text_field

_STEP_FIELDS = ("action", "prompt", "version", "label", "previous_version")


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--label", "labels", multiple=True, help="Also point this label at every file's version (repeatable).")
@author_option
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@click.option("--force", is_flag=True, help="Make label moves the compatibility mode refuses (audited as forced).")
@json_option
def sync(
    directory: Path, labels: tuple[str, ...], author: str | None, dry_run: bool, force: bool, as_json: bool
) -> None:
    """Make the registry match a folder of *.prompt files (prompts as code).

    Every file is validated before anything is written. A label move the prompt's compatibility mode
    refuses (or, for a partial, the mode of a prompt including it) is marked INCOMPATIBLE in the plan
    and stops the sync before anything is written, unless --force. Files including other prompts
    ({{> name}}) are written after the files they include. --dry-run exits as the sync would: 1 (with
    the same error line) when it would refuse. On PostgreSQL the sync is one transaction; elsewhere
    an error names the writes already made."""
    registry = current_registry()
    plan = plan_sync(registry, directory, labels=labels)
    validate_text_field(author, "author")  # before the plan is shown: the dry run fails as the sync would
    with force_hint():
        steps = plan.steps if dry_run else tuple(apply_sync(registry, plan, author=author, force=force))
    if as_json:
        rows = [
            {**{k: getattr(s, k) for k in _STEP_FIELDS}, "path": str(s.path), "incompatible": s.refused} for s in steps
        ]
        print_json({"dry_run": dry_run, "files": len(plan.files), "steps": rows})
    else:
        for step in steps:
            click.echo(("would " if dry_run else "") + step.describe())
        if not steps:
            click.echo(f"{len(plan.files)} prompt file(s) in {directory}: registry already up to date")
        elif not dry_run:
            click.echo(f"{len(plan.files)} prompt file(s) in {directory}: {len(steps)} change(s) made")
    if dry_run:
        with force_hint():
            plan.check_compatible(force=force)  # the plan is shown; then fail as the real sync would


@click.command(name="export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def export_command(file: str) -> None:
    """Write the whole registry as JSON to FILE ('-': stdout)."""
    data = export_registry(current_registry(reading=True))
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if file == "-":
        click.echo(text, nl=False)
        return
    Path(file).write_text(text, encoding="utf-8")
    click.echo(f"exported {len(data['prompts'])} prompt(s) to {file}", err=True)


@click.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@author_option
@click.option("--dry-run", is_flag=True, help="Validate and print the plan, write nothing.")
@json_option
def import_command(file: str, author: str | None, dry_run: bool, as_json: bool) -> None:
    """Load an export FILE ('-': stdin) into the registry; validated before anything is written.

    A label move the target prompt's compatibility mode refuses is marked INCOMPATIBLE in the plan
    and stops the import before anything is written; --dry-run exits 1 then, as the import would.
    On PostgreSQL the import is one transaction; elsewhere an error names the writes already made."""
    raw = read_input(file, MAX_EXPORT_BYTES, "the export")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, a huge integer, absurd nesting
        raise InvalidInputError(f"{file}: not a JSON export ({exc})") from exc
    registry = current_registry()
    plan = plan_import(registry, data)
    reason = f"import {file}"
    validate_text_field(author, "author")
    validate_text_field(reason, "reason")
    steps = plan.steps if dry_run else tuple(apply_import(registry, plan, author=author, reason=reason))
    if as_json:
        rows = [{**{k: getattr(s, k) for k in _STEP_FIELDS}, "incompatible": s.refusal is not None} for s in steps]
        print_json({"dry_run": dry_run, "prompts": len(plan.prompts), "steps": rows})
    else:
        for step in steps:
            click.echo(("would " if dry_run else "") + step.describe())
        changes = f"{len(steps)} change(s)" if steps else "nothing to do"
        click.echo(f"{len(plan.prompts)} prompt(s) in {file}: {changes}")
    if dry_run:
        plan.check_compatible()  # the plan is shown; then fail as the real import would
