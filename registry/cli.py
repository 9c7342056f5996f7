"""``promptreg``: the command line (thin: it parses, calls the library, prints).

This module holds the group (global options, the one place errors become a line), the two
commands that use :mod:`client` (``watch``, ``demo``) and ``main``; the other commands live in
:mod:`registry.cli_prompts` and :mod:`registry.cli_sync`, the demo's scenario in :mod:`registry.demo`.

Every command that shows data takes ``--json`` and then prints the models' own fields
(``model_dump(mode="json")``). Errors print one line, ``error: ...``, on stderr and exit 1; usage
errors exit 2; a traceback is never shown. The registry comes from ``--url`` / ``PROMPTREG_URL``
(default: the JSON file ``./.promptreg/registry.json``) and, for Redis, ``--namespace`` /
``PROMPTREG_NAMESPACE``. Passwords in URLs are never printed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import queue
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
import redis
from click.core import ParameterSource

from registry.base import PromptRegistry
from registry.cli_acl import acl_command
from registry.cli_options import current_settings, json_option
from registry.cli_prompts import create, diff, history, label, list_prompts, push, render, rollback, show
from registry.cli_sync import export_command, import_command, sync
from registry.demo import SERVER_CHOICES, demo_server, run_demo
from registry.errors import PromptRegistryError, RegistryUnavailableError
from registry.factory import DEFAULT_URL, NAMESPACE_ENV, URL_ENV, PromptRegistryFactory
from registry.urls import REDIS_SCHEMES, redact_url, url_secrets


@dataclass
class Settings:
    """What the global options chose; the registry is opened on first use."""

    url: str
    namespace: str | None
    _registry: PromptRegistry | None = field(default=None, repr=False)

    def registry(self) -> PromptRegistry:
        """The registry ``url`` names (opened on first use; raises what the factory raises)."""
        if self._registry is None:
            env = {URL_ENV: self.url, NAMESPACE_ENV: self.namespace or ""}
            self._registry = PromptRegistryFactory.create_from_config(env)
        return self._registry

    def close(self) -> None:
        """Close the registry if it was opened; never raises."""
        if self._registry is not None:
            with contextlib.suppress(Exception):  # closing must never turn a result into a traceback
                self._registry.close()
            self._registry = None


class _Group(click.Group):
    """Turns every library error into one ``error: ...`` line and exit code 1, in one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # usage errors (exit 2), ctx.exit() and Ctrl-C keep click's own handling
        except PromptRegistryError as exc:
            _fail(ctx, str(exc))
        except redis.RedisError as exc:  # the backends translate these; this is the safety net
            _fail(ctx, f"redis: {exc}")
        except OSError as exc:
            reason = exc.strerror or str(exc)
            _fail(ctx, f"{exc.filename}: {reason}" if exc.filename else reason)
        except UnicodeError as exc:  # e.g. an argument that is not valid UTF-8
            _fail(ctx, f"input is not valid UTF-8 text: {getattr(exc, 'reason', exc)}")
        except Exception as exc:  # a bug, not bad input: still one line, never a traceback
            if os.environ.get("PROMPTREG_DEBUG") == "1":
                raise
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc} (set PROMPTREG_DEBUG=1 for a traceback)")


def _fail(ctx: click.Context, message: str) -> NoReturn:
    settings = ctx.find_object(Settings)
    if settings is not None:
        message = _scrub(message, settings.url)
    # Hostile input may carry lone surrogates or control characters: show them escaped, on one line.
    text = " ".join(message.split()).encode("utf-8", "backslashreplace").decode("utf-8")
    text = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
    click.echo(f"error: {text}", err=True)
    ctx.exit(1)


def _scrub(message: str, url: str) -> str:
    # A backend error might quote the URL; hide its password wherever it appears.
    message = message.replace(url, redact_url(url))
    for secret in url_secrets(url):
        message = message.replace(secret, "***")
    return message


# -- the command group ---------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar=URL_ENV,
    default=DEFAULT_URL,
    show_default=True,
    help="Registry URL: redis://[user:password@]host:port/db or file://path.json (env PROMPTREG_URL).",
)
@click.option(
    "--namespace",
    envvar=NAMESPACE_ENV,
    help="Redis key namespace, default 'promptreg'; ignored for files (env PROMPTREG_NAMESPACE).",
)
@click.version_option(package_name="promptreg")
@click.pass_context
def cli(ctx: click.Context, url: str, namespace: str | None) -> None:
    """promptreg: prompts with immutable versions and movable labels."""
    settings = Settings(url, namespace)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


