"""``promptreg fleet`` and the ``--wait`` of ``label`` / ``rollback``: which process serves what.

``fleet`` prints :meth:`~promptreg.PromptRegistry.fleet` as a table; with ``--prompt NAME`` it first
prints NAME's labels (a label with a rollout: its split, :func:`render_labels`), then adds the version
(and rollout) each client serves for its label, worked out from the prompt's audit trail at the
client's revision (a client reports only its revision, so reports stay small whatever the registry
holds). ``--wait [SECONDS]`` runs :meth:`~promptreg.PromptRegistry.wait_for_fleet` for the write's
revision and exits with :data:`EXIT_INCOMPLETE` when some client did not confirm it in time.

Every service may write presence records (the ``reader`` ACL user), so what is printed here is
untrusted: the readers skip records that are not a client's report and say how many
(:class:`~promptreg.registry.fleet.FleetRead`), every cell is escaped (:func:`~promptreg.registry.fleet.escape_control`:
no newline or terminal escape reaches the terminal), and ``--wait`` does not confirm a fleet whose
index was too large to read whole (:data:`~promptreg.registry.redis.fleet.MAX_FLEET`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.options import current_registry, json_option, print_json
from promptreg.registry.errors import PromptNotFoundError
from promptreg.registry.fleet import FleetMember, FleetRead, FleetWait, escape_control
from promptreg.registry.models import AuditEvent, Prompt
from promptreg.registry.validation import LATEST

EXIT_INCOMPLETE = 3
"""Exit code of ``label``/``rollback --wait`` when some client still serves an older revision."""
DEFAULT_WAIT = 5.0
"""Seconds ``--wait`` waits when given without a value."""

_F = TypeVar("_F", bound=Callable[..., Any])


def wait_option(function: _F) -> _F:
    """``--wait [SECONDS]``: after the write, wait until every reporting client serves it."""
    return click.option(
        "--wait",
        "wait",
        type=click.FloatRange(min=0),
        is_flag=False,
        flag_value=DEFAULT_WAIT,
        default=None,
        metavar="[SECONDS]",
        help=f"Then wait until every client in `promptreg fleet` serves the change (default {DEFAULT_WAIT:g} s); "
        f"exit {EXIT_INCOMPLETE} if some did not.",
    )(function)


def truncated_notice() -> str:
    """What ``fleet`` says when the index held more entries than one read takes."""
    from promptreg.registry.redis.fleet import MAX_FLEET

    return (
        f"the fleet index holds more than {MAX_FLEET:,} entries (a fleet that large, or fake ids written with "
        f"a service's credentials): only the {MAX_FLEET:,} most recent were read"
    )


def describe_wait(result: FleetWait) -> str:
    """``reached 50 of 50 clients in 12 ms``, plus the lagging and gone clients by id (escaped)."""
    total = len(result.reached) + len(result.lagging)
    text = f"reached {len(result.reached)} of {total} clients in {result.elapsed * 1000:.0f} ms"
    if result.lagging:
        text += f"; lagging (rev < {result.rev}): {', '.join(map(escape_control, result.lagging))}"
    if result.gone:
        text += f"; gone during the wait: {', '.join(map(escape_control, result.gone))}"
    return text


def read_fleet_view(registry: PromptRegistry) -> FleetRead:
    """:meth:`~promptreg.PromptRegistry.fleet`, with what the read skipped or cut on Redis.

    Raises :class:`~promptreg.RegistryUnavailableError` (and what ``fleet()`` raises).
    """
    # Redis modules only here: every other command of the CLI runs without redis-py on a file.
    from promptreg.registry.redis.errors import map_redis_errors
    from promptreg.registry.redis.fleet import scan_fleet
    from promptreg.registry.redis.store import RedisPromptRegistry

    if isinstance(registry, RedisPromptRegistry):
        with map_redis_errors():
            return scan_fleet(registry.redis, registry.keys)
    return FleetRead(members=registry.fleet())


def confirm(registry: PromptRegistry, event: AuditEvent, timeout: float | None, as_json: bool) -> None:
    """Print ``event`` (and, with a ``timeout``, the fleet's confirmation); exit 3 if incomplete.

    The fleet is read once before the wait to say what it skipped (on stderr; in JSON as
    ``fleet.malformed``). An index holding more than :data:`~promptreg.registry.redis.fleet.MAX_FLEET` entries
    is read in part, so the wait cannot confirm every client: that is incomplete too (exit 3).
    """
    if timeout is None:
        return
    _quiet_registry_log()
    view = read_fleet_view(registry)
    result = registry.wait_for_fleet(event.rev, timeout=timeout)
    complete = result.complete and not view.truncated
    if as_json:
        fleet = {**result.model_dump(mode="json"), "complete": complete}
        fleet.update(truncated=view.truncated, malformed=view.malformed)
        print_json({**event.model_dump(mode="json"), "fleet": fleet})
    else:
        _notices(view, err=True)
        click.echo(describe_wait(result) + ("; not confirmed: see above" if view.truncated else ""), err=not complete)
    if not complete:
        click.get_current_context().exit(EXIT_INCOMPLETE)


def _quiet_registry_log() -> None:
    # The registry logs what a fleet read skipped or cut (for library users); the CLI says it itself.
    logger = logging.getLogger("promptreg.registry")
    if not any(isinstance(handler, logging.NullHandler) for handler in logger.handlers):
        logger.addHandler(logging.NullHandler())


def _ago(moment: datetime, now: datetime) -> str:
    seconds = max(0.0, (now - moment).total_seconds())
    return f"{seconds:.1f} s ago" if seconds < 120 else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _served_at(events: list[AuditEvent], label: str, rev: int) -> tuple[int | None, tuple[int, float] | None]:
    """Where ``label`` pointed at revision ``rev`` and its rollout then (``(candidate, percent)``, or
    ``None``), from the prompt's audit trail (oldest first). A rollout's start and change leave the
    label where it is; its promotion moves the label, and its abort leaves it where it was."""
    found: int | None = None
    rollout: tuple[int, float] | None = None
    for event in events:
        if event.rev > rev:
            break
        if event.label == label and event.action in ("start_rollout", "set_rollout"):
            rollout = (event.version or 0, event.percent or 0.0)
            continue
        moved = event.label == label and event.action in _LABEL_MOVES
        if moved or (label == LATEST and event.action == "add_version"):
            found = event.version
            if moved:
                rollout = None
    return found, rollout


_LABEL_MOVES = frozenset({"set_label", "delete_label", "rollback", "promote_rollout", "abort_rollout"})
"""The audit actions after which ``AuditEvent.version`` is where the label points."""


@click.command()
@click.option("--prompt", "prompt_name", metavar="NAME", help="Also show which version of NAME each client serves.")
@json_option
def fleet(prompt_name: str | None, as_json: bool) -> None:
    """Which client processes follow this registry, and the revision each one serves.

    With --prompt NAME: first NAME's labels (a label with a rollout: its split between the stable
    version and the candidate), then the version of NAME each client serves for its label.
    """
    registry = current_registry(reading=True)
    _quiet_registry_log()
    prompt = None
    if prompt_name is not None:  # an unknown prompt is an error before the fleet is read
        prompt = registry.get_prompt(prompt_name)
        if prompt is None:
            raise PromptNotFoundError(prompt_name)
    read = read_fleet_view(registry)  # first: a read drops the entries it skipped, this one counts them
    members = read.members
    now = registry.wait_for_fleet(timeout=0)  # the registry's revision, and who is behind it
    served: dict[str, tuple[int | None, tuple[int, float] | None]] = {}
    if prompt_name is not None:
        events = registry.history(prompt_name)
        served = {m.client_id: _served_at(events, m.label, m.rev) for m in members}
    if as_json:
        rows = [m.model_dump(mode="json") for m in members]
        if prompt_name is not None:
            for row in rows:
                version, rollout = served[row["client_id"]]
                row["prompt"], row["version"] = prompt_name, version
                row["rollout"] = None if rollout is None else {"version": rollout[0], "percent": rollout[1]}
        print_json(rows)
        _notices(read, err=True)  # the JSON stays a list of members
        return
    if prompt is not None:
        click.echo(render_labels(prompt))
    if not members:
        click.echo("no client reports to this registry (clients on Redis do; files and PostgreSQL keep no fleet)")
        _notices(read, err=False)
        return
    versions = {client: _served_cell(*cell) for client, cell in served.items()}
    click.echo(render_table(members, versions if prompt_name is not None else None))
    behind = f"; {len(now.lagging)} behind" if now.lagging else ""
    click.echo(f"{len(members)} clients; registry at rev {now.rev}{behind}")
    _notices(read, err=False)


def render_labels(prompt: Prompt) -> str:
    """What ``fleet --prompt`` prints above the table: one line per label of the prompt,
    ``movie-critic production: stable v3 90%, candidate v4 10%`` for a label with a rollout,
    ``movie-critic staging: v2`` for one without."""
    from promptreg.registry.cli.rollout import describe_running  # rollout imports this module

    if not prompt.labels:
        return f"{escape_control(prompt.name)}: no labels"
    lines = []
    for label, version in sorted(prompt.labels.items()):
        running = prompt.rollouts.get(label)
        text = f"{label}: v{version}" if running is None else describe_running(label, version, running)
        lines.append(escape_control(f"{prompt.name} {text}"))
    return "\n".join(lines)


def _served_cell(version: int | None, rollout: tuple[int, float] | None) -> int | str | None:
    """The VERSION cell: the version, or ``3 (v4 10%)`` when a rollout splits the label."""
    if version is None or rollout is None:
        return version
    from promptreg.registry.cli.rollout import format_percent  # rollout imports this module

    return f"{version} (v{rollout[0]} {format_percent(rollout[1])})"


def _notices(read: FleetRead, *, err: bool) -> None:
    if read.truncated:
        click.echo(truncated_notice(), err=err)
    if read.malformed:
        records = "record" if read.malformed == 1 else "records"
        click.echo(
            f"{read.malformed} {records} skipped: not a client's report (malformed, or forged without a valid "
            "expiry; see docs/security.md)",
            err=err,
        )


def render_table(members: list[FleetMember], versions: Mapping[str, int | str | None] | None) -> str:
    """The ``promptreg fleet`` table: one line per member, every cell escaped (no control character
    of a record reaches the terminal, see the module docstring)."""
    now = datetime.now(UTC)
    headers = ["CLIENT", "HOST:PID", "LABEL", "REV", "STATE", "LAST SEEN"]
    if versions is not None:
        headers.append("VERSION")
    rows = []
    for m in members:
        row = [m.client_name or m.client_id, f"{m.host}:{m.pid}", m.label, str(m.rev), m.state, _ago(m.last_seen, now)]
        if versions is not None:
            served = versions.get(m.client_id)
            row.append("-" if served is None else str(served))
        rows.append([escape_control(cell) for cell in row])
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in [headers, *rows])  # fmt: skip
