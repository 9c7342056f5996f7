"""``PromptClient(prompts=...)``: the prompts a client serves, by exact name or ``prefix*`` pattern."""

from __future__ import annotations

from collections.abc import Iterable

from promptreg.registry.errors import InvalidInputError, PromptNotFoundError
from promptreg.registry.validation import validate_name


class PromptSubset:
    """The prompts a client caches and applies changes for; every other prompt is ignored.

    Each item is an exact prompt name (``"checkout/welcome"``) or a pattern ending in ``*``
    (``"checkout/*"``: every name starting with ``checkout/``). Raises
    :class:`~promptreg.InvalidInputError` for a string that is neither, or a bare string given
    instead of an iterable of them (``prompts="a"`` would otherwise mean ``{"a"}`` by accident).
    """

    __slots__ = ("names", "prefixes")

    def __init__(self, items: Iterable[str]) -> None:
        if isinstance(items, str | bytes):
            raise InvalidInputError("prompts= takes an iterable of names or 'prefix*' patterns, not one string")
        names: set[str] = set()
        prefixes: set[str] = set()
        for item in items:
            if not isinstance(item, str):
                raise InvalidInputError(f"prompts= items must be str, got {type(item).__name__}")
            if item.endswith("*"):
                prefix = item[:-1]
                if prefix:  # a prefix is valid when a name could start with it
                    validate_name(prefix + "x")
                prefixes.add(prefix)
            else:
                names.add(validate_name(item))
        self.names: frozenset[str] = frozenset(names)
        """The exact names."""
        self.prefixes: tuple[str, ...] = tuple(sorted(prefixes))
        """The patterns' prefixes (``""`` for ``"*"``: every prompt)."""

    def __contains__(self, name: object) -> bool:
        return name in self.names or (isinstance(name, str) and name.startswith(self.prefixes))

    def not_served(self, name: str) -> PromptNotFoundError:
        """The error a lookup of a prompt outside the subset raises."""
        error = PromptNotFoundError(name)
        error.args = (f"prompt {name!r} is not served by this client (not in its prompts= subset)",)
        return error

    def __repr__(self) -> str:
        return f"PromptSubset({sorted(self.names) + [p + '*' for p in self.prefixes]!r})"
