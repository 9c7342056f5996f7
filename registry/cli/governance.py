"""``promptreg protect``, ``unprotect``, ``request``, ``approve``, ``reject``, ``apply``, ``requests``:
protected labels and the approvals that move them (docs/governance.md).

A protected label moves only through a request that identities other than the requester approve
(:mod:`promptreg.registry.governance`). The identity is ``--author`` / ``PROMPTREG_AUTHOR``:
``request``, ``approve``, ``reject`` and ``apply`` refuse to run without one, since approvals compare
identities. The store's own roles decide the rest (on Redis and PostgreSQL a writer cannot approve:
:class:`~promptreg.RegistryAuthError`). Each write prints one line (``--json``: the audit event for
``protect``/``unprotect``, the :class:`~promptreg.MoveRequest` for the others); errors are the
group's one ``error: ...`` line. ``history`` words the governance entries with
:func:`describe_governance_event`.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.fleet import EXIT_INCOMPLETE, describe_wait, read_fleet_view, wait_option
from promptreg.registry.cli.options import author_option, current_registry, json_option, print_json
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.fleet import escape_control
from promptreg.registry.governance import (
    DEFAULT_EXPIRES_IN,
    MAX_APPROVALS,
    MAX_EXPIRES_IN,
    MAX_LISTED,
    MoveRequest,
    RequestState,
)
from promptreg.registry.models import AuditEvent, describe_label_move

_F = TypeVar("_F", bound=Callable[..., Any])

GOVERNANCE_ACTIONS = frozenset(
    {"protect_label", "unprotect_label", "request_move", "approve_request", "reject_request"}
)
"""The audit actions :func:`describe_governance_event` words (an applied move is a ``set_label``)."""


# -- words ----------------------------------------------------------------------------------------


def _approvals(count: int) -> str:
    return f"{count} approval" + ("" if count == 1 else "s")


def describe_request(request: MoveRequest) -> str:
    """``production 3 -> 4``: the move a request asks for."""
    return describe_label_move(request.label, request.from_version, request.version)


def describe_governance_event(event: AuditEvent) -> str:
    """A governance audit entry in words, as ``history`` prints it:

    - ``protected production (2 approvals)``, ``unprotected production``
    - ``requested production 3 -> 4 (request 3f2a9c0d1e4b5a67)``
    - ``approved request 3f2a9c0d1e4b5a67: production 3 -> 4`` (``rejected`` likewise)
    - a move an approval applied (a ``set_label`` with ``request``): ``set_label production 3 -> 4
      (request 3f2a9c0d1e4b5a67)``
    """
    label = event.label or "?"
    move = describe_label_move(event.label, event.previous_version, event.version)
    request = f"request {event.request}" if event.request else "a request"
    if event.action == "protect_label":
        return f"protected {label}" + (f" ({_approvals(event.approvals)})" if event.approvals else "")
    if event.action == "unprotect_label":
        return f"unprotected {label}"
    if event.action == "request_move":
        return f"requested {move} ({request})"
    if event.action in ("approve_request", "reject_request"):
        verb = "approved" if event.action == "approve_request" else "rejected"
        return f"{verb} {request}: {move}"
    return f"{event.action} {move}" + (f" ({request})" if event.request else "")


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _count(request: MoveRequest) -> str:
    return f"{len(request.approvals)}/{request.approvals_required}"


def _require_author(author: str | None) -> str:
    """The identity, or the one-line refusal: approvals compare identities, so none is no answer."""
    if author is None or not author.strip():
        raise InvalidInputError("--author (or PROMPTREG_AUTHOR) is required: approvals compare identities")
    return author


# -- the writes -----------------------------------------------------------------------------------

_reason_option = click.option("--reason", help="Why (kept in the audit trail).")


@click.command()
@click.argument("name")
@click.argument("label")
@click.option(
    "--approvals",
    type=click.IntRange(1, MAX_APPROVALS),
    default=1,
    show_default=True,
    help="How many identities other than the requester must approve each move.",
)
@author_option
@_reason_option
@json_option
def protect(name: str, label: str, approvals: int, author: str | None, reason: str | None, as_json: bool) -> None:
    """Protect LABEL of NAME: from now on it moves only through an approved request (`promptreg request`).

    `label`, `rollback` and `rollout` then refuse it. Protecting again changes the count for later
    requests. An admin's write where the store enforces roles (Redis ACL, PostgreSQL roles).
    """
    event = current_registry().protect_label(name, label, approvals=approvals, author=author, reason=reason)
    if as_json:
        print_json(event.model_dump(mode="json"))
    else:
        click.echo(f"{name}: label {label} protected (each move needs {_approvals(approvals)})")


@click.command()
@click.argument("name")
@click.argument("label")
@author_option
@_reason_option
@json_option
def unprotect(name: str, label: str, author: str | None, reason: str | None, as_json: bool) -> None:
    """Remove the protection of LABEL of NAME: direct moves work again (an admin's write)."""
    event = current_registry().unprotect_label(name, label, author=author, reason=reason)
    if as_json:
        print_json(event.model_dump(mode="json"))
    else:
        click.echo(f"{name}: label {label} no longer protected")


@click.command(name="request")
@click.argument("name")
@click.argument("label")
@click.argument("version")
@click.option("--reason", required=True, help="Why the label should move (required; the approvers read it).")
@click.option(
    "--expires-in",
    type=click.IntRange(1, MAX_EXPIRES_IN),
    default=DEFAULT_EXPIRES_IN,
    show_default=True,
    metavar="SECONDS",
    help="How long the request may wait for its approvals (at most 30 days).",
)
@author_option
@json_option
def request_command(
    name: str, label: str, version: str, reason: str, expires_in: int, author: str | None, as_json: bool
) -> None:
    """Ask to move protected LABEL of NAME to VERSION (a number, or another label's version); prints
    the request's id, which the approvers pass to `promptreg approve`."""
    identity = _require_author(author)
    registry = current_registry()
    number = int(version) if version.isdigit() else registry.get_version(name, label=version).version
    made = registry.request_label_move(name, label, number, author=identity, reason=reason, expires_in=expires_in)
    if as_json:
        print_json(made.model_dump(mode="json"))
    else:
        click.echo(made.id)


@click.command()
@click.argument("request_id", metavar="ID")
@click.option("--no-apply", is_flag=True, help="Record the approval only; move the label later with `promptreg apply`.")
@wait_option
@author_option
@json_option
def approve(request_id: str, no_apply: bool, wait: float | None, author: str | None, as_json: bool) -> None:
    """Approve request ID (not your own; each identity once). The approval that completes the count
    moves the label in the same write, unless --no-apply; --wait then waits for the fleet to serve it."""
    identity = _require_author(author)
    registry = current_registry()
    decided = registry.approve(request_id, author=identity, apply=not no_apply)
    if not as_json:
        head = f"{decided.prompt}: request {decided.id} approved by {escape_control(identity)}"
        if decided.state is RequestState.APPLIED:
            click.echo(f"{head}: label {describe_request(decided)}")
        elif decided.state is RequestState.APPROVED:
            click.echo(f"{head} ({_count(decided)}); move the label with: promptreg apply {decided.id}")
        else:
            click.echo(f"{head} ({_count(decided)} approvals)")
    _settle(registry, decided, wait, as_json)


def _settle(registry: PromptRegistry, request: MoveRequest, wait: float | None, as_json: bool) -> None:
    """Print ``request`` as JSON (with ``--json``) and, with ``--wait`` and a move made, wait until
    every reporting client serves it: exit 3 if some did not (as ``label --wait`` does)."""
    payload = request.model_dump(mode="json")
    if wait is None or request.applied_rev is None:
        if as_json:
            print_json(payload)
        return
    view = read_fleet_view(registry)
    result = registry.wait_for_fleet(request.applied_rev, timeout=wait)
    complete = result.complete and not view.truncated
    if as_json:
        print_json({**payload, "fleet": {**result.model_dump(mode="json"), "complete": complete}})
    else:
        click.echo(describe_wait(result), err=not complete)
    if not complete:
        click.get_current_context().exit(EXIT_INCOMPLETE)


@click.command()
@click.argument("request_id", metavar="ID")
@author_option
@_reason_option
@json_option
def reject(request_id: str, author: str | None, reason: str | None, as_json: bool) -> None:
    """Reject request ID (not your own): it can no longer be approved or applied."""
    identity = _require_author(author)
    decided = current_registry().reject(request_id, author=identity, reason=reason)
    if as_json:
        print_json(decided.model_dump(mode="json"))
    else:
        click.echo(f"{decided.prompt}: request {decided.id} rejected by {escape_control(identity)}")


@click.command(name="apply")
@click.argument("request_id", metavar="ID")
@wait_option
@author_option
@json_option
def apply_command(request_id: str, wait: float | None, author: str | None, as_json: bool) -> None:
    """Move the label of request ID, approved earlier with --no-apply (a compare-and-set from where
    the label pointed when it was requested)."""
    identity = _require_author(author)
    registry = current_registry()
    applied = registry.apply_request(request_id, author=identity)
    if not as_json:
        click.echo(f"{applied.prompt}: request {applied.id} applied: label {describe_request(applied)}")
    _settle(registry, applied, wait, as_json)


# -- the list -------------------------------------------------------------------------------------


@click.command()
@click.option("--pending", is_flag=True, help="Only the requests waiting for approvals (not expired).")
@click.option("--prompt", "name", metavar="NAME", help="Only the requests of this prompt.")
@click.option("--label", help="Only the requests of this label.")
@click.option("--id", "request_id", metavar="ID", help="This one request, in full (approvals, decision).")
@click.option(
    "--limit", type=click.IntRange(1, MAX_LISTED), default=100, show_default=True, help="The newest this many."
)
@json_option
def requests(
    pending: bool, name: str | None, label: str | None, request_id: str | None, limit: int, as_json: bool
) -> None:
    """The move requests of protected labels, newest first: id, prompt, label, the move, state,
    approvals (given/needed), who asked and when. --id ID: one request in full."""
    registry = current_registry(reading=True)
    if request_id is not None:
        if pending or name is not None or label is not None:
            raise click.UsageError("--id takes no other filter")
        found = registry.get_request(request_id)
        if as_json:
            print_json(found.model_dump(mode="json"))
        else:
            for line in _detail(found):
                click.echo(escape_control(line))
        return
    listed = registry.list_requests(
        name=name, label=label, state=RequestState.PENDING if pending else None, limit=limit
    )
    if as_json:
        print_json([request.model_dump(mode="json") for request in listed])
        return
    if not listed:
        click.echo("no pending requests" if pending else "no requests")
        return
    headers = ["ID", "PROMPT", "LABEL", "MOVE", "STATE", "APPROVALS", "REQUESTED", "BY", "REASON"]
    rows = [
        [r.id, r.prompt, r.label, describe_request(r).partition(" ")[2], r.state.value, _count(r),
         _when(r.created_at), r.author, r.reason]
        for r in listed
    ]  # fmt: skip
    table = [headers, *([escape_control(cell) for cell in row] for row in rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _detail(request: MoveRequest) -> list[str]:
    """``requests --id``: one request, a line per fact."""
    lines = [
        f"request {request.id}: {request.prompt} {describe_request(request)}",
        f"state: {request.state.value} ({_count(request)} approvals)",
        f"requested: {_when(request.created_at)} by {request.author}: {request.reason}",
        f"expires: {_when(request.expires_at)}",
    ]
    lines += [f"approved: {_when(approval.at)} by {approval.author}" for approval in request.approvals]
    if request.state is RequestState.REJECTED:
        why = f": {request.decision_reason}" if request.decision_reason else ""
        lines.append(f"rejected: {_when(request.decided_at)} by {request.decided_by or '-'}{why}")
    elif request.state is RequestState.APPLIED:
        lines.append(f"applied: {_when(request.decided_at)} by {request.decided_by or '-'} (rev {request.applied_rev})")
    return lines


COMMANDS = (protect, unprotect, request_command, approve, reject, apply_command, requests)
"""The commands of this module, as :mod:`promptreg.registry.cli.main` registers them."""
