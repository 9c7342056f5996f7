"""The web console of ``promptreg serve``: the prompt list at ``/`` and one prompt at ``/p/<name>``;
its labels and move form are built in console_labels.py, the move requests of protected labels
(``/requests``, and a prompt's own) in console_requests.py.

Pages are built here, from the same reads as the API, and work without the script for reading;
``static/console.js`` adds what needs it: signing in and out, the label moves, move requests and
their decisions (through the API, with the session cookie and the ``X-Promptreg-Console`` header),
and live updates (it follows ``/api/v1/events`` and swaps the sections marked ``data-live`` with the
same page fetched anew, so each section has one rendering, this one). Every value reaches the
markup through :func:`html`, which escapes it unless it is :class:`Html` built here already. A page
needs the identity an API read needs: without one, on a server with tokens, the page is the
sign-in form (401).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response
from starlette.routing import Route

from promptreg.registry.cli.serve import api
from promptreg.registry.cli.serve.auth import AuthenticationRequiredError
from promptreg.registry.cli.serve.console_labels import labels_section, move_section, no_move_section
from promptreg.registry.cli.serve.console_requests import (
    Governance,
    prompt_requests_section,
    read_governance,
    request_section,
    requests_page,
)
from promptreg.registry.cli.serve.markup import (
    Html,
    Viewer,
    chips,
    html,
    join,
    options,
    page,
    pretty,
    prompt_url,
    sign_in_page,
    table,
    when,
)
from promptreg.registry.cli.serve.server import Server, status_of
from promptreg.registry.errors import InvalidInputError, PromptNotFoundError, PromptRegistryError, VersionNotFoundError
from promptreg.registry.models import AuditEvent, Prompt, PromptVersion

STATIC = Path(__file__).parent / "static"
ASSETS = {"console.js": "text/javascript", "console.css": "text/css"}
"""The files served at ``/static/`` (no other path under the folder is)."""
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
"""Every page: nothing but this server's own script, style and requests; never framed or cached."""
MODES = {
    "none": "every move is accepted",
    "backward": "a label moves only to a version its callers can render: no new inputs, same type",
    "full": "a label moves only to a version with exactly the same inputs and type",
}


# -- the prompt list ------------------------------------------------------------------------------


def prompt_row(p: dict[str, Any]) -> Html:
    return html(
        '<tr data-search="{search}"><th scope="row"><a href="{url}">{name}</a></th><td>{desc}</td>'
        '<td class="chips">{chips}</td><td class="num">{latest}</td></tr>',
        search=p["name"].lower(), url=prompt_url(p["name"]), name=p["name"],
        desc=p["description"], chips=chips(p["labels"]), latest=p["latest"],
    )  # fmt: skip


def list_body(data: dict[str, Any], query: str, cursor: str | None) -> Html:
    rows = [prompt_row(p) for p in data["prompts"]]
    empty = f"No prompt matches “{query}”." if query else "No prompts yet: promptreg create NAME."
    pager = []
    if cursor:
        pager.append(html('<a href="/?{q}">First page</a>', q=urlencode({"q": query})))
    if data["next_cursor"]:
        pager.append(html('<a href="/?{q}">Next page</a>', q=urlencode({"q": query, "cursor": data["next_cursor"]})))
    count = f"{data['total']} prompt{'' if data['total'] == 1 else 's'}" + (f" matching “{query}”" if query else "")
    return html(
        '<h1>Prompts</h1><form class="search" role="search" method="get" action="/">'
        '<label for="q">Search prompts</label><input id="q" name="q" type="search" value="{query}" '
        'autocomplete="off" maxlength="128"><button type="submit">Search</button></form>'
        '<section id="prompt-list" data-live><p class="count">{count}</p>{table}'
        '<p id="filter-empty" class="empty" hidden>No prompt on this page matches the filter.</p>'
        '<nav class="pager" aria-label="Pages">{pager}</nav></section>',
        query=query, count=count, table=table(("Name", "Description", "Labels", "Latest"), rows, empty),
        pager=join(pager),
    )  # fmt: skip


