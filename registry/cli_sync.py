"""The ``promptreg`` commands that keep the registry in step with something outside it.

``sync`` (a folder of prompt files), ``export`` / ``import`` (a JSON file) and ``watch`` (the
terminal, live). :mod:`registry.cli` registers them on its command group, whose error handling
turns every library error into one ``error: ...`` line; this module does not import it (the group
imports us), so it reaches the registry through the click context object.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from registry.backup import apply_import, export_registry, plan_import
from registry.base import PromptRegistry
from registry.errors import InvalidInputError, RegistryUnavailableError
from registry.factory import redact_url
from registry.sync import apply_sync, plan_sync

_F = TypeVar("_F", bound=Callable[..., Any])
_STEP_FIELDS = ("action", "prompt", "version", "label", "previous_version")


class _Settings(Protocol):
    url: str
    namespace: str | None

    def registry(self) -> PromptRegistry: ...


def _settings() -> _Settings:
    settings: _Settings = click.get_current_context().find_root().obj
    return settings


def _json_option(function: _F) -> _F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (the models' own field names).")(function)


def _author_option(function: _F) -> _F:
    return click.option("--author", envvar="PROMPTREG_AUTHOR", help="Who makes the change (env PROMPTREG_AUTHOR).")(
        function
    )


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--label", "labels", multiple=True, help="Also point this label at every file's version (repeatable).")
@_author_option
@click.option("--dry-run", is_flag=True, help="Print the plan, write nothing.")
@_json_option
def sync(directory: Path, labels: tuple[str, ...], author: str | None, dry_run: bool, as_json: bool) -> None:
    """Make the registry match a folder of *.prompt files (prompts as code)."""
    registry = _settings().registry()
    plan = plan_sync(registry, directory, labels=labels)
    steps = plan.steps if dry_run else tuple(apply_sync(registry, plan, author=author))
    if as_json:
        rows = [{**{k: getattr(s, k) for k in _STEP_FIELDS}, "path": str(s.path)} for s in steps]
        _print_json({"dry_run": dry_run, "files": len(plan.files), "steps": rows})
        return
    for step in steps:
        click.echo(("would " if dry_run else "") + step.describe())
    if not steps:
        click.echo(f"{len(plan.files)} prompt file(s) in {directory}: registry already up to date")
    elif not dry_run:
        click.echo(f"{len(plan.files)} prompt file(s) in {directory}: {len(steps)} change(s) made")


@click.command(name="export")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
def export_command(file: str) -> None:
    """Write the whole registry as JSON to FILE ('-': stdout)."""
    data = export_registry(_settings().registry())
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if file == "-":
        click.echo(text, nl=False)
        return
    Path(file).write_text(text, encoding="utf-8")
    click.echo(f"exported {len(data['prompts'])} prompt(s) to {file}", err=True)


@click.command(name="import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@_author_option
@click.option("--dry-run", is_flag=True, help="Validate and print the plan, write nothing.")
@_json_option
def import_command(file: str, author: str | None, dry_run: bool, as_json: bool) -> None:
    """Load an export FILE ('-': stdin) into the registry; validated before anything is written."""
    try:
        raw = sys.stdin.buffer.read().decode("utf-8") if file == "-" else Path(file).read_text(encoding="utf-8")
        data = json.loads(raw)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError both are ValueErrors
        raise InvalidInputError(f"{file}: not a JSON export ({exc})") from exc
    registry = _settings().registry()
    plan = plan_import(registry, data)
    steps = plan.steps if dry_run else tuple(apply_import(registry, plan, author=author, reason=f"import {file}"))
    if as_json:
        rows = [{k: getattr(s, k) for k in _STEP_FIELDS} for s in steps]
        _print_json({"dry_run": dry_run, "prompts": len(plan.prompts), "steps": rows})
        return
    for step in steps:
        click.echo(("would " if dry_run else "") + step.describe())
    click.echo(f"{len(plan.prompts)} prompt(s) in {file}: " + (f"{len(steps)} change(s)" if steps else "nothing to do"))


@click.command()
@click.argument("name", required=False)
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="Seconds to connect.")
@_json_option
def watch(name: str | None, timeout: float, as_json: bool) -> None:
    """Print every change (of NAME, or of every prompt) as it happens, until interrupted.

    With --json, one JSON object per line (the client's ChangeEvent fields).
    """
    from client import ChangeEvent, PromptClient  # the CLI is the one part of registry/ that uses client/

    settings = _settings()
    events: queue.SimpleQueue[ChangeEvent] = queue.SimpleQueue()

    def collect(event: ChangeEvent) -> None:
        if name is None or event.name == name:
            events.put(event)

    # The client logs its own troubles; here the status line below reports them, once.
    logging.getLogger("promptreg").addHandler(logging.NullHandler())
    previous = signal.signal(signal.SIGTERM, _interrupt)
    client = PromptClient(settings.url, namespace=settings.namespace or None, start_timeout=timeout)
    try:
        if not client.wait_ready(0):
            reason = client.status().last_error or f"no answer within {timeout:g} s"
            raise RegistryUnavailableError(f"cannot watch {redact_url(settings.url)}: {reason}")
        # Registered once the first state is in, so only changes after it are printed.
        client.on_change(collect)
        click.echo(f"watching {redact_url(settings.url)} (rev {client.status().rev}); Ctrl-C to stop", err=True)
        state = client.status().state
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                now = client.status()
                if now.state is not state:
                    state = now.state
                    detail = f": {now.last_error}" if now.last_error and state.value != "live" else ""
                    click.echo(f"[{state.value}{detail}]", err=True)
                continue
            click.echo(json.dumps(dataclasses.asdict(event)) if as_json else _describe(event))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()


def _describe(event: Any) -> str:
    if event.label is None:
        return f"rev {event.rev}  {event.name}: created"
    if event.label == "latest":
        return f"rev {event.rev}  {event.name}: new version {event.version}"
    before = "unset" if event.previous_version is None else event.previous_version
    after = "deleted" if event.version is None else event.version
    return f"rev {event.rev}  {event.name}: label {event.label} {before} -> {after}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
