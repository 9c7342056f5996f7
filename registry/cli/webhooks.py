"""``promptreg webhooks``: signed webhooks of the audit trail (add, list, remove, dead-letters, run).

The registry stores each endpoint (:mod:`promptreg.registry.webhooks`) with the NAME of the
environment variable holding its signing secret (``--secret-env``): the secret itself is never
stored or printed; the delivery worker (``webhooks run``, or ``promptreg serve --webhooks``) reads
it from its own environment. URLs are shown without their credentials.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import click

from promptreg.registry.cli.options import current_registry, json_option, print_json
from promptreg.registry.errors import ConfigurationError
from promptreg.registry.factory import NAMESPACE_ENV, URL_ENV, PromptRegistryFactory
from promptreg.registry.fleet import escape_control
from promptreg.registry.webhooks import (
    DeliverySettings,
    WebhookEndpoint,
    WebhookNotFoundError,
    WebhookWorker,
    add_webhook,
    new_endpoint,
    webhook_store,
)
from promptreg.registry.webhooks.models import (
    DEFAULT_MAX_ATTEMPTS,
    FORMATS,
    MAX_MAX_ATTEMPTS,
    MIN_MAX_ATTEMPTS,
    Cursor,
    DeadLetter,
    validate_endpoint_id,
)
from promptreg.registry.webhooks.signing import read_secret

logger = logging.getLogger("promptreg.webhooks")


def endpoint_json(endpoint: WebhookEndpoint, cursor: Cursor | None = None, dead: int | None = None) -> dict[str, Any]:
    """An endpoint as ``--json`` prints it: its fields, the URL without credentials, its cursor
    (without the body of a message waiting for its retry) and how many dead letters it has."""
    data = endpoint.model_dump(mode="json")
    data["url"] = endpoint.display_url
    if cursor is not None:
        data["cursor"] = cursor.model_dump(mode="json", exclude={"pending": {"body"}})
    if dead is not None:
        data["dead_letters"] = dead
    return data


def _table(headers: list[str], rows: list[list[str]]) -> None:
    table = [headers, *([escape_control(cell) for cell in row] for row in rows)]
    widths = [max(len(cell) for cell in column) for column in zip(*table, strict=True)]
    for row in table:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


@click.group(name="webhooks")
def webhooks() -> None:
    """Signed webhooks of the audit trail (docs/webhooks.md): add, list, remove, dead-letters, run.

    Every audit entry (label moves, approvals, every other write) and the fleet's confirmation of
    each label move are POSTed as JSON to each endpoint, signed per Standard Webhooks, at least once,
    in order, by the delivery worker (`webhooks run`).
    """


@webhooks.command()
@click.argument("endpoint_url", metavar="URL")
@click.option("--secret-env", required=True, metavar="VAR",
              help="NAME of the environment variable holding the signing secret in the worker's environment "
              "(whsec_<base64> or any text of 16+ bytes); the secret itself is never stored.")  # fmt: skip
@click.option("--events", "events", multiple=True, metavar="PATTERNS",
              help="Event types to send: label.moved, request.*, fleet.*, audit.<action>... (globs; comma-separated "
              "or repeated; default: all).")  # fmt: skip
@click.option("--format", "body_format", type=click.Choice(FORMATS), default="standard", show_default=True,
              help="standard: the event as JSON; slack: {\"text\": ...} for a Slack incoming webhook.")  # fmt: skip
@click.option("--max-attempts", type=click.IntRange(MIN_MAX_ATTEMPTS, MAX_MAX_ATTEMPTS), default=DEFAULT_MAX_ATTEMPTS,
              show_default=True, help="Failed attempts of one message before it becomes a dead letter.")  # fmt: skip
@json_option
def add(
    endpoint_url: str, secret_env: str, events: tuple[str, ...], body_format: str, max_attempts: int, as_json: bool
) -> None:
    """Send the registry's events from now on to URL (http:// or https://)."""
    patterns = [part.strip() for value in events for part in value.split(",") if part.strip()] or ["*"]
    endpoint = new_endpoint(endpoint_url, secret_env, events=patterns, format=body_format, max_attempts=max_attempts)
    registry = current_registry()
    cursor = add_webhook(registry, webhook_store(registry), endpoint)
    try:
        read_secret(os.environ, secret_env)
    except ConfigurationError as exc:  # the worker may run elsewhere: say it, do not refuse
        why = str(exc).partition(": ")[2] if exc.args and str(exc).startswith("$") else "it is not set here"
        click.echo(f"note: ${secret_env}: {why}; the delivery worker needs it in its environment", err=True)
    if as_json:
        print_json(endpoint_json(endpoint, cursor, 0))
        return
    click.echo(f"added webhook {endpoint.id}: {endpoint.display_url} (events: {', '.join(endpoint.events)}; "
               f"format: {endpoint.format}; secret from ${secret_env}); from rev {cursor.rev} on")  # fmt: skip