# -- one prompt -----------------------------------------------------------------------------------


def version_row(prompt: Prompt, v: PromptVersion, shown: int | None) -> Html:
    labels = [label for label, number in sorted(prompt.labels.items()) if number == v.version]
    return html(
        '<tr{cur}><th scope="row" class="num"><a href="{url}">{n}</a></th><td>{type}</td><td>{chips}</td>'
        "<td>{author}</td><td>{message}</td><td>{at}</td></tr>",
        cur=Html(' aria-current="true"' if v.version == shown else ""), url=prompt_url(prompt.name, v=v.version),
        n=v.version, type=v.type, chips=join(html('<span class="chip">{l}</span>', l=label) for label in labels),
        author=v.author, message=v.message, at=when(v.created_at),
    )  # fmt: skip


def versions_section(prompt: Prompt, shown: int | None) -> Html:
    return html(
        '<section id="versions" class="card" data-live aria-labelledby="versions-title">'
        '<h2 id="versions-title">Versions</h2>{table}</section>',
        table=table(("Version", "Type", "Labels", "Author", "Message", "Created (UTC)"),
                    [version_row(prompt, v, shown) for v in reversed(prompt.versions)], "No versions yet."),
    )  # fmt: skip


def message_item(message: Mapping[str, str]) -> Html:
    if "placeholder" in message:
        return html('<li class="placeholder">placeholder: <code>{p}</code></li>', p=message["placeholder"])
    return html('<li><span class="role">{r}</span><pre class="text">{c}</pre></li>', r=message.get("role"),
                c=message.get("content"))  # fmt: skip


def version_section(version: PromptVersion | None) -> Html:
    if version is None:
        return Html('<section id="version" class="card"><h2>Version</h2><p class="empty">No versions.</p></section>')
    inputs = sorted(version.variables) + [f"{p} (placeholder)" for p in sorted(version.placeholders)]
    body = (
        html('<pre class="text">{t}</pre>', t=version.prompt_text)
        if version.messages is None
        else html('<ol class="chat">{items}</ol>', items=join(message_item(m) for m in version.messages))
    )
    return html(
        '<section id="version" class="card" aria-labelledby="version-title">'
        '<h2 id="version-title">Version {n} <span class="muted">{type}</span></h2>'
        '<dl class="meta"><dt>Author</dt><dd>{author}</dd><dt>Created</dt><dd>{at} UTC</dd><dt>Message</dt>'
        "<dd>{message}</dd><dt>Inputs</dt><dd>{inputs}</dd><dt>sha256</dt><dd><code>{sha}</code></dd></dl>"
        '{body}<h3>Config</h3><pre class="json">{config}</pre><h3>Metadata</h3><pre class="json">{metadata}</pre>'
        "</section>",
        n=version.version, type=version.type, author=version.author or "—", at=when(version.created_at),
        message=version.message or "—", inputs=", ".join(inputs) or "none", sha=api.content_sha256(version)[:16],
        body=body, config=pretty(version.config), metadata=pretty(version.metadata),
    )  # fmt: skip


DIFF_KINDS = (("+++", "file"), ("---", "file"), ("@@", "hunk"), ("+", "add"), ("-", "del"), ("\\", "note"))
"""A unified diff line's first characters and its class (the style colours ``add`` and ``del``)."""


def diff_result(prompt: Prompt, old: int, new: int) -> Html:
    data = api.diff_json(prompt.name, version_of(prompt, old), version_of(prompt, new))
    lines = join(
        html('<span class="{k}">{line}</span>', k=next((k for p, k in DIFF_KINDS if line.startswith(p)), "same"),
             line=line)
        for line in data["diff"].splitlines()
    )  # fmt: skip
    changed = [
        html("<p><strong>{what}</strong>: <code>{a}</code> → <code>{b}</code></p>", what=what,
             a=json.dumps(data[what]["from"], sort_keys=True), b=json.dumps(data[what]["to"], sort_keys=True))
        for what in ("config", "metadata") if data[what]["from"] != data[what]["to"]
    ]  # fmt: skip
    note = "Identical." if data["identical"] else f"{old} → {new}" + ("" if data["diff"] else ": the same content")
    return html('<p class="muted">{note}</p>{diff}{changed}', note=note, changed=join(changed),
                diff=html('<pre class="diff">{lines}</pre>', lines=lines) if data["diff"] else "")  # fmt: skip


