"""``promptreg``: the command line (thin: it parses, calls the library, prints).

This module holds the group (global options, the one place errors become a line) and ``main``; the
commands live in :mod:`~promptreg.registry.cli.prompts`, :mod:`~promptreg.registry.cli.history`,
:mod:`~promptreg.registry.cli.files`,
:mod:`~promptreg.registry.cli.acl`, :mod:`~promptreg.registry.cli.rollout`,
:mod:`~promptreg.registry.cli.governance` and :mod:`~promptreg.registry.cli.live`
(``watch``, ``demo``).

Every command that shows data takes ``--json`` and then prints the models' own fields
(``model_dump(mode="json")``). Errors print one line, ``error: ...``, on stderr and exit 1; usage
errors exit 2; a traceback is never shown. The registry comes from ``--url`` / ``PROMPTREG_URL``
(default: the JSON file ``./.promptreg/registry.json``) and, for Redis, ``--namespace`` /
``PROMPTREG_NAMESPACE``. Passwords in URLs are never printed.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.cli.acl import acl_command
from promptreg.registry.cli.compat import check, compatibility
from promptreg.registry.cli.files import export_command, import_command, sync
from promptreg.registry.cli.fleet import fleet
from promptreg.registry.cli.governance import COMMANDS as GOVERNANCE_COMMANDS
from promptreg.registry.cli.history import history
from promptreg.registry.cli.live import demo, watch
from promptreg.registry.cli.maintenance import migrate
from promptreg.registry.cli.prompts import create, diff, label, list_prompts, push, render, rollback, show
from promptreg.registry.cli.rollout import rollout
from promptreg.registry.cli.serve import serve, token
from promptreg.registry.cli.webhooks import webhooks
from promptreg.registry.errors import LabelNotFoundError, PromptNotFoundError, PromptRegistryError
from promptreg.registry.factory import DEFAULT_URL, NAMESPACE_ENV, URL_ENV, PromptRegistryFactory
from promptreg.registry.urls import redact_url, url_secrets


@dataclass
class Settings:
    """What the global options chose; the registry is opened on first use."""

    url: str
    namespace: str | None
    as_json: bool = False
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
        except PromptNotFoundError as exc:
            _fail(ctx, str(exc) + _did_you_mean(exc.name, PromptRegistry.list_prompts))
        except LabelNotFoundError as exc:
            _fail(ctx, str(exc) + _did_you_mean(exc.label, functools.partial(_labels_of, name=exc.name)))
        except PromptRegistryError as exc:
            _fail(ctx, str(exc))
        except OSError as exc:
            reason = exc.strerror or str(exc)
            _fail(ctx, f"{exc.filename}: {reason}" if exc.filename else reason)
        except UnicodeError as exc:  # e.g. an argument that is not valid UTF-8
            _fail(ctx, f"input is not valid UTF-8 text: {getattr(exc, 'reason', exc)}")
        except Exception as exc:  # a bug, not bad input: still one line, never a traceback
            redis = sys.modules.get("redis")  # only a program that loaded redis-py can get its errors
            if redis is not None and isinstance(exc, redis.RedisError):  # the backends translate these
                _fail(ctx, f"redis: {exc}")
            if os.environ.get("PROMPTREG_DEBUG") == "1":
                raise
            _fail(ctx, f"unexpected {type(exc).__name__}: {exc} (set PROMPTREG_DEBUG=1 for a traceback)")


def _did_you_mean(word: str, candidates: Callable[[PromptRegistry], Iterable[str]]) -> str:
    """`` (did you mean 'x'?)`` naming up to three of the invocation's ``candidates`` close to ``word``.

    Close means a candidate that starts with ``word`` (``prod`` -> ``production``), or one difflib
    finds alike (``movie-critc`` -> ``movie-critic``). Empty when none is, or the registry cannot be read.
    """
    settings = click.get_current_context().find_object(Settings)
    try:
        pool = sorted(set(candidates(settings.registry())) - {word}) if settings is not None else []
    except PromptRegistryError:
        return ""
    starting = [c for c in pool if len(word) >= 2 and c.casefold().startswith(word.casefold())]
    close = list(dict.fromkeys(starting + difflib.get_close_matches(word, pool, n=3, cutoff=0.6)))[:3]
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _labels_of(registry: PromptRegistry, name: str) -> list[str]:
    prompt = registry.get_prompt(name)
    return [] if prompt is None else list(prompt.labels)


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
@click.option("--json", "as_json", is_flag=True, help="Print JSON (also accepted after the command).")
@click.version_option(package_name="promptreg")
@click.pass_context
def cli(ctx: click.Context, url: str, namespace: str | None, as_json: bool) -> None:
    """promptreg: prompts with immutable versions and movable labels.

    --url, --namespace and --json may stand before or after the command.
    """
    settings = Settings(url, namespace, as_json)
    ctx.obj = settings
    ctx.call_on_close(settings.close)


def _after_the_command(name: str, help: str) -> click.Option:
    """``--url`` / ``--namespace`` accepted after the command too; a value there wins."""

    def remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
        if value is not None:
            setattr(ctx.find_root().obj, name, value)

    return click.Option([f"--{name}"], default=None, expose_value=False, callback=remember, help=help)


for command in (create, push, label, rollback, show, render, list_prompts, history, diff, check, compatibility):
    cli.add_command(command)
for command in (sync, export_command, import_command, watch, demo, acl_command, migrate, fleet, serve, token, rollout):
    cli.add_command(command)
for command in GOVERNANCE_COMMANDS:  # protect, unprotect, request, approve, reject, apply, requests
    cli.add_command(command)
cli.add_command(webhooks)  # add, list, remove, dead-letters, run (docs/webhooks.md)


def _leaves(group: click.Group) -> Iterable[click.Command]:
    # A subcommand's group (`rollout`) takes the options after its subcommands (`rollout start ... --url U`).
    for command in group.commands.values():
        yield from _leaves(command) if isinstance(command, click.Group) else (command,)


for command in _leaves(cli):
    taken = {flag for param in command.params for flag in getattr(param, "opts", ())}
    if "--url" not in taken:
        command.params.append(_after_the_command("url", "Registry URL (as before the command)."))
    if "--namespace" not in taken:  # `acl --namespace` names the namespace to write rules for
        command.params.append(_after_the_command("namespace", "Redis key namespace (as before the command)."))


def main(argv: list[str] | None = None) -> None:
    """The console script ``promptreg``."""
    cli.main(args=argv, prog_name="promptreg")
