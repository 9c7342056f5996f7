"""The render methods of :class:`~promptreg.PromptClient`: a lookup, then its template filled.

:class:`Rendering` is a base class of the client, on top of its ``get()``: ``render`` returns what
the version is (text or messages), ``render_text`` and ``render_chat`` return one type, typed as
such, and raise :class:`~promptreg.PromptTypeError` for the other. Each takes the template's values as
keywords, or as a mapping after the prompt's name: that form takes any name, those of ``render``'s
own arguments (``label``, ``key``, ``version``, ``fallback``) included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

from promptreg.client.cached_version import CachedVersion
from promptreg.registry.errors import InvalidInputError, PromptTypeError


class _Lookups(Protocol):
    def get(
        self, name: str, label: str | None = None, *, key: str | None = None, version: int | None = None,
        fallback: str | None = None,
    ) -> CachedVersion: ...  # fmt: skip


class Rendering:
    """``render``, ``render_text`` and ``render_chat`` of a class with :meth:`~promptreg.PromptClient.get`."""

    def render(
        self: _Lookups,
        name: str,
        variables: Mapping[str, Any] | None = None,
        /,
        *,
        label: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: str | None = None,
        **keyword_variables: Any,
    ) -> str | list[dict[str, str]]:
        """``get(name, label, key=key, version=version, fallback=fallback).render(...)``: a ``str`` for a text
        version, a list of ``{"role", "content"}`` messages for a chat version (placeholders take a
        list of messages passed by name).

        The template's values are given as keywords (``render("critic", movie="Alien")``), or as a
        mapping after the name, which takes any name, ``label``, ``version`` and ``fallback``
        included: ``render("critic", {"label": "x", "version": 3}, label="production")`` fills the
        template's ``{{label}}`` and ``{{version}}`` and resolves the ``production`` label. A name
        given both ways takes the keyword's value. Raises what :meth:`get` raises,
        :class:`~promptreg.MissingVariableError` naming every template variable (and placeholder) not
        given (a ``fallback`` text is a template too), and :class:`~promptreg.InvalidInputError` when
        ``variables`` is not a mapping with ``str`` keys.
        """
        found = self.get(name, label, key=key, version=version, fallback=fallback)
        if variables is None:
            return found.render(**keyword_variables)
        return found.render(**_merged(variables, keyword_variables))

    def render_text(
        self: _Lookups,
        name: str,
        variables: Mapping[str, Any] | None = None,
        /,
        *,
        label: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: str | None = None,
        **keyword_variables: Any,
    ) -> str:
        """:meth:`render` for a text prompt: always a ``str``, typed as one.

        Takes what :meth:`render` takes and raises what it raises, and
        :class:`~promptreg.PromptTypeError` (a ``TypeError``) when the version found is a chat version,
        before rendering anything. A ``fallback`` text renders as text.
        """
        found = self.get(name, label, key=key, version=version, fallback=fallback)
        if found.messages is not None:
            raise PromptTypeError(name, found.version, "text", "chat")
        values = keyword_variables if variables is None else _merged(variables, keyword_variables)
        return cast(str, found.render(**values))

    def render_chat(
        self: _Lookups,
        name: str,
        variables: Mapping[str, Any] | None = None,
        /,
        *,
        label: str | None = None,
        key: str | None = None,
        version: int | None = None,
        fallback: str | None = None,
        **keyword_variables: Any,
    ) -> list[dict[str, str]]:
        """:meth:`render` for a chat prompt: always a list of ``{"role", "content"}`` messages.

        Takes what :meth:`render` takes and raises what it raises, and
        :class:`~promptreg.PromptTypeError` (a ``TypeError``) when the version found is a text version,
        before rendering anything. A ``fallback`` (inline text, served only when the registry cannot
        be reached) renders as one ``user`` message, as :meth:`~promptreg.PromptVersion.render_messages`
        does.
        """
        found = self.get(name, label, key=key, version=version, fallback=fallback)
        if found.messages is None and found.version != 0:  # version 0: the inline fallback
            raise PromptTypeError(name, found.version, "chat", "text")
        values = keyword_variables if variables is None else _merged(variables, keyword_variables)
        if found.messages is None:
            return found.render_messages(**values)
        return cast(list[dict[str, str]], found.render(**values))


def _merged(variables: Mapping[str, Any], keywords: dict[str, Any]) -> dict[str, Any]:
    """A render call's template values: the ``variables`` mapping, the keywords over it. Raises
    :class:`~promptreg.InvalidInputError` for a mapping that is not one, or a name that is not a ``str``."""
    if not isinstance(variables, Mapping):
        raise InvalidInputError(f"template variables must be a mapping of names, got {type(variables).__name__}")
    merged = dict(variables)
    for key in merged:
        if not isinstance(key, str):
            raise InvalidInputError(f"template variable names must be str, got {key!r}")
    merged.update(keywords)
    return merged