def diff_section(prompt: Prompt, pair: tuple[int, int] | None, shown: int | None) -> Html:
    numbers = [v.version for v in prompt.versions] or [0]
    old, new = pair or (numbers[-2] if len(numbers) > 1 else numbers[0], numbers[-1])
    return html(
        '<section id="diff" class="card" aria-labelledby="diff-title"><h2 id="diff-title">Compare versions</h2>'
        '<form id="diff-form" class="row" method="get" action="{action}">{hidden}'
        '<div class="field"><label for="diff-from">From</label><select id="diff-from" name="from" data-live-options>'
        '{old}</select></div><div class="field"><label for="diff-to">To</label><select id="diff-to" name="to" '
        'data-live-options>{new}</select></div><div class="actions"><button type="submit">Show diff</button></div>'
        '</form><div id="diff-result">{result}</div></section>',
        action=prompt_url(prompt.name), old=options(numbers, old), new=options(numbers, new),
        hidden=html('<input type="hidden" name="v" value="{v}">', v=shown) if shown is not None else "",
        result=diff_result(prompt, *pair) if pair else "",
    )  # fmt: skip


def moved(e: AuditEvent) -> str:
    if e.action == "set_compatibility":
        return f"mode {e.compatibility}"
    if e.previous_version is None and e.version is None:
        return ""
    return f"{'—' if e.previous_version is None else e.previous_version} → {'—' if e.version is None else e.version}"


def history_section(history: list[AuditEvent]) -> Html:
    rows = [
        html('<tr><td class="num">{rev}</td><td>{at}</td><td>{action}</td><td>{label}</td><td>{moved}</td>'
             "<td>{who}</td><td>{why}</td><td>{forced}</td></tr>", rev=e.rev, at=when(e.at), action=e.action,
             label=e.label, moved=moved(e), who=e.author, why=e.reason, forced="forced" if e.forced else "")
        for e in reversed(history)
    ]  # fmt: skip
    columns = ("Rev", "When (UTC)", "Action", "Label", "From → to", "Who", "Why", "Forced")
    return html(
        '<section id="history" class="card" data-live aria-labelledby="history-title">'
        '<h2 id="history-title">History</h2>{table}</section>',
        table=table(columns, rows, "No history."),
    )


def version_of(prompt: Prompt, number: int) -> PromptVersion:
    found = prompt.get_version_by_number(number)
    if found is None:
        raise VersionNotFoundError(prompt.name, number)
    return found


def prompt_body(prompt: Prompt, history: list[AuditEvent], fleet: dict[str, Any], viewer: Viewer,
                shown: int | None, pair: tuple[int, int] | None, gov: Governance) -> Html:  # fmt: skip
    version = version_of(prompt, shown) if shown is not None else prompt.latest
    writes = viewer.can_write and prompt.versions
    return html(
        '<nav class="crumbs" aria-label="Breadcrumb"><a href="/">Prompts</a> /</nav><h1>{name}</h1>'
        '<p class="description">{desc}</p><p>Compatibility: <strong>{mode}</strong> <span class="muted">({explain})'
        '</span></p><div class="cols">{labels}<div>{move}{request}</div></div>{requests}{versions}'
        '<div id="version-slot">{version}</div>{diff}{history}',
        name=prompt.name, desc=prompt.description or "", mode=prompt.compatibility, explain=MODES[prompt.compatibility],
        labels=labels_section(prompt, history, fleet, viewer, gov.protected), versions=versions_section(prompt, shown),
        move=move_section(prompt, gov.protected) if writes else no_move_section(viewer),
        request=request_section(prompt, gov.protected) if writes else "",
        requests=prompt_requests_section(prompt.name, gov.requests, gov.protected, viewer, gov.now),
        version=version_section(version), diff=diff_section(prompt, pair, shown), history=history_section(history),
    )  # fmt: skip


