"""Pieces every ``promptreg`` command shares: the registry of the invocation, ``--json``, ``--author``.

:mod:`promptreg.registry.cli` builds the command group and puts its settings object on the root click
context; the command modules reach the registry through :func:`current_registry`, so they need not
import the group (which imports them).
"""

from __future__ import annotations

import codecs
import difflib
import json
import os
import sys
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from promptreg.registry.base import PromptRegistry
from promptreg.registry.chat import readable
from promptreg.registry.errors import ConfigurationError, InvalidInputError, PromptTooLargeError
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.models import PromptVersion

_F = TypeVar("_F", bound=Callable[..., Any])


class CliSettings(Protocol):
    """What the global options chose (see :class:`promptreg.registry.cli.Settings`)."""

    url: str
    namespace: str | None
    as_json: bool

    def registry(self) -> PromptRegistry:
        """The registry, opened on first use."""
        ...


def current_settings() -> CliSettings:
    """The settings of the running ``promptreg`` invocation."""
    settings: CliSettings = click.get_current_context().find_root().obj
    return settings


def current_registry(*, reading: bool = False) -> PromptRegistry:
    """The registry the running ``promptreg`` invocation works on (opened on first use).

    ``reading=True`` is for commands that only read: a JSON-file registry whose file does not exist
    then raises :class:`~promptreg.ConfigurationError` saying so (a mistyped path would
    otherwise read as an empty registry), instead of answering "nothing".
    """
    registry = current_settings().registry()
    if reading and isinstance(registry, JsonFilePromptRegistry) and not registry.path.exists():
        raise ConfigurationError(
            f"no registry file at {registry.path} (check --url / PROMPTREG_URL; the first write creates it)"
        )
    return registry


def json_option(function: _F) -> _F:
    """``--json``: print machine-readable JSON instead of text (also given before the command)."""

    def or_global(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        return value or bool(getattr(ctx.find_root().obj, "as_json", False))

    return click.option(
        "--json", "as_json", is_flag=True, callback=or_global, help="Print JSON (the models' own field names)."
    )(function)


def author_option(function: _F) -> _F:
    """``--author``, defaulting to ``PROMPTREG_AUTHOR``."""
    return click.option("--author", envvar="PROMPTREG_AUTHOR", help="Who makes the change (env PROMPTREG_AUTHOR).")(
        function
    )


def print_json(data: Any) -> None:
    """Print ``data`` as indented JSON (non-ASCII kept as is)."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def read_input(source: str, max_bytes: int, what: str) -> str:
    """The UTF-8 text of the file ``source`` (``-``: stdin), refused before parsing when it holds
    more than ``max_bytes`` bytes.

    A leading UTF-8 byte order mark (what Windows editors and PowerShell write) is dropped, and not
    counted against the limit: it is no part of the text. Raises
    :class:`~promptreg.PromptTooLargeError` over the limit, :class:`~promptreg.InvalidInputError`
    for bytes that are not UTF-8, and ``OSError`` for a file that cannot be read (the command group
    prints it as one line). ``what`` names the input in messages.
    """
    if source == "-":
        # Decode the bytes ourselves: the terminal's locale must not decide what a prompt contains.
        data = sys.stdin.buffer.read(len(codecs.BOM_UTF8) + max_bytes + 1)
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        data, shown = data[bom:], "stdin"
    else:
        with open(source, "rb") as handle:
            head = handle.read(len(codecs.BOM_UTF8))
            bom = len(head) if head == codecs.BOM_UTF8 else 0
            size = os.fstat(handle.fileno()).st_size - bom
            if size > max_bytes:
                raise PromptTooLargeError(f"{source}: {what} is {size} bytes, the limit is {_limit(max_bytes)}")
            data = head[bom:] + handle.read(max_bytes + 1 - (len(head) - bom))
        shown = source
    if len(data) > max_bytes:  # stdin, or a file that grew (or a pipe or device: no size beforehand)
        raise PromptTooLargeError(
            f"{shown}: {what} is over {max_bytes} bytes{_human(max_bytes)}, the limit is {max_bytes}"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{shown}: not UTF-8 text ({exc.reason} at byte {bom + exc.start})") from exc


def _limit(max_bytes: int) -> str:
    return f"{max_bytes}{_human(max_bytes)}"


def _human(nbytes: int) -> str:
    """`` (1 MiB)`` for a size that is a whole number of MiB or KiB, else nothing."""
    for unit, name in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if nbytes >= unit and nbytes % unit == 0:
            return f" ({nbytes // unit} {name})"
    return ""


def version_body(version: PromptVersion) -> str:
    """The text of a version for people: the template, or a chat version's messages."""
    return version.prompt_text if version.messages is None else readable(version.messages) + "\n"


def unified_diff(name: str, old: PromptVersion, new: PromptVersion) -> str:
    """The unified diff of two versions' :func:`version_body` (``diff`` and ``promptreg serve``'s)."""
    lines = difflib.unified_diff(
        version_body(old).splitlines(keepends=True),
        version_body(new).splitlines(keepends=True),
        fromfile=f"{name}@{old.version}",
        tofile=f"{name}@{new.version}",
    )
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
