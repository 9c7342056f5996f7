"""``promptreg serve``: the HTTP API, the change stream and the web console (docs/serve.md).

The application is :func:`promptreg.registry.cli.serve.app.create_app` (Starlette, run by uvicorn:
the ``[serve]`` extra). This module holds the two commands, ``serve`` and ``token``, and loads the
web framework only when ``serve`` runs.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path

import click

from promptreg.registry.cli.options import current_settings
from promptreg.registry.errors import ConfigurationError
from promptreg.registry.urls import redact_url

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (or ``localhost``)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command()
@click.option("--url", "url", default=None, help="The registry (default: the global --url / PROMPTREG_URL).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True, help="Port (0: any free one).")
@click.option(
    "--tokens",
    "tokens_file",
    default=None,
    help="Token file (NAME ROLE sha256:HEX per line; also PROMPTREG_SERVE_TOKENS_FILE / PROMPTREG_SERVE_TOKENS).",
)
@click.option("--heartbeat", type=click.FloatRange(0.05, 3600), default=15.0, show_default=True,
              help="Seconds between the change stream's heartbeats.")  # fmt: skip
@click.option("--max-streams", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="Change streams open at once; more are refused with 503 until one closes.")  # fmt: skip
@click.option("--no-console", is_flag=True, help="Serve the API only, no web console.")
@click.option("--webhooks", "run_webhooks", is_flag=True,
              help="Also run the webhook delivery worker, in a thread of the server (docs/webhooks.md).")  # fmt: skip
def serve(
    url: str | None, host: str, port: int, tokens_file: str | None, heartbeat: float, max_streams: int,
    no_console: bool, run_webhooks: bool,
) -> None:  # fmt: skip
    """Serve the registry over HTTP: the API (/api/v1, /openapi.json), the change stream
    (/api/v1/events) and the web console (/), until interrupted.

    With no tokens configured the server is read-only and listens on loopback only.
    """
    try:
        import uvicorn

        from promptreg.registry.cli.serve.app import create_app
        from promptreg.registry.cli.serve.auth import TokenStore
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("uvicorn", "starlette", "anyio", "h11"):
            raise
        raise ConfigurationError(
            f"promptreg serve needs the [serve] extra ({exc.name} is missing): pip install 'promptreg-live[serve]'"
        ) from None
    settings = current_settings()
    url = url or settings.url
    tokens = TokenStore.load(tokens_file)
    if not tokens and not is_loopback(host):
        raise ConfigurationError(
            f"--host {host}: with no tokens configured the server listens on loopback only "
            "(configure tokens, docs/serve.md)"
        )
    app = create_app(url, namespace=settings.namespace or None, tokens=tokens, heartbeat=heartbeat,
                     max_streams=max_streams, console=not no_console)  # fmt: skip
    mode = f"{len(tokens)} token(s)" if tokens else "no tokens: read-only"
    click.echo(f"promptreg serve: {redact_url(url)} on http://{host}:{port} ({mode}); Ctrl-C to stop", err=True)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", lifespan="on", timeout_graceful_shutdown=2,
        server_header=False, proxy_headers=False,
    )  # fmt: skip
    if run_webhooks:  # the delivery worker in a thread, stopped with the server (docs/webhooks.md)
        from promptreg.registry.cli.webhooks import server_with_webhooks

        server = server_with_webhooks(config, url, settings.namespace or None)
    else:
        server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise ConfigurationError("promptreg serve did not start (see the lines above)")


@click.command()
@click.argument("name")
@click.option("--role", type=click.Choice(["reader", "writer", "approver", "admin"]), default="reader",
              show_default=True)  # fmt: skip
@click.option("--file", "token_file", default=None,
              help="Append the token's line to this token file (created readable by you only).")  # fmt: skip
def token(name: str, role: str, token_file: str | None) -> None:
    """Make a token for promptreg serve: prints the token (once; keep it secret) on stdout, and adds
    its line (NAME ROLE sha256:HEX: a hash, never the token) to --file, or prints it on stderr."""
    from promptreg.registry.cli.serve.auth import TokenStore, new_token, token_line

    secret = new_token()
    line = token_line(name, role, secret)
    if token_file is None:
        click.echo(secret)
        click.echo(f"add this line to the token file (PROMPTREG_SERVE_TOKENS_FILE):\n{line}", err=True)
        return
    path = Path(token_file)
    existing = TokenStore.load(str(path), environ={}) if path.exists() else TokenStore()
    if name in existing.names():
        raise ConfigurationError(f"{token_file}: a token named {name!r} is there already")
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    click.echo(secret)
    click.echo(f"added {name} ({role}) to {token_file}", err=True)