@webhooks.command(name="list")
@json_option
def list_command(as_json: bool) -> None:
    """The endpoints, their cursors and dead letters, and the worker delivering now (if any)."""
    store = webhook_store(current_registry())
    endpoints = store.endpoints()
    cursors = {endpoint.id: store.cursor(endpoint.id) for endpoint in endpoints}
    dead = {endpoint.id: len(store.dead_letters(endpoint.id, limit=1_000_000)) for endpoint in endpoints}
    lease = store.lease()
    if as_json:
        print_json({
            "endpoints": [endpoint_json(e, cursors[e.id], dead[e.id]) for e in endpoints],
            "worker": None if lease is None else lease.model_dump(mode="json"),
        })  # fmt: skip
        return
    if not endpoints:
        click.echo("no webhook endpoints (promptreg webhooks add URL --secret-env VAR)")
    else:
        rows = []
        for e in endpoints:
            cursor = cursors[e.id]
            waiting = "-" if cursor is None or cursor.pending is None else (
                f"{cursor.pending.type} x{cursor.pending.attempts}")  # fmt: skip
            rows.append([e.id, e.display_url, ",".join(e.events), e.format, f"${e.secret_env}", str(e.max_attempts),
                         "-" if cursor is None else f"rev {cursor.rev}", waiting, str(dead[e.id])])  # fmt: skip
        _table(["ID", "URL", "EVENTS", "FORMAT", "SECRET", "ATTEMPTS", "CURSOR", "RETRYING", "DEAD"], rows)
    worker = "none running" if lease is None else f"{lease.holder} (lease until {_when(lease.expires_at)})"
    click.echo(f"worker: {escape_control(worker)}")


@webhooks.command()
@click.argument("endpoint_id", metavar="ID")
def remove(endpoint_id: str) -> None:
    """Remove endpoint ID, its cursor and its dead letters."""
    store = webhook_store(current_registry())
    validate_endpoint_id(endpoint_id)
    shown = next((e.display_url for e in store.endpoints() if e.id == endpoint_id), None)
    store.remove_endpoint(endpoint_id)
    click.echo(f"removed webhook {endpoint_id}" + (f" ({shown})" if shown else ""))


@webhooks.command(name="dead-letters")
@click.argument("endpoint_id", metavar="[ID]", required=False)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True, help="Newest first, at most.")
@json_option
def dead_letters(endpoint_id: str | None, limit: int, as_json: bool) -> None:
    """The messages given up on (of endpoint ID, or of all), newest first, with their last error;
    --json adds each body as it was sent."""
    store = webhook_store(current_registry())
    if endpoint_id is not None:
        validate_endpoint_id(endpoint_id)
        if store.cursor(endpoint_id) is None:
            raise WebhookNotFoundError(endpoint_id)
    letters: list[DeadLetter] = store.dead_letters(endpoint_id, limit=limit)
    if as_json:
        print_json([letter.model_dump(mode="json") for letter in letters])
        return
    if not letters:
        click.echo("no dead letters" + (f" for {endpoint_id}" if endpoint_id else ""))
        return
    rows = [[_when(x.at), x.endpoint, x.type, str(x.rev), x.id, str(x.attempts), x.error] for x in letters]
    _table(["AT", "ENDPOINT", "TYPE", "REV", "WEBHOOK-ID", "ATTEMPTS", "LAST ERROR"], rows)


