"""The console's pieces for protected labels and move requests (docs/governance.md): the
``/requests`` page, and on a prompt's page its open requests and the "Request a move" form.

Who sees which control follows the API's roles (registry/cli/serve/governance.py), which the
buttons call: a writer (or stronger) requests a move; an approver (or stronger) approves or rejects
another identity's open request and applies an approved one. The identity is the token's name, so
a viewer gets no Approve or Reject button on a request it made; the registry refuses those anyway
(:class:`~promptreg.ApprovalError`), the buttons only spare the round trip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple
from urllib.parse import urlencode

from starlette.requests import Request

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.markup import Html, Viewer, html, join, options, prompt_url, table
from promptreg.registry.cli.serve.server import Server
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.governance import MoveRequest, RequestState
from promptreg.registry.models import Prompt, utcnow

OPEN = (RequestState.PENDING, RequestState.APPROVED)
"""The states a request can still be decided or applied in."""
STATES = tuple(state.value for state in RequestState)
LISTED = 200
"""The most requests the ``/requests`` page shows (the newest)."""


def age(moment: datetime, now: datetime) -> Html:
    """How long ago ``moment`` was, coarsely ("5 min ago"), with the exact time as its title."""
    seconds = max(0, int((now - moment).total_seconds()))
    text = (
        "just now" if seconds < 5
        else f"{seconds} s ago" if seconds < 60
        else f"{seconds // 60} min ago" if seconds < 3600
        else f"{seconds // 3600} h ago" if seconds < 86400
        else f"{seconds // 86400} d ago"
    )  # fmt: skip
    return html('<time datetime="{iso}" title="{at} UTC">{text}</time>', iso=moment.isoformat(),
                at=f"{moment:%Y-%m-%d %H:%M:%S}", text=text)  # fmt: skip


def unset(version: int | None) -> str:
    return "unset" if version is None else str(version)


def decide_button(r: MoveRequest, action: str, text: str) -> Html:
    return html(
        '<button type="button" class="decide" data-action="{a}" data-request="{id}" '
        'aria-label="{text} the move of {label} of {prompt} to {v}">{text}</button>',
        a=action, id=r.id, text=text, label=r.label, prompt=r.prompt, v=r.version,
    )  # fmt: skip


def actions(r: MoveRequest, viewer: Viewer) -> Html:
    """The decisions ``viewer`` may take on ``r``: none on its own request, one approval each."""
    me = viewer.identity.name
    mine = r.author == me
    approved = any(a.author == me for a in r.approvals)
    buttons = []
    if r.state is RequestState.PENDING and not mine and not approved:
        buttons.append(decide_button(r, "approve", "Approve"))
    if r.state is RequestState.APPROVED:
        buttons.append(decide_button(r, "apply", "Apply"))
    if r.state in OPEN and not mine:
        buttons.append(decide_button(r, "reject", "Reject"))
    note = "your request" if mine and r.state in OPEN else "you approved" if approved and r.state in OPEN else ""
    return html('<td class="decisions">{buttons}{note}</td>', buttons=join(buttons),
                note=html('<span class="muted">{n}</span>', n=note) if note else "")  # fmt: skip


def request_row(r: MoveRequest, viewer: Viewer, now: datetime, with_prompt: bool) -> Html:
    names = ", ".join(a.author for a in r.approvals)
    return html(
        '<tr data-request="{id}" data-prompt="{prompt}" data-label="{label}" data-from="{frm}" data-to="{to}" '
        'data-state="{state}" data-approvals="{n}" data-required="{need}" data-author="{author}">{prompt_cell}'
        '<td>{label}</td><td class="num">{moves}</td><td><span class="state {state}" title="expires {exp} UTC">'
        '{state}</span></td><td><span class="num">{n}/{need}</span>{names}</td><td>{author}</td><td>{reason}</td>'
        "<td>{age}</td>{actions}</tr>",
        id=r.id, prompt=r.prompt, label=r.label, frm="" if r.from_version is None else r.from_version, to=r.version,
        state=r.state.value, n=len(r.approvals), need=r.approvals_required, author=r.author, reason=r.reason,
        moves=f"{unset(r.from_version)} → {r.version}", exp=f"{r.expires_at:%Y-%m-%d %H:%M}",
        age=age(r.created_at, now),
        names=html(' <span class="muted">({n})</span>', n=names) if names else "",
        prompt_cell=html('<th scope="row"><a href="{url}">{p}</a></th>', url=prompt_url(r.prompt), p=r.prompt)
        if with_prompt else "",
        actions=actions(r, viewer) if viewer.can_approve else "",
    )  # fmt: skip


def requests_table(requests: Iterable[MoveRequest], viewer: Viewer, now: datetime, *, with_prompt: bool,
                   empty: str) -> Html:  # fmt: skip
    columns = (
        (("Prompt",) if with_prompt else ())
        + ("Label", "From → to", "State", "Approvals", "Requested by", "Reason", "Age")
        + (("Decide",) if viewer.can_approve else ())
    )
    return table(columns, [request_row(r, viewer, now, with_prompt) for r in requests], empty)


DECIDE = Html(
    '<section id="decide" class="card" aria-labelledby="decide-title" hidden><h2 id="decide-title">Decide</h2>'
    '<div id="decide-plan" class="check" tabindex="-1"></div><div id="decide-reason-row" class="field">'
    '<label for="decide-reason">Why (optional, kept with the rejection)</label>'
    '<input id="decide-reason" maxlength="500" autocomplete="off"></div><div class="actions">'
    '<button type="button" id="decide-confirm" class="primary">Confirm</button>'
    '<button type="button" id="decide-cancel">Cancel</button></div></section>'
    '<div id="decide-result" class="result" role="status"></div>'
)
"""What a Decide button opens (console.js fills it): the request's move, then Confirm."""


