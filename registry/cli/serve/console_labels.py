"""A prompt's page in the console: its labels table and the direct move form.

A protected label (docs/governance.md) is marked in the table and offers a request
(console_requests.py), never a move: the move form neither suggests nor defaults to it, and
console.js refuses it in the preview, before anything is sent (the registry would refuse it too,
:class:`~promptreg.ProtectedLabelError`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from promptreg.registry.cli.serve.markup import Html, Viewer, html, join, options, prompt_url, table
from promptreg.registry.models import AuditEvent, Prompt

MOVES = ("set_label", "rollback", "delete_label")
"""The history actions that move a label."""


def serving(label: str, fleet: dict[str, Any]) -> str:
    total = fleet["clients"]
    count = fleet["labels"].get(label, {}).get("serving", 0)
    return f"{count} of {total} client{'' if total == 1 else 's'}" if total else "no reporting clients"


def rollback_targets(history: list[AuditEvent]) -> dict[str, int | None]:
    """Per label, where a rollback takes it: where it pointed before its last move."""
    targets: dict[str, int | None] = {}
    for event in history:
        if event.label is not None and event.action in MOVES:
            targets[event.label] = event.previous_version
    return targets


def label_row(prompt: Prompt, label: str, version: int | None, target: int | None, fleet: dict[str, Any],
              viewer: Viewer, approvals: int | None) -> Html:  # fmt: skip
    """One label; a protected one (``approvals`` set, perhaps not set yet) offers a request, never a move."""
    action = (
        Html("") if not viewer.can_write
        else html('<td><button type="button" class="request-move" data-label="{l}">Request move</button></td>',
                  l=label) if approvals is not None
        else Html('<td><span class="muted">nothing to roll back to</span></td>') if target is None
        else html('<td><button type="button" class="rollback" data-label="{l}">Roll back to {t}</button></td>',
                  l=label, t=target)
    )  # fmt: skip
    badge = "" if approvals is None else html(
        ' <span class="badge protected" title="moves only by an approved request">protected · {n} approval{s}</span>',
        n=approvals, s="" if approvals == 1 else "s",
    )  # fmt: skip
    return html(
        '<tr data-label="{l}" data-version="{v}" data-rollback-to="{t}" data-protected="{p}"><th scope="row">{l}{badge}'
        '</th><td class="num">{link}</td><td class="serving">{serving}</td>{action}</tr>',
        l=label, v=version, t=target, p=approvals, badge=badge, serving=serving(label, fleet), action=action,
        link=html('<a href="{url}">{v}</a>', url=prompt_url(prompt.name, v=version), v=version)
        if version is not None else Html('<span class="muted">not set</span>'),
    )  # fmt: skip


def labels_section(prompt: Prompt, history: list[AuditEvent], fleet: dict[str, Any], viewer: Viewer,
                   protected: Mapping[str, int]) -> Html:  # fmt: skip
    targets = rollback_targets(history)
    rows = [
        label_row(prompt, k, prompt.labels.get(k), targets.get(k), fleet, viewer, protected.get(k))
        for k in sorted(set(prompt.labels) | set(protected))
    ]
    if prompt.latest is not None:
        rows.append(html(
            '<tr class="latest"><th scope="row">latest <span class="muted">(the newest)</span></th><td class="num">'
            '<a href="{url}">{v}</a></td><td class="serving">{serving}</td>{action}</tr>',
            url=prompt_url(prompt.name, v=prompt.latest.version), v=prompt.latest.version,
            serving=serving("latest", fleet), action=Html("<td></td>" if viewer.can_write else ""),
        ))  # fmt: skip
    columns = ("Label", "Version", "Fleet serving it") + (("Roll back or request",) if viewer.can_write else ())
    return html(
        '<section id="labels" class="card" data-live aria-labelledby="labels-title"><h2 id="labels-title">Labels</h2>'
        "{table}</section>",
        table=table(columns, rows, "No labels yet."),
    )


def no_move_section(viewer: Viewer) -> Html:
    """In place of the move form: why there is none."""
    why = (
        "Nothing to promote: the prompt has no versions yet." if viewer.can_write
        else "Moving labels needs a writer or admin token; " + (
            f"{viewer.identity.name} is a {viewer.identity.role}." if viewer.tokens
            else "this server has no tokens configured.")
    )  # fmt: skip
    return html('<section id="move" class="card"><h2>Promote or roll back</h2><p>{why}</p></section>', why=why)


def move_section(prompt: Prompt, protected: Mapping[str, int]) -> Html:
    """The direct move: its suggestions and default leave the protected labels out (console.js refuses them)."""
    numbers = [v.version for v in prompt.versions]
    movable = sorted(set(prompt.labels) - set(protected))
    label = "production" if "production" in movable else movable[0] if movable else ""
    if not label and "production" not in protected:
        label = "production"
    names = join(html('<option value="{l}"></option>', l=name) for name in movable)
    return html(
        '<section id="move" class="card" aria-labelledby="move-title"><h2 id="move-title">Promote or roll back</h2>'
        '<form id="move-form" class="stack"><div class="row"><div class="field"><label for="move-label">Label</label>'
        '<input id="move-label" name="label" list="label-names" value="{label}" required autocomplete="off" '
        'maxlength="64"><datalist id="label-names" data-live-options>{names}</datalist></div>'
        '<div class="field"><label for="move-version">Version</label><select id="move-version" name="version" '
        "data-live-options>{versions}</select></div></div>"
        '<div class="field"><label for="move-reason">Reason (kept in the history)</label>'
        '<input id="move-reason" name="reason" maxlength="500" autocomplete="off"></div>'
        '<div class="actions"><button type="submit" id="move-preview">Preview</button></div>'
        '<div id="move-check" class="check" role="status" tabindex="-1" hidden></div>'
        '<div id="move-force-row" class="force" hidden><input type="checkbox" id="move-force">'
        '<label for="move-force">Force this incompatible move (recorded as forced)</label></div>'
        '<div class="actions"><button type="button" id="move-confirm" class="primary" disabled>Confirm</button></div>'
        '<div id="move-result" class="result" role="status"></div></form></section>',
        label=label, names=names, versions=options(reversed(numbers), numbers[-1] if numbers else None),
    )  # fmt: skip