@click.command()
@click.argument("name", required=False)
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="Seconds to connect.")
@json_option
def watch(name: str | None, timeout: float, as_json: bool) -> None:
    """Print every change (of NAME, or of every prompt) as it happens, until interrupted.

    With --json, one JSON object per line (the client's ChangeEvent fields).
    """
    from client import ChangeEvent, PromptClient  # the CLI is the one part of registry/ that uses client/

    settings = current_settings()
    events: queue.SimpleQueue[ChangeEvent] = queue.SimpleQueue()

    def collect(event: ChangeEvent) -> None:
        if name is None or event.name == name:
            events.put(event)

    # The client logs its own troubles; here the status line below reports them, once.
    logging.getLogger("promptreg").addHandler(logging.NullHandler())
    previous = signal.signal(signal.SIGTERM, _interrupt)
    client = PromptClient(settings.url, namespace=settings.namespace or None, start_timeout=timeout)
    try:
        if not client.wait_ready(0):
            reason = client.status().last_error or f"no answer within {timeout:g} s"
            raise RegistryUnavailableError(f"cannot watch {redact_url(settings.url)}: {reason}")
        # Registered once the first state is in, so only changes after it are printed.
        client.on_change(collect)
        click.echo(f"watching {redact_url(settings.url)} (rev {client.status().rev}); Ctrl-C to stop", err=True)
        state = client.status().state
        while True:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                now = client.status()
                if now.state is not state:
                    state = now.state
                    detail = f": {now.last_error}" if now.last_error and state.value != "live" else ""
                    click.echo(f"[{state.value}{detail}]", err=True)
                continue
            click.echo(json.dumps(dataclasses.asdict(event)) if as_json else _describe(event))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()


def _describe(event: Any) -> str:
    if event.label is None:
        return f"rev {event.rev}  {event.name}: created"
    if event.label == "latest":
        return f"rev {event.rev}  {event.name}: new version {event.version}"
    before = "unset" if event.previous_version is None else event.previous_version
    after = "deleted" if event.version is None else event.version
    return f"rev {event.rev}  {event.name}: label {event.label} {before} -> {after}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


# -- demo ---------------------------------------------------------------------------------------


@click.command(name="demo")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Client processes.")
@click.option(
    "--seconds",
    type=click.FloatRange(0.0, 60.0),
    default=1.0,
    show_default=True,
    help="How long the workers serve between two moves.",
)
@click.option(
    "--server",
    type=click.Choice(SERVER_CHOICES),
    default="auto",
    show_default=True,
    envvar="PROMPTREG_DEMO_SERVER",
    help="Without PROMPTREG_URL: which Redis to start (env PROMPTREG_DEMO_SERVER).",
)
@click.option("--keep", is_flag=True, help="Keep the demo's namespace in Redis afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the measurements as JSON.")
@click.pass_context
def demo(ctx: click.Context, workers: int, seconds: float, server: str, keep: bool, as_json: bool) -> None:
    """The movie-critic scenario, live: label moves reaching client processes, timed."""
    report: Callable[[str], None] = (lambda line: None) if as_json else click.echo
    url = _given_url(ctx, report)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # docker stop: clean up like Ctrl-C
    try:
        with demo_server(url, server) as (server_url, description, writer):
            report(f"promptreg demo: using {description}")
            result = run_demo(
                server_url,
                server=description,
                workers=workers,
                seconds=seconds,
                report=report,
                keep=keep,
                writer=writer,
            )
    except KeyboardInterrupt:
        click.echo("interrupted: workers and server stopped", err=True)
        ctx.exit(130)
    finally:
        signal.signal(signal.SIGTERM, previous)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    rate = result.lookups_per_second
    click.echo(
        f"lookups: {result.lookups:,} get()+render() in {result.seconds:.1f} s by {result.workers} workers "
        f"on {os.cpu_count()} CPUs = {rate:,.0f}/s ({rate / result.workers:,.0f}/s per worker); "
        f"{result.cpu_seconds_per_lookup * 1e6:.2f} us of CPU per lookup"
    )
    slowest = max(move.seconds for move in result.moves)
    click.echo(f"every move reached every worker within {slowest * 1000:.1f} ms; no restart, no deploy.")


def _given_url(ctx: click.Context, report: Callable[[str], None]) -> str | None:
    parent = ctx.parent
    if parent is None or parent.get_parameter_source("url") in (None, ParameterSource.DEFAULT):
        return None
    url = str(parent.params["url"])
    if url.partition("://")[0].lower() in REDIS_SCHEMES:
        return url
    report(f"PROMPTREG_URL {redact_url(url)} is not Redis; the demo starts its own Redis")
    return None


for command in (create, push, label, rollback, show, render, list_prompts, history, diff):
    cli.add_command(command)
for command in (sync, export_command, import_command, watch, demo, acl_command):
    cli.add_command(command)


def main(argv: list[str] | None = None) -> None:
    """The console script ``promptreg``."""
    cli.main(args=argv, prog_name="promptreg")


if __name__ == "__main__":
    main()
