"""``{{variable}}`` templates: parsed once, rendered strictly.

A placeholder is ``{{name}}`` or ``{{ name }}`` where ``name`` is an identifier. Any other
text, including a lone ``{{`` or ``{{ not valid }}``, is kept literally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from promptreg.registry.errors import MissingVariableError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_TIGHT = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
"""A placeholder written without spaces: when every brace of a text is in one, the text compiles to
its format string by two ``str.replace`` calls (the common case, a fifth cheaper than the split)."""


class Template:
    """A parsed template: its variable names and its text compiled to a ``str.format`` string.

    Parsing happens in the constructor, which also compiles the template to a ``str.format`` string
    (:attr:`format_string`: literal braces doubled, each placeholder ``{name!s}``), so :meth:`render`
    is one ``format_map`` call in C.
    """

    __slots__ = ("format_string", "variables")

    def __init__(self, text: str) -> None:
        self.format_string: str
        """The template as a ``str.format`` string: ``format_string.format_map(values)`` renders it."""
        self.variables: frozenset[str]
        """Every variable name the template uses."""
        self.format_string, self.variables = compile_template(text)

    # Equal texts parse to equal templates, so models holding a Template are equal when their
    # fields are. The format string determines the template: literals and placeholders alike.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self.format_string == other.format_string

    def __hash__(self) -> int:
        return hash(self.format_string)

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill every placeholder with ``str(values[name])``.

        Extra values are ignored. Raises :class:`MissingVariableError` naming every missing
        variable when any is absent.
        """
        return render_format(self.format_string, self.variables, values)


_NO_VARIABLES: frozenset[str] = frozenset()
_VARIABLE_SETS: dict[tuple[str, ...], frozenset[str]] = {}
_VARIABLE_SETS_MAX = 4096


def _variable_set(names: list[str]) -> frozenset[str]:
    """``frozenset(names)``, one shared instance per sequence of names (templates mostly share them)."""
    key = tuple(names)
    found = _VARIABLE_SETS.get(key)
    if found is None:
        if len(_VARIABLE_SETS) >= _VARIABLE_SETS_MAX:  # bounded: an unusual registry only loses the sharing
            _VARIABLE_SETS.clear()
        found = _VARIABLE_SETS[key] = frozenset(names)
    return found


_SEPARATOR = "\x00"


def _tight_format(text: str) -> str:
    """The format string of a text whose every brace is in a ``{{name}}`` written without spaces."""
    return text.replace("{{", "{").replace("}}", "!s}")


def compile_template(text: str) -> tuple[str, frozenset[str]]:
    """``(format_string, variables)`` of ``text``: what :class:`Template` holds, without the object.

    A cache of 100k versions compiles 100k templates at start-up: no Python loop per character, and
    the readers that keep only these two values skip an object per version.
    """
    if "{{" not in text:  # no placeholder: the format string is the text itself when it has no brace
        return (text.replace("{", "{{").replace("}", "}}") if "{" in text or "}" in text else text), _NO_VARIABLES
    names = _TIGHT.findall(text)
    if text.count("{") == 2 * len(names) == text.count("}"):  # every brace is in a {{name}}
        return _tight_format(text), _variable_set(names)
    # One C-level split: literals at even positions, variable names at odd ones.
    pieces = _PLACEHOLDER.split(text)
    names = pieces[1::2]
    if text.count("{") != 2 * len(names) or text.count("}") != 2 * len(names):  # a literal has a brace
        pieces[0::2] = [literal.replace("{", "{{").replace("}", "}}") for literal in pieces[0::2]]
    pieces[1::2] = ["{" + name + "!s}" for name in names]
    return "".join(pieces), _variable_set(names)


def compile_batch(texts: list[str]) -> tuple[list[str], list[str | None]]:
    """``(formats, kept)``: the format string of every text (:func:`compile_template`'s), and the text
    to keep beside it.

    ``kept[i]`` is ``None`` when the text follows from its format string (:func:`untight_format`:
    every brace is in a ``{{name}}`` written without spaces), else the text itself (the same object as
    ``formats[i]`` when it has no brace). What a reader building thousands of versions at start-up
    uses: a few C-level passes over the texts joined, instead of a regex and two replaces per text; a
    text with any other brace (one in a thousand) is compiled alone. The variable names are not
    computed (a version finds them on first use; rendering does not need them).
    """
    joined = _SEPARATOR.join(texts)
    if joined.count(_SEPARATOR) != len(texts) - 1:  # a text holds the separator itself
        return [compile_template(text)[0] for text in texts], list(texts)
    if "{" not in joined and "}" not in joined:
        return texts, list(texts)
    rest = _TIGHT.sub("", joined)  # what is left once every tight placeholder is gone
    odd: list[int] = []
    if "{" in rest or "}" in rest:
        odd = [i for i, piece in enumerate(rest.split(_SEPARATOR)) if "{" in piece or "}" in piece]
    compiled = _tight_format(joined).split(_SEPARATOR)
    formats = [text if "{" not in text else format_string for text, format_string in zip(texts, compiled, strict=True)]
    kept: list[str | None] = [text if "{" not in text else None for text in texts]
    for i in odd:
        formats[i] = compile_template(texts[i])[0]
        kept[i] = texts[i]
    return formats, kept


def untight_format(format_string: str) -> str:
    """The text whose format string is ``format_string``, for a text whose every brace is in a
    ``{{name}}`` written without spaces (:func:`compile_batch` says which): the inverse of that
    compilation, exact because such a format string has ``{`` only before a name and ``}`` only
    after ``!s``."""
    return format_string.replace("{", "{{").replace("!s}", "}}")


def text_variables(text: str) -> frozenset[str]:
    """The variable names of ``text``, as :func:`compile_template` finds them (one shared set per sequence)."""
    return _variable_set(_PLACEHOLDER.findall(text))


def render_format(format_string: str, names: frozenset[str], values: Mapping[str, Any]) -> str:
    """``format_string.format_map(values)``, with a missing value reported as :class:`MissingVariableError`.

    ``format_string`` is a :attr:`Template.format_string` and ``names`` its :attr:`Template.variables`.
    """
    try:
        return format_string.format_map(values)
    except KeyError:
        missing = names.difference(values)
        if missing:
            raise MissingVariableError(missing) from None
        raise  # a KeyError raised by a value's own __str__


def variables(text: str) -> frozenset[str]:
    """The set of variable names used by ``text``."""
    return frozenset(_PLACEHOLDER.findall(text))