def number_param(request: Request, key: str) -> int | None:
    raw = request.query_params.get(key)
    return None if raw is None or raw == "" else int(api.version_number(raw, key))


# -- routes ---------------------------------------------------------------------------------------

Build = Callable[[Request, Viewer], Awaitable[tuple[str, Html, str, int]]]
"""A page's builder: its title, body, the prompt it shows ("" on the list) and the revision it shows."""


def console_routes(server: Server) -> list[Route]:
    """The console's routes: ``/`` (the prompt list), ``/p/<name>`` (one prompt), ``/requests`` (move
    requests, :mod:`~promptreg.registry.cli.serve.console_requests`) and ``/static/<file>``."""

    def guarded(build: Build, kind: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                identity, by_cookie = server.identify(request)
                server.require(request, "reader")
            except AuthenticationRequiredError:
                return HTMLResponse(sign_in_page(), 401, headers=HEADERS)
            viewer = Viewer(identity, by_cookie, bool(server.tokens))
            try:
                title, body, prompt, rev = await build(request, viewer)
            except PromptRegistryError as exc:
                failed = page("Error", Html('<p><a href="/">Back to the prompts</a></p>'), viewer, kind=kind,
                              error=f"{type(exc).__name__}: {exc}")  # fmt: skip
                return HTMLResponse(failed, status_of(exc), headers=HEADERS)
            return HTMLResponse(page(title, body, viewer, kind=kind, prompt=prompt, rev=rev), headers=HEADERS)

        return endpoint

    async def list_page(request: Request, viewer: Viewer) -> tuple[str, Html, str, int]:
        query = request.query_params.get("q", "").strip()
        cursor = request.query_params.get("cursor") or None
        if len(query) > 128 or (cursor is not None and len(cursor) > 128):
            raise InvalidInputError("the search and the cursor are at most 128 characters")
        catalog = await api.blocking(server.catalog)
        needle = query.lower()
        names = [name for name in catalog.names if needle in name.lower()] if needle else None
        data = await api.blocking(api.prompt_page, catalog, server.descriptions, "", api.DEFAULT_PAGE, cursor, names)
        return "Prompts", list_body(data, query, cursor), "", catalog.rev

    async def prompt_page(request: Request, viewer: Viewer) -> tuple[str, Html, str, int]:
        name = request.path_params["name"]
        shown, old, new = (number_param(request, key) for key in ("v", "from", "to"))
        pair = (old, new) if old is not None and new is not None else None

        def read() -> tuple[int, Prompt, list[AuditEvent], dict[str, Any], Governance]:
            rev = server.registry.revision()  # first: a write after it is replayed to the page's stream
            prompt = server.registry.get_prompt(name)
            if prompt is None:
                raise PromptNotFoundError(name)
            history = server.registry.history(name)
            fleet = api.label_fleet(prompt, history, server.registry.fleet())
            return rev, prompt, history, fleet, read_governance(server.registry, name)

        rev, prompt, history, fleet, gov = await api.blocking(read)
        return prompt.name, prompt_body(prompt, history, fleet, viewer, shown, pair, gov), prompt.name, rev

    async def static(request: Request) -> Response:
        file = request.path_params["file"]
        if file not in ASSETS:
            return Response("not found", 404, media_type="text/plain")
        return FileResponse(STATIC / file, media_type=ASSETS[file], headers={"Cache-Control": "no-cache"})

    return [
        Route("/", guarded(list_page, "list"), methods=["GET"]),
        Route("/p/{name:path}", guarded(prompt_page, "prompt"), methods=["GET"]),
        Route("/requests", guarded(functools.partial(requests_page, server), "requests"), methods=["GET"]),
        Route("/static/{file}", static, methods=["GET"]),
    ]
