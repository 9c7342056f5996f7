"""``{{variable}}`` templates: parsed once, rendered strictly.

A placeholder is ``{{name}}`` or ``{{ name }}`` where ``name`` is an identifier. Any other
text, including a lone ``{{`` or ``{{ not valid }}``, is kept literally.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from registry.errors import MissingVariableError

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class Template:
    """A parsed template: literal parts and variable names, alternating.

    Parsing happens in the constructor, which also compiles the template to a ``str.format`` string
    (:attr:`format_string`: literal braces doubled, each placeholder ``{name!s}``), so :meth:`render`
    is one ``format_map`` call in C.
    """

    __slots__ = ("_names", "_parts", "format_string", "variables")

    def __init__(self, text: str) -> None:
        parts: list[str] = []
        names: list[str] = []
        pos = 0
        for match in _PLACEHOLDER.finditer(text):
            parts.append(text[pos : match.start()])
            names.append(match.group(1))
            pos = match.end()
        parts.append(text[pos:])
        self._parts: tuple[str, ...] = tuple(parts)
        self._names: tuple[str, ...] = tuple(names)
        self.variables: frozenset[str] = frozenset(names)
        """Every variable name the template uses."""
        literals = [part.replace("{", "{{").replace("}", "}}") for part in parts]
        self.format_string: str = "".join(
            literal + ("{" + names[i] + "!s}" if i < len(names) else "") for i, literal in enumerate(literals)
        )
        """The template as a ``str.format`` string: ``format_string.format_map(values)`` renders it."""

    # Equal texts parse to equal templates, so models holding a Template (PromptVersion keeps one
    # as a private attribute, which pydantic compares) are equal when their fields are.
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Template):
            return NotImplemented
        return self._parts == other._parts and self._names == other._names

    def __hash__(self) -> int:
        return hash((self._parts, self._names))

    def render(self, values: Mapping[str, Any]) -> str:
        """Fill every placeholder with ``str(values[name])``.

        Extra values are ignored. Raises :class:`MissingVariableError` naming every missing
        variable when any is absent.
        """
        return render_format(self.format_string, self.variables, values)


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
