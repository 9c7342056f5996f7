"""``promptreg rollout``: percentage rollouts (start, set, promote, abort, status).

A rollout sends a share of a label's lookups to a *candidate* version while the label keeps its
*stable* one (:mod:`promptreg.registry.rollouts`). Each write is one audited write, printed as
:func:`describe_rollout` says it, and takes ``--wait`` (the fleet's confirmation, as ``label`` and
``rollback`` do: :func:`~promptreg.registry.cli.fleet.confirm`) and ``--json`` (the audit event).
``history``, ``show``, ``watch`` and ``fleet --prompt`` describe rollouts with the functions here.

``--percent`` is read as a decimal number (``10``, ``12.5``, ``0.25``, a trailing ``%`` allowed) and
checked by the registry's own rule (:func:`~promptreg.registry.validation.validate_percent`) before
anything is written: a bad value is a usage error (exit 2), never a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.fleet import confirm, wait_option
from promptreg.registry.cli.options import author_option, current_registry, json_option, print_json
from promptreg.registry.errors import InvalidInputError, PromptNotFoundError
from promptreg.registry.fleet import escape_control
from promptreg.registry.models import AuditEvent, Prompt, Rollout, describe_label_move
from promptreg.registry.rollouts import points_of
from promptreg.registry.validation import PERCENT_SCALE, validate_percent

_F = TypeVar("_F", bound=Callable[..., Any])

ROLLOUT_ACTIONS = frozenset({"start_rollout", "set_rollout", "promote_rollout", "abort_rollout"})
"""The audit actions of rollouts (each is described by :func:`describe_rollout_event`)."""


# -- words ----------------------------------------------------------------------------------------


def format_percent(percent: float) -> str:
    """``10%``, ``12.5%``, ``0.25%``: a share as people write it (rollouts take two decimals)."""
    return f"{round(percent * PERCENT_SCALE) / PERCENT_SCALE:g}%"


def describe_rollout(
    action: str,
    label: str,
    *,
    stable: int | None,
    candidate: int | None,
    percent: float | None = None,
    before: float | None = None,
) -> str:
    """A rollout step in words, the one way the commands say it (the sibling of
    :func:`~promptreg.registry.models.describe_label_move`):

    - ``production: rollout of v4 started at 10% (stable v3)``
    - ``production: rollout of v4 widened to 25% (from 10%)`` (``narrowed``; ``set to`` when the
      share before, ``before``, is unknown)
    - ``production: rollout of v4 promoted: production 3 -> 4``
    - ``production: rollout aborted (candidate v4 dropped, back to v3)``
    """
    share = "?" if percent is None else format_percent(percent)
    if action == "start_rollout":
        return f"{label}: rollout of v{candidate} started at {share} (stable v{stable})"
    if action == "set_rollout":
        if before is None or percent is None or percent == before:
            return f"{label}: rollout of v{candidate} set to {share}"
        verb = "widened" if percent > before else "narrowed"
        return f"{label}: rollout of v{candidate} {verb} to {share} (from {format_percent(before)})"
    if action == "promote_rollout":
        return f"{label}: rollout of v{candidate} promoted: {describe_label_move(label, stable, candidate)}"
    dropped = "" if candidate is None else f"candidate v{candidate} dropped, "
    return f"{label}: rollout aborted ({dropped}back to v{stable})"


def describe_rollout_event(event: AuditEvent, before: float | None = None) -> str:
    """:func:`describe_rollout` of an audit event of one of :data:`ROLLOUT_ACTIONS` (``before``: the
    share before a ``set_rollout``, when known). The fields mean what :class:`AuditEvent` says."""
    label = event.label or "?"
    if event.action == "abort_rollout":
        return describe_rollout(event.action, label, stable=event.version, candidate=event.previous_version)
    return describe_rollout(
        event.action, label, stable=event.previous_version, candidate=event.version, percent=event.percent,
        before=before,
    )  # fmt: skip


def describe_running(label: str, stable: int | None, rollout: Rollout) -> str:
    """``production: v3 90%, candidate v4 10%`` (what ``show`` and ``fleet --prompt`` print)."""
    points = points_of(rollout.percent)
    rest = format_percent((100 * PERCENT_SCALE - points) / PERCENT_SCALE)
    return f"{label}: stable v{stable} {rest}, candidate v{rollout.version} {format_percent(rollout.percent)}"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


# -- --percent ------------------------------------------------------------------------------------


class PercentType(click.ParamType[float]):
    """A rollout share: a decimal number above 0 and below 100 with at most two decimals."""

    name = "percent"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        text = str(value).strip()
        text = text[:-1] if text.endswith("%") else text
        try:
            number = Decimal(text)
        except (InvalidOperation, ValueError):
            self.fail(f"expected a number such as 10 or 12.5, got {str(value)[:40]!r}", param, ctx)
        if not number.is_finite():
            self.fail(f"expected a number such as 10 or 12.5, got {str(value)[:40]!r}", param, ctx)
        try:
            validate_percent(float(number))  # the registry's rule: 0 < percent < 100, two decimals
        except InvalidInputError as exc:  # its words, with the value as typed (not as a float)
            self.fail(f"{str(exc).partition(', got ')[0]}, got {text[:40]!r}", param, ctx)
        if number != number.quantize(Decimal("0.01")):  # exact, not within a float's rounding
            self.fail(f"percent takes at most two decimals, got {text[:40]!r}", param, ctx)
        return float(number)


PERCENT = PercentType()


def _percent_option(help: str) -> Callable[[_F], _F]:
    return click.option("--percent", type=PERCENT, required=True, metavar="P", help=help)


_reason_option = click.option("--reason", help="Why (kept in the audit trail).")


def _write_options(command: _F) -> _F:
    """``--author``, ``--reason``, ``--wait`` and ``--json``: the options of every rollout write."""
    for option in (json_option, wait_option, _reason_option, author_option):
        command = option(command)
    return command


# -- the commands ---------------------------------------------------------------------------------


@click.group(name="rollout")
def rollout() -> None:
    """Send a share of a label's lookups to a candidate version: start, set, promote, abort, status.

    While a rollout runs the label keeps its (stable) version; a client given a key picks the same
    variant for that key everywhere. `label` and `rollback` refuse the label until the rollout is
    promoted or aborted.
    """


@rollout.command()
@click.argument("name")
@click.argument("label")
@click.argument("version")
@_percent_option("The candidate's share of the lookups, above 0 and below 100 (two decimals at most).")
@click.option("--force", is_flag=True, help="Start even if the prompt's compatibility mode refuses it (audited).")
@_write_options
def start(
    name: str, label: str, version: str, percent: float, force: bool, author: str | None, reason: str | None,
    wait: float | None, as_json: bool,
) -> None:  # fmt: skip
    """Start sending --percent of LABEL's lookups of NAME to VERSION (a number, or another label's version).

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves it (exit 3 if not).
    """
    registry = current_registry()
    number = int(version) if version.isdigit() else registry.get_version(name, label=version).version
    event = registry.start_rollout(name, label, number, percent, author=author, reason=reason, force=force)
    _report(registry, name, event, wait, as_json)


@rollout.command(name="set")
@click.argument("name")
@click.argument("label")
@_percent_option("The candidate's new share, above 0 and below 100 (two decimals at most).")
@_write_options
def set_share(
    name: str, label: str, percent: float, author: str | None, reason: str | None, wait: float | None, as_json: bool
) -> None:
    """Widen (or narrow) the running rollout of LABEL of NAME to --percent.

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves it (exit 3 if not).
    """
    registry = current_registry()
    prompt = registry.get_prompt(name)  # the share before, to say "widened" or "narrowed"
    running = prompt.rollouts.get(label) if prompt is not None else None
    event = registry.set_rollout(name, label, percent, author=author, reason=reason)
    _report(registry, name, event, wait, as_json, before=None if running is None else running.percent)


@rollout.command()
@click.argument("name")
@click.argument("label")
@_write_options
def promote(name: str, label: str, author: str | None, reason: str | None, wait: float | None, as_json: bool) -> None:
    """End the rollout of LABEL of NAME by moving the label to the candidate (`rollback` undoes it).

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves it (exit 3 if not).
    """
    registry = current_registry()
    _report(registry, name, registry.promote_rollout(name, label, author=author, reason=reason), wait, as_json)


@rollout.command()
@click.argument("name")
@click.argument("label")
@_write_options
def abort(name: str, label: str, author: str | None, reason: str | None, wait: float | None, as_json: bool) -> None:
    """End the rollout of LABEL of NAME by dropping the candidate: every lookup gets the label's version.

    --wait [SECONDS]: then wait until every client in `promptreg fleet` serves it (exit 3 if not).
    """
    registry = current_registry()
    _report(registry, name, registry.abort_rollout(name, label, author=author, reason=reason), wait, as_json)


def _report(
    registry: PromptRegistry, name: str, event: AuditEvent, wait: float | None, as_json: bool,
    before: float | None = None,
) -> None:  # fmt: skip
    """Print the write as ``label`` does (text, or the audit event), then :func:`confirm` it."""
    if as_json and wait is None:
        print_json(event.model_dump(mode="json"))
    elif not as_json:
        click.echo(f"{name}: {describe_rollout_event(event, before)}" + (" [forced]" if event.forced else ""))
    confirm(registry, event, wait, as_json)


@rollout.command()
@click.argument("name", required=False)
@json_option
def status(name: str | None, as_json: bool) -> None:
    """The rollouts running (on NAME, or on every prompt): label, stable version, candidate, share,
    when and by whom they started."""
    registry = current_registry(reading=True)
    if name is not None:
        prompt = registry.get_prompt(name)
        if prompt is None:
            raise PromptNotFoundError(name)
        prompts = [prompt]
    else:
        found = (registry.get_prompt(n) for n in registry.list_rollouts())
        prompts = [p for p in found if p is not None]
    running = [(prompt, label, found) for prompt in prompts for label, found in sorted(prompt.rollouts.items())]
    if as_json:
        print_json([_row(prompt, label, found) for prompt, label, found in running])
        return
    if not running:
        click.echo("no rollout running" + (f" on {name}" if name is not None else ""))
        return
    headers = ["PROMPT", "LABEL", "STABLE", "CANDIDATE", "PERCENT", "STARTED", "AUTHOR"]
    rows = [
        [prompt.name, label, f"v{prompt.labels.get(label)}", f"v{found.version}", format_percent(found.percent),
         _when(found.started_at), found.author or "-"]
        for prompt, label, found in running
    ]  # fmt: skip
    table = [headers, *([escape_control(cell) for cell in row] for row in rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _row(prompt: Prompt, label: str, running: Rollout) -> dict[str, Any]:
    """One rollout for ``status --json``: the prompt, the label, its stable version, then the
    :class:`~promptreg.registry.models.Rollout`'s own fields (``version`` is the candidate)."""
    return {
        "prompt": prompt.name,
        "label": label,
        "stable_version": prompt.labels.get(label),
        **running.model_dump(mode="json"),
    }
