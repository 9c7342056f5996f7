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

    Parsing happens in the constructor; :meth:`render` only joins strings.
    """

    __slots__ = ("_names", "_parts", "variables")

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
        if not self._names:
            return self._parts[0]
        missing = self.variables.difference(values)
        if missing:
            raise MissingVariableError(missing)
        parts = self._parts
        out = [parts[0]]
        for i, name in enumerate(self._names, 1):
            out.append(str(values[name]))
            out.append(parts[i])
        return "".join(out)


def variables(text: str) -> frozenset[str]:
    """The set of variable names used by ``text``."""
    return frozenset(_PLACEHOLDER.findall(text))
