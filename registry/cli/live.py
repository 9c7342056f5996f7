"""The two commands that run the read-side client: ``watch`` and ``demo``.

They are why :mod:`promptreg.registry.cli` is the one part of ``registry`` allowed to import :mod:`client`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import queue
import signal
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from promptreg.registry.cli.options import CliSettings, current_settings, json_option
from promptreg.registry.cli.rollout import describe_rollout
from promptreg.registry.errors import RegistryUnavailableError
from promptreg.registry.models import describe_label_move
from promptreg.registry.urls import POSTGRES_SCHEMES, REDIS_SCHEMES, redact_url, url_scheme


@click.command()
@click.argument("name", required=False)
@click.option("--timeout", type=click.FloatRange(0.1), default=10.0, show_default=True, help="Seconds to connect.")
@json_option
def watch(name: str | None, timeout: float, as_json: bool) -> None:
    """Print every change (of NAME, or of every prompt) as it happens, until interrupted.

    With --json, one JSON object per line (the client's ChangeEvent fields).
    """
    from promptreg.client import (  # the CLI is the one part of registry/ that uses client/
        ChangeEvent,
        ClientStatus,
        PromptClient,
    )

    settings = current_settings()
    # One queue, fed by the client's listener thread: changes and status transitions, in order.
    events: queue.SimpleQueue[ChangeEvent | ClientStatus] = queue.SimpleQueue()

    def collect(event: ChangeEvent) -> None:
        if name is None or event.name == name:
            events.put(event)

    # The client logs its own troubles; here the status lines below report them, once each.
    logging.getLogger("promptreg").addHandler(logging.NullHandler())
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # fleet_report=False: a watcher serves nothing, so `promptreg label --wait` must not wait for it.
    client = PromptClient(settings.url, namespace=settings.namespace or None, start_timeout=timeout, fleet_report=False)
    try:
        if not client.wait_ready(0):
            reason = client.status().last_error or f"no answer within {timeout:g} s"
            raise RegistryUnavailableError(f"cannot watch {redact_url(settings.url)}: {reason}")
        rollouts = _running_rollouts(settings)  # to tell a rollout's start from its change, and its end
        # Registered once the first state is in, so only what happens after it is printed.
        client.on_change(collect)
        client.on_status(events.put)
        click.echo(f"watching {redact_url(settings.url)} (rev {client.status().rev}); Ctrl-C to stop", err=True)
        while True:
            try:
                item = events.get(timeout=0.5)  # a timeout, so Ctrl-C is seen promptly
            except queue.Empty:
                continue
            if isinstance(item, ClientStatus):
                if item.state.value != "closed":
                    detail = f": {item.last_error}" if item.last_error and item.state.value != "live" else ""
                    click.echo(f"[{item.state.value}{detail}]", err=True)
                continue
            click.echo(json.dumps(dataclasses.asdict(item)) if as_json else _describe(item, rollouts))
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        client.close()


Rollouts = dict[tuple[str, str], tuple[int, float]]
"""``(name, label) -> (candidate, percent)``: the rollouts running, as ``watch`` has seen them."""


def _running_rollouts(settings: CliSettings) -> Rollouts:
    """The rollouts running when the watch begins; empty if the registry cannot say (the watch then
    tells a rollout's start from its change, or its abort, less precisely, and nothing else)."""
    try:
        found = settings.registry().list_rollouts()
    except Exception:  # best effort: watching must not fail on a read it only uses for its wording
        return {}
    return {(name, label): (r.version, r.percent) for name, labels in found.items() for label, r in labels.items()}


def _describe(event: Any, rollouts: Rollouts) -> str:
    """One change in words; ``rollouts`` (updated here) tells a rollout's steps apart: the client's
    change event says only the label's version before and after, and its rollout after."""
    if event.label is None:
        return f"rev {event.rev}  {event.name}: created"
    if event.label == "latest":
        return f"rev {event.rev}  {event.name}: new version {event.version}"
    key = (event.name, event.label)
    before, after = rollouts.get(key), getattr(event, "rollout", None)
    if after is None:
        rollouts.pop(key, None)
    else:
        rollouts[key] = after = (after[0], after[1])
    step = _rollout_step(event, before, after)
    if step is not None:
        return f"rev {event.rev}  {event.name}: {step}"
    move = describe_label_move(event.label, event.previous_version, event.version)
    return f"rev {event.rev}  {event.name}: label {move}"


def _rollout_step(event: Any, before: tuple[int, float] | None, after: tuple[int, float] | None) -> str | None:
    """The rollout step of ``event`` in words (:func:`describe_rollout`), or ``None`` for a plain move."""
    still = event.version == event.previous_version
    if after is not None and after != before and still:
        if before is not None and before[0] == after[0]:
            return describe_rollout("set_rollout", event.label, stable=event.version, candidate=after[0],
                                    percent=after[1], before=before[1])  # fmt: skip
        return describe_rollout(
            "start_rollout", event.label, stable=event.version, candidate=after[0], percent=after[1]
        )
    if after is None and still:  # the rollout ended and the label stayed: an abort
        return describe_rollout("abort_rollout", event.label, stable=event.version, candidate=before and before[0])
    if after is None and before is not None and event.version == before[0]:
        return describe_rollout("promote_rollout", event.label, stable=event.previous_version, candidate=before[0])
    return None


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
    type=click.Choice(("auto", "redis-server", "fakeredis")),  # demo.SERVER_CHOICES (tested)
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
    # The demo's scenario (redis-py, processes) loads only when it runs: every other command starts faster.
    from promptreg.registry.cli.demo import run_demo
    from promptreg.registry.cli.demo_servers import demo_server

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
    if url_scheme(url) in REDIS_SCHEMES | POSTGRES_SCHEMES:
        return url
    report(f"PROMPTREG_URL {redact_url(url)} is neither Redis nor PostgreSQL; the demo starts its own Redis")
    return None
