"""The ``promptreg`` commands on prompts: create, push, label, rollback, show, render, list, diff.

``history`` lives in :mod:`~promptreg.registry.cli.history`; what ``show``, ``render`` and ``list`` say
about partials (``{{> name}}``) in :mod:`~promptreg.registry.cli.partials`.

Each is thin: it parses, calls the :class:`~promptreg.PromptRegistry`, and prints text or, with
``--json``, the models' own fields. Errors propagate to the group in :mod:`promptreg.registry.cli`, which
prints them as one line.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.chat import readable
from promptreg.registry.cli.fleet import confirm, wait_option
from promptreg.registry.cli.options import (
    author_option,
    current_registry,
    json_option,
    print_json,
    read_input,
    unified_diff,
    version_body,
)
from promptreg.registry.cli.partials import force_hint, get_shown, partials_lines, show_dependents, uses_note
from promptreg.registry.cli.rollout import describe_running
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.models import AuditEvent, Prompt, PromptVersion, describe_label_move
from promptreg.registry.validation import validate_label


def _pairs(values: Iterable[str], what: str, *, parse_json: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=what)
        result[key] = _json_or_text(value) if parse_json else value
    return result


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON (or absurdly nested): the text itself
        return value


def _version_ref(registry: PromptRegistry, name: str, ref: str) -> PromptVersion:
    """A version by number (``3``) or by label (``production``, ``latest``)."""
    if ref.isdigit():
        return registry.get_version(name, version=int(ref))
    return registry.get_version(name, label=ref)


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _move(event: AuditEvent) -> str:
    return describe_label_move(event.label, event.previous_version, event.version)


_MODE = click.Choice(["none", "backward", "full"])


@click.command()
@click.argument("name")
@click.option("--description", help="What the prompt is for.")
@click.option("--compatibility", type=_MODE, default="none", help="Which label moves to accept (default: none).")
@author_option
@json_option
def create(name: str, description: str | None, compatibility: Any, author: str | None, as_json: bool) -> None:
    """Create an empty prompt NAME."""
    prompt = current_registry().create_prompt(name, description=description, author=author, compatibility=compatibility)
    if as_json:
        print_json(prompt.model_dump(mode="json"))
    else:
        click.echo(f"created prompt {name!r}")


@click.command()
@click.argument("name")
@click.option("--file", "-f", "source", help="Read the prompt text from this file ('-' or omitted: stdin).")
@author_option
@click.option("--message", "-m", help="Why this version exists (like a commit message).")
@click.option("--metadata", "metadata_pairs", multiple=True, metavar="KEY=VALUE", help="JSON values or text.")
@click.option("--messages", "messages_file", metavar="FILE.json", help="A chat version: a JSON list of messages.")
@click.option("--config", "config_pairs", multiple=True, metavar="KEY=VALUE", help="Model config (JSON or text).")
@click.option("--label", "labels", multiple=True, help="Move this label to the new version (repeatable).")
@json_option
def push(
    name: str,
    source: str | None,
    author: str | None,
    message: str | None,
    metadata_pairs: tuple[str, ...],
    messages_file: str | None,
    config_pairs: tuple[str, ...],
    labels: tuple[str, ...],
    as_json: bool,
) -> None:
    """Add a new version of NAME from --file or stdin (or a chat version from --messages FILE.json:
    [{"role": "system", "content": "..."}, {"placeholder": "history"}, ...]); --label moves labels to it."""
    metadata = _pairs(metadata_pairs, "--metadata", parse_json=True)
    config = _pairs(config_pairs, "--config", parse_json=True)
    for name_of_label in labels:  # refuse a bad label before the version is written
        validate_label(name_of_label, settable=True)
    registry = current_registry()
    if messages_file is not None:
        if source is not None:
            raise click.UsageError("give --file or --messages, not both")
        messages = _read_messages(messages_file)
        version = registry.add_version(
            name, messages=messages, config=config, author=author, metadata=metadata, message=message
        )
    else:
        text = _read_text(source)
        if not text.strip():
            raise InvalidInputError("the prompt text is empty")
        version = registry.add_version(name, text, config=config, author=author, metadata=metadata, message=message)
    moves = [registry.set_label(name, label, version.version, author=author, reason=message) for label in labels]
    if as_json:
        # The version's own fields, plus the label moves made with it (audit events).
        print_json({**version.model_dump(mode="json"), "label_moves": [e.model_dump(mode="json") for e in moves]})
        return
    click.echo(f"{name}: added version {version.version}")
    for event in moves:
        click.echo(f"{name}: label {_move(event)}")


def _read_messages(source: str) -> Any:
    # Bounded like text (messages are bounded by the same limit), with room for the JSON syntax.
    raw = read_input(source, 2 * current_registry().max_text_bytes + 65536, "messages")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{source}: messages must be a JSON list ({exc})") from exc


def _read_text(source: str | None) -> str:
    if source is None or source == "-":
        if source is None and sys.stdin.isatty():
            raise click.UsageError("give --file FILE or pipe the prompt text on stdin")
        source = "-"
    text = read_input(source, current_registry().max_text_bytes, "prompt text")
    # Universal newlines, as text mode reads a file: a checkout on Windows gives the same text.
    return text if source == "-" else text.replace("\r\n", "\n").replace("\r", "\n")


@click.command()
@click.argument("name")
@click.argument("label")
@click.argument("version", required=False)
@click.option("--expect", type=int, help="Only if the label points at this version now (0: only if unset).")
@click.option("--delete", is_flag=True, help="Remove the label instead of moving it.")
@click.option("--force", is_flag=True, help="Move (or delete) even if the prompt's compatibility mode, or a prompt "
              "including it as a partial, refuses it (audited).")  # fmt: skip
@author_option
@click.option("--reason", help="Why (kept in the audit trail).")
@wait_option
@json_option
def label(
    name: str,
    label: str,
    version: str | None,
    expect: int | None,
    delete: bool,
    force: bool,
    author: str | None,
    reason: str | None,
    wait: float | None,
    as_json: bool,
) -> None:
    """Point LABEL of NAME at VERSION (a number, or another label's version); or --delete it.

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves the change (exit 3 if not).
    """
    registry = current_registry()
    if delete:
        if version is not None:
            raise click.UsageError("give VERSION or --delete, not both")
        with force_hint():
            event = registry.delete_label(
                name, label, expected_version=expect, author=author, reason=reason, force=force
            )
    else:
        if version is None:
            raise click.UsageError("missing VERSION (or use --delete)")
        number = _version_ref(registry, name, version).version
        with force_hint():
            event = registry.set_label(
                name, label, number, expected_version=expect, author=author, reason=reason, force=force
            )
    if as_json and wait is None:
        print_json(event.model_dump(mode="json"))
    elif not as_json:
        click.echo(f"{name}: label {_move(event)}")
    confirm(registry, event, wait, as_json)


@click.command()
@click.argument("name")
@click.argument("label")
@author_option
@click.option("--reason", help="Why (kept in the audit trail).")
@click.option("--expect", type=click.IntRange(0), default=None,
              help="Compare-and-set: roll back only if LABEL points at this version now (0: is deleted).")  # fmt: skip
@wait_option
@click.option("--force", is_flag=True, help="Move even if the prompt's compatibility mode refuses it (audited).")
@json_option
def rollback(
    name: str, label: str, author: str | None, reason: str | None, expect: int | None, force: bool,
    wait: float | None, as_json: bool,
) -> None:  # fmt: skip
    """Move LABEL of NAME back to where it pointed before its last move.

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves it (exit 3 if not).
    """
    registry = current_registry()
    with force_hint():
        event = registry.rollback(name, label, expected_version=expect, author=author, reason=reason, force=force)
    if as_json and wait is None:
        print_json(event.model_dump(mode="json"))
    elif not as_json:
        click.echo(f"{name}: label {_move(event)} (rollback)")
    confirm(registry, event, wait, as_json)


def _select(name: str, label: str | None, version: int | None, *, raw: bool | None = None) -> PromptVersion:
    if label is not None and version is not None:
        raise click.UsageError("give --label or --version, not both")
    return get_shown(current_registry(reading=True), name, label, version, raw=raw)


@click.command()
@click.argument("name")
@click.option("--label", "-l", help="The version this label points at (default: latest).")
@click.option("--version", "-v", "version", type=click.IntRange(min=1), help="This version number.")
@click.option("--text", "text_only", is_flag=True, help="Print only the prompt text.")
@click.option("--raw", is_flag=True, help="The version as stored: its {{> partial}} references not resolved.")
@click.option("--dependents", is_flag=True, help="List the prompts including NAME as a partial (with --label: at it).")
@json_option
def show(
    name: str, label: str | None, version: int | None, text_only: bool, raw: bool, dependents: bool, as_json: bool
) -> None:
    """Show one version of NAME (default: the newest), its partials resolved at its label as a client
    serves it (--version V: at latest; --raw: as stored). --dependents: the prompts including NAME."""
    if dependents:
        if version is not None or text_only or raw:
            raise click.UsageError("--dependents takes --label only")
        return show_dependents(current_registry(reading=True), name, label, as_json)
    found = _select(name, label, version, raw=raw)
    if as_json:
        print_json(found.model_dump(mode="json"))
        return
    body = version_body(found)
    if text_only:
        click.echo(body, nl=False)
        return
    prompt = current_registry(reading=True).get_prompt(name)
    protected = {p.label for p in current_registry(reading=True).protected_labels(name)}
    on = sorted(k + " (protected)" * (k in protected) for k, v in (prompt.labels if prompt else {}).items()
                if v == found.version)  # fmt: skip
    click.echo(f"{name} version {found.version}" + (f"  [{', '.join(on)}]" if on else ""))
    click.echo(f"created: {_when(found.created_at)}" + (f" by {found.author}" if found.author else ""))
    if found.message:
        click.echo(f"message: {found.message}")
    if found.metadata:
        click.echo(f"metadata: {json.dumps(found.metadata, ensure_ascii=False, sort_keys=True)}")
    if found.config:
        click.echo(f"config: {json.dumps(found.config, ensure_ascii=False, sort_keys=True)}")
    if found.type == "chat":
        click.echo(f"type: chat, {len(found.messages or ())} message(s)")
    if found.variables:
        click.echo(f"variables: {', '.join(sorted(found.variables))}")
    if found.placeholders:
        click.echo(f"placeholders: {', '.join(sorted(found.placeholders))}")
    for line in partials_lines(found, label, raw=raw):
        click.echo(line)
    labels = prompt.labels if prompt else {}
    for name_of_label, running in sorted((prompt.rollouts if prompt else {}).items()):
        since = f"started {_when(running.started_at)}" + (f" by {running.author}" if running.author else "")
        click.echo(f"rollout: {describe_running(name_of_label, labels.get(name_of_label), running)} ({since})")
    click.echo("")
    click.echo(body, nl=not body.endswith("\n"))


@click.command()
@click.argument("name")
@click.option("--label", "-l", help="Render the version this label points at (default: latest).")
@click.option("--version", "-v", "version", type=click.IntRange(min=1), help="Render this version number.")
@click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable).")
@json_option
def render(name: str, label: str | None, version: int | None, variables: tuple[str, ...], as_json: bool) -> None:
    """Render NAME with --var values (every {{variable}} must be given; a chat version's placeholder
    takes a JSON list of messages: --var 'history=[{"role": "user", "content": "hi"}]'). Its
    {{> partials}} are resolved at its label (--version V: at latest), as a client serves it."""
    values: dict[str, Any] = _pairs(variables, "--var", parse_json=False)
    found = _select(name, label, version)
    for slot in found.placeholders & values.keys():
        values[slot] = _json_or_text(values[slot])
    rendered = found.render(**values)
    used = {"partials": found.partials} if found.partials else {}
    if isinstance(rendered, list):
        if as_json:
            print_json({"name": name, "version": found.version, "messages": rendered, **used})
        else:
            click.echo(readable(rendered))
        return
    if as_json:
        print_json({"name": name, "version": found.version, "text": rendered, **used})
    else:
        click.echo(rendered, nl=not rendered.endswith("\n"))


@click.command(name="list")
@click.option("--uses", "partial", metavar="PARTIAL", help="Only the prompts including PARTIAL (at any depth).")
@json_option
def list_prompts(partial: str | None, as_json: bool) -> None:
    """List every prompt with its newest version and its labels (--uses P: those including P)."""
    registry = current_registry(reading=True)
    users = None if partial is None else registry.dependents(partial)
    names = registry.list_prompts() if users is None else sorted(users)
    prompts = [p for p in (registry.get_prompt(n) for n in names) if p is not None]
    if as_json:
        print_json([{**_summary(p), **({} if users is None else {"includes_at": users[p.name]})} for p in prompts])
        return
    if not prompts:
        click.echo("no prompts" if partial is None else f"no prompt includes {partial}")
    for prompt in prompts:
        labels = " ".join(f"{k}={v}" for k, v in sorted(prompt.labels.items()))
        latest = prompt.latest.version if prompt.latest else 0
        note = "" if users is None or partial is None else uses_note(users[prompt.name], partial)
        click.echo(f"{prompt.name}  latest={latest}" + (f"  {labels}" if labels else "") + note)


def _summary(prompt: Prompt) -> dict[str, Any]:
    data = prompt.model_dump(mode="json", exclude={"versions"})
    data["latest"] = prompt.latest.version if prompt.latest else None
    return data


@click.command()
@click.argument("name")
@click.argument("a")
@click.argument("b")
@json_option
def diff(name: str, a: str, b: str, as_json: bool) -> None:
    """Unified diff of NAME between A and B (version numbers or labels)."""
    registry = current_registry(reading=True)
    old, new = _version_ref(registry, name, a), _version_ref(registry, name, b)
    text = unified_diff(name, old, new)
    if as_json:
        print_json(
            {
                "name": name,
                "from_version": old.version,
                "to_version": new.version,
                "diff": text,
                "metadata": {"from": old.metadata, "to": new.metadata},
                "config": {"from": old.config, "to": new.config},
            }
        )
        return
    click.echo(text, nl=False)
    for what, before, after in (("metadata", old.metadata, new.metadata), ("config", old.config, new.config)):
        if before != after:
            click.echo(f"{what}: {json.dumps(before, sort_keys=True)} -> {json.dumps(after, sort_keys=True)}")
    if not text and old.metadata == new.metadata and old.config == new.config:
        click.echo(f"versions {old.version} and {new.version} are identical", err=True)