def _seconds(name: str, default: float, help: str) -> Callable[[Any], Any]:
    return click.option(name, type=click.FloatRange(0.01, 86400), default=default, show_default=True, help=help)


@webhooks.command()
@click.option("--once", is_flag=True, help="Deliver what is pending (retries included), then exit.")
@_seconds("--poll-interval", 1.0, "Seconds between looks for new audit entries and endpoints.")
@_seconds("--lease-ttl", 15.0, "Seconds the delivery lease lasts unless renewed: how soon a standby worker takes over.")
@_seconds("--fleet-timeout", 30.0, "Seconds a label move waits for every client before fleet.lagging.")
@_seconds("--backoff-base", 2.0, "Seconds before the first retry (then x4 each time, with jitter).")
@_seconds("--backoff-max", 600.0, "The longest wait between two attempts.")
@_seconds("--connect-timeout", 5.0, "Seconds to connect (TCP and TLS).")
@_seconds("--read-timeout", 10.0, "Seconds to wait for each part of the response.")
@click.option("-q", "--quiet", is_flag=True, help="Log failures only, not each delivery.")
def run(
    once: bool, poll_interval: float, lease_ttl: float, fleet_timeout: float, backoff_base: float, backoff_max: float,
    connect_timeout: float, read_timeout: float, quiet: bool,
) -> None:  # fmt: skip
    """Deliver the audit trail to every endpoint until interrupted (one worker delivers at a time:
    a second one waits and takes over when the first stops or dies)."""
    settings = DeliverySettings(poll_interval=poll_interval, lease_ttl=lease_ttl, fleet_timeout=fleet_timeout,
                                backoff_base=backoff_base, backoff_max=max(backoff_max, backoff_base),
                                connect_timeout=connect_timeout, read_timeout=read_timeout)  # fmt: skip
    worker = WebhookWorker(current_registry(), settings=settings)
    worker.check_secrets()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    previous = signal.signal(signal.SIGTERM, lambda *_: worker.stop(timeout=0))
    try:
        delivered = worker.run(once=once)
    finally:
        signal.signal(signal.SIGTERM, previous)
        worker.stop(timeout=0)
        logger.removeHandler(handler)
    if once:
        click.echo(f"delivered {delivered} message(s)")


def start_background_worker(url: str, namespace: str | None) -> Callable[[], None]:
    """``promptreg serve --webhooks``: a :class:`~promptreg.registry.webhooks.WebhookWorker` on its
    own registry connection, in a daemon thread; returns the function that stops it (and closes
    the connection). Raises what the factory raises, and :class:`~promptreg.ConfigurationError`
    for an endpoint whose secret variable is missing."""
    registry = PromptRegistryFactory.create_from_config({URL_ENV: url, NAMESPACE_ENV: namespace or ""})
    worker = WebhookWorker(registry)
    try:
        worker.check_secrets()
    except BaseException:
        registry.close()
        raise
    worker.start()
    stopped = threading.Lock()

    def stop() -> None:
        if stopped.acquire(blocking=False):  # once: the server's shutdown, then its run() returning
            worker.stop()
            registry.close()

    return stop


def server_with_webhooks(config: Any, url: str, namespace: str | None) -> Any:
    """``promptreg serve --webhooks``: a ``uvicorn.Server`` for ``config`` with the delivery worker
    (:func:`start_background_worker`) started now and stopped when the server shuts down, before
    uvicorn re-raises the signal that stopped it (so the worker gives its lease up), or when
    :meth:`run` returns. Raises what :func:`start_background_worker` raises."""
    import uvicorn  # the [serve] extra: only ``serve`` needs it

    stop = start_background_worker(url, namespace)

    class WebhooksServer(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().shutdown(sockets)
            finally:
                await asyncio.to_thread(stop)

        def run(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                super().run(sockets)
            finally:
                stop()

    return WebhooksServer(config)