def decide_panel(viewer: Viewer) -> Html:
    return DECIDE if viewer.can_approve else Html("")


# -- on a prompt's page ---------------------------------------------------------------------------


class Governance(NamedTuple):
    """A prompt's protected labels (label -> approvals), its open requests (newest first), and when
    they were read."""

    protected: dict[str, int]
    requests: list[MoveRequest]
    now: datetime


def read_governance(registry: PromptRegistry, name: str) -> Governance:
    """What a prompt's page shows of its protection (blocking: the registry's reads)."""
    protected = {p.label: p.approvals for p in registry.protected_labels(name)}
    found = [r for state in OPEN for r in registry.list_requests(name=name, state=state, limit=LISTED)]
    found.sort(key=lambda r: (r.created_at, r.id), reverse=True)
    return Governance(protected, found, utcnow())


def prompt_requests_section(name: str, requests: list[MoveRequest], protected: Mapping[str, int], viewer: Viewer,
                            now: datetime) -> Html:  # fmt: skip
    """The prompt's open requests (hidden while it has neither those nor a protected label)."""
    return html(
        '<section id="requests" class="card" data-live aria-labelledby="requests-title"{hidden}>'
        '<h2 id="requests-title">Open move requests</h2>{table}<p><a href="{url}">Every request of {name}</a></p>'
        "</section>{decide}",
        hidden=Html(" hidden" * (not requests and not protected)), name=name,
        url="/requests?" + urlencode({"prompt": name}), decide=decide_panel(viewer),
        table=requests_table(requests, viewer, now, with_prompt=False, empty="No open requests."),
    )  # fmt: skip


