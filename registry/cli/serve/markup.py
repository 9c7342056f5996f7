"""The console's markup: one escaping function (:func:`html`), the page frame, and small pieces
every console page uses (tables, label chips, times). Values reach markup only through :func:`html`,
which escapes them unless they are :class:`Html` built here already."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from urllib.parse import quote, urlencode

from promptreg.registry.cli.serve.auth import ANONYMOUS, Identity

# -- markup ---------------------------------------------------------------------------------------


class Html(str):
    """Markup built by this module: :func:`html` inserts it as it is."""

    __slots__ = ()


def html(template: str, **values: object) -> Html:
    """``template`` with each ``{name}`` replaced by its value: escaped text (``None``: nothing),
    or :class:`Html` as it is. The one place where values meet markup."""
    safe = {k: v if isinstance(v, Html) else escape("" if v is None else str(v)) for k, v in values.items()}
    return Html(template.format_map(safe))


def join(parts: Iterable[Html]) -> Html:
    """Pieces of markup, one after the other."""
    return Html("".join(parts))


def prompt_url(name: str, **query: object) -> str:
    """The console page of ``name`` (its slashes kept), with ``query``."""
    params = {k: v for k, v in query.items() if v is not None}
    return "/p/" + quote(name, safe="/") + ("?" + urlencode(params) if params else "")


def when(moment: datetime) -> Html:
    return html('<time datetime="{iso}">{text}</time>', iso=moment.isoformat(), text=f"{moment:%Y-%m-%d %H:%M:%S}")


def chips(labels: Mapping[str, int]) -> Html:
    return join(html('<span class="chip">{label}: {v}</span>', label=k, v=v) for k, v in sorted(labels.items()))


def table(columns: Sequence[str], rows: Iterable[Html], empty: str) -> Html:
    head = join(html('<th scope="col">{c}</th>', c=c) for c in columns)
    body = join(rows) or html('<tr><td colspan="{n}" class="empty">{e}</td></tr>', n=len(columns), e=empty)
    return html('<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>',
                head=head, body=body)  # fmt: skip


def options(values: Iterable[int], selected: int | None) -> Html:
    return join(html('<option value="{v}"{s}>{v}</option>', v=v, s=Html(" selected" * (v == selected))) for v in values)


def pretty(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


# -- who is looking -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who a page is for: the identity, whether it came by the console's cookie, whether the server
    has tokens at all (without any it is read-only)."""

    identity: Identity
    by_cookie: bool
    tokens: bool

    @property
    def can_write(self) -> bool:
        return self.identity is not ANONYMOUS and self.identity.may("writer")

    @property
    def can_approve(self) -> bool:
        """Approver or admin: may decide another identity's move request (the API's rule too)."""
        return self.identity is not ANONYMOUS and self.identity.may("approver")


def who(viewer: Viewer | None) -> Html:
    if viewer is None:
        return Html("")
    if not viewer.tokens:
        return Html('<p class="who"><span class="badge">read-only</span> this server has no tokens configured</p>')
    out = html('<p class="who">Signed in as <strong>{n}</strong> ({r})', n=viewer.identity.name, r=viewer.identity.role)
    if not viewer.can_write:
        out = html('{o} <span class="badge">read-only</span>', o=out)
    if viewer.by_cookie:
        out = html('{o} <button type="button" id="sign-out" class="link">Sign out</button>', o=out)
    return html("{o}</p>", o=out)


NAV = (("list", "/", "Prompts"), ("requests", "/requests", "Requests"))
"""The header's links: the page kind each one is, its path and text."""


def nav(kind: str) -> Html:
    links = join(
        html('<a href="{href}"{cur}>{text}</a>', href=href, text=text, cur=Html(' aria-current="page"' * (k == kind)))
        for k, href, text in NAV
    )
    return html('<nav class="links" aria-label="Console">{links}</nav>', links=links)


def page(
    title: str, body: Html, viewer: Viewer | None, *, kind: str, prompt: str = "", rev: int = 0, error: str = ""
) -> Html:
    """A whole page: the header (who is signed in), the message areas and ``body``; ``rev`` is the
    registry revision it shows (the script follows the change stream from there)."""
    return html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} · promptreg</title>'
        '<link rel="stylesheet" href="/static/console.css"><script src="/static/console.js" defer></script></head>'
        '<body data-page="{kind}" data-prompt="{prompt}" data-write="{write}" data-rev="{rev}">'
        '<a class="skip" href="#main">Skip to the content</a>'
        '<header class="top"><a class="brand" href="/">promptreg</a>{nav}{who}'
        '<span id="live" class="live" hidden></span></header>'
        '<div id="messages" class="messages" role="alert">{error}</div>'
        '<div id="notices" class="notices" role="status" aria-live="polite"></div>'
        '<main id="main">{body}</main><noscript><p class="messages">Without JavaScript the console is read-only '
        "and does not update itself.</p></noscript></body></html>",
        title=title, kind=kind, prompt=prompt, rev=rev, write="1" if viewer and viewer.can_write else "0",
        who=who(viewer), nav=nav(kind) if viewer else "", body=body,
        error=html('<p class="error">{e}</p>', e=error) if error else "",
    )  # fmt: skip


def sign_in_page() -> Html:
    form = Html(
        '<section class="card narrow"><h1>Sign in</h1><p>This server needs a token: paste the one '
        "<code>promptreg token NAME --role ROLE</code> printed. The console keeps a session cookie, never the token."
        '</p><form id="sign-in" class="stack"><label for="token">Token</label>'
        '<input id="token" name="token" type="password" autocomplete="off" required autofocus>'
        '<button type="submit">Sign in</button></form></section>'
    )
    return page("Sign in", form, None, kind="sign-in")
