"""``promptreg history NAME``: the audit trail of a prompt, with the label moves of its partials.

A prompt that includes partials (``{{> safety}}``) changes when a partial's label moves, with no
write of its own. So its timeline also shows those moves, marked ``partial NAME:``: the moves of
every ``(partial, label)`` its labels' compositions follow now (a ``{{> safety}}`` of a
``production`` prompt follows ``safety``'s ``production``, a ``{{> safety@staging}}`` follows
``staging``, a fixed ``{{> safety@3}}`` nothing), made since the prompt was created, merged by
revision. ``--no-partials`` shows the prompt's own trail only. With ``--json`` every entry is an
audit event (the models' own fields); a partial's carries ``"partial": true`` (its ``prompt`` is
the partial's name).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.governance import GOVERNANCE_ACTIONS, describe_governance_event
from promptreg.registry.cli.options import current_registry, json_option, print_json
from promptreg.registry.cli.rollout import ROLLOUT_ACTIONS, describe_rollout_event
from promptreg.registry.composition import PromptsGraph, compose, composes
from promptreg.registry.errors import CompositionError
from promptreg.registry.models import AuditEvent, Prompt, describe_label_move


def followed_partials(registry: PromptRegistry, prompt: Prompt) -> set[tuple[str, str]]:
    """The ``(partial, label)`` pairs the compositions of ``prompt``'s labels follow now, at any
    depth (a label that cannot compose is left out)."""
    graph = PromptsGraph(registry.get_prompt, dict)  # compose reads prompts only, never the index
    follows: set[tuple[str, str]] = set()
    for label, number in sorted(prompt.labels.items()):
        version = prompt.get_version_by_number(number)
        if version is None or not composes(version):
            continue
        try:
            follows |= compose(graph, prompt.name, label, version).follows
        except CompositionError:
            continue
    return follows


def partial_moves(registry: PromptRegistry, prompt: Prompt, since: int) -> list[AuditEvent]:
    """The label moves (and rollout steps) of the partials ``prompt`` follows, after revision
    ``since``, oldest first."""
    follows = followed_partials(registry, prompt)
    moves: list[AuditEvent] = []
    for partial in sorted({name for name, _ in follows}):
        events = registry.history(partial)
        moves.extend(e for e in events if e.rev > since and e.label is not None and (partial, e.label) in follows)
    return sorted(moves, key=lambda event: event.rev)


@click.command()
@click.argument("name")
@click.option(
    "--partials/--no-partials",
    "with_partials",
    default=True,
    help="Also show the label moves of the partials NAME includes, marked 'partial' (default: shown).",
)
@json_option
def history(name: str, with_partials: bool, as_json: bool) -> None:
    """Show the audit trail of NAME: versions added and label moves (who, when, from, to, why), and
    the label moves of the partials ({{> partial}}) its labels include (--no-partials: not those)."""
    registry = current_registry(reading=True)
    events = registry.history(name)
    prompt = registry.get_prompt(name)
    moves: list[AuditEvent] = []
    if with_partials and prompt is not None and events:
        moves = partial_moves(registry, prompt, events[0].rev)
    merged = sorted([(e, False) for e in events] + [(e, True) for e in moves], key=lambda pair: pair[0].rev)
    if as_json:
        print_json([{**e.model_dump(mode="json"), **({"partial": True} if partial else {})} for e, partial in merged])
        return
    messages = {v.version: v.message for v in prompt.versions} if prompt else {}
    shares: dict[tuple[str, str | None], float | None] = {}  # each label's rollout share, to say "widened"
    for event, partial in merged:
        what = _describe(event, messages if not partial else {}, shares)
        if partial:
            what = f"partial {event.prompt}: {what}"
        click.echo(f"{_when(event.at)}  rev {event.rev:<6} {event.author or '-':<12} {what}")


def _describe(event: AuditEvent, messages: dict[int, str | None], shares: dict[tuple[str, str | None], Any]) -> str:
    """One event in words (``shares`` remembers each label's rollout share, updated here)."""
    if event.action == "create_prompt":
        return "created"
    if event.action == "add_version":
        note = messages.get(event.version or 0)
        return f"version {event.version}" + (f": {note}" if note else "")
    if event.action == "set_compatibility":
        return f"compatibility {event.compatibility}" + (f"  ({event.reason})" if event.reason else "")
    if event.action in GOVERNANCE_ACTIONS or event.request is not None:  # protections, requests, approved moves
        what = describe_governance_event(event)
    elif event.action in ROLLOUT_ACTIONS:
        key = (event.prompt, event.label)
        what = describe_rollout_event(event, shares.get(key)) + (" [forced]" if event.forced else "")
        shares[key] = event.percent if event.action in ("start_rollout", "set_rollout") else None
    else:
        move = describe_label_move(event.label, event.previous_version, event.version)
        what = f"{event.action} {move}" + (" [forced]" if event.forced else "")
    return what + (f"  ({event.reason})" if event.reason else "")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")