def request_section(prompt: Prompt, protected: Mapping[str, int]) -> Html:
    """The "Request a move" form of a writer (hidden while no label is protected: console.js shows
    it when a live update brings one)."""
    numbers = [v.version for v in prompt.versions]
    labels = join(
        html('<option value="{l}">{l} ({n} approval{s})</option>', l=label, n=n, s="" if n == 1 else "s")
        for label, n in sorted(protected.items())
    )  # fmt: skip
    return html(
        '<section id="request" class="card" aria-labelledby="request-title"{hidden}>'
        '<h2 id="request-title">Request a move</h2><p class="muted">A protected label moves when another '
        'identity approves the request.</p><form id="request-form" class="stack"><div class="row"><div class="field">'
        '<label for="request-label">Protected label</label><select id="request-label" name="label" '
        'data-live-options>{labels}</select></div><div class="field"><label for="request-version">Version</label>'
        '<select id="request-version" name="version" data-live-options>{versions}</select></div></div>'
        '<div class="field"><label for="request-reason">Reason (the approvers read it)</label>'
        '<input id="request-reason" name="reason" maxlength="500" autocomplete="off" required></div>'
        '<div class="actions"><button type="submit" id="request-send" class="primary">Request move</button></div>'
        '<div id="request-result" class="result" role="status"></div></form></section>',
        hidden=Html(" hidden" * (not protected)), labels=labels,
        versions=options(reversed(numbers), numbers[-1] if numbers else None),
    )  # fmt: skip


# -- the /requests page ---------------------------------------------------------------------------


def requests_body(requests: list[MoveRequest], viewer: Viewer, now: datetime, state: str | None,
                  prompt: str | None) -> Html:  # fmt: skip
    states = join(
        html('<option value="{v}"{s}>{t}</option>', v=v, t=t, s=Html(" selected" * (v == (state or ""))))
        for v, t in (("", "any (open first)"), *((s, s) for s in STATES))
    )  # fmt: skip
    n = len(requests)
    count = f"{n} {state + ' ' if state else ''}request{'' if n == 1 else 's'}" + (f" of {prompt}" if prompt else "")
    if n == LISTED:
        count += f" (the newest {LISTED})"
    return html(
        '<h1>Move requests</h1><p class="muted">A protected label moves only when identities other than the '
        "requester approve the request.</p>"
        '<form class="search" method="get" action="/requests"><label for="state">State</label>'
        '<select id="state" name="state">{states}</select><label for="prompt">Prompt</label>'
        '<input id="prompt" name="prompt" value="{prompt}" maxlength="128" autocomplete="off">'
        '<button type="submit">Filter</button></form>'
        '<section id="request-list" data-live><p class="count">{count}</p>{table}</section>{decide}',
        states=states, prompt=prompt, count=count, decide=decide_panel(viewer),
        table=requests_table(requests, viewer, now, with_prompt=True,
                             empty="No move requests: a writer requests the move of a protected label on its page."),
    )  # fmt: skip


async def requests_page(server: Server, request: Request, viewer: Viewer) -> tuple[str, Html, str, int]:
    """``/requests?state=&prompt=``: newest first, the open ones first unless a state is chosen.
    Raises :class:`~promptreg.InvalidInputError` for an unknown state or an over-long prompt name
    (:class:`~promptreg.InvalidNameError` for an invalid one)."""
    state = request.query_params.get("state") or None
    prompt = request.query_params.get("prompt", "").strip() or None
    if state is not None and state not in STATES:
        raise InvalidInputError(f"unknown request state {state[:20]!r}: one of {', '.join(STATES)}")
    if prompt is not None and len(prompt) > 128:
        raise InvalidInputError("the prompt filter is at most 128 characters")

    def read() -> tuple[int, list[MoveRequest]]:
        rev = server.registry.revision()  # first: a write after it is replayed to the page's stream
        return rev, server.registry.list_requests(name=prompt, state=state, limit=LISTED)

    rev, found = await api.blocking(read)
    found.sort(key=lambda r: r.state not in OPEN)  # stable: newest first within each group
    return "Requests", requests_body(found, viewer, utcnow(), state, prompt), "", rev
