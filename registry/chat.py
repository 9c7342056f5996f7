"""Chat versions: a list of ``{"role", "content"}`` messages and ``{"placeholder": name}`` slots.

A chat version's ``messages`` is a tuple of plain dicts, each either a message (``role`` matches
``[a-z][a-z0-9_-]*``, ``content`` is a ``{{variable}}`` template) or a placeholder
(``{"placeholder": "history"}``) that :meth:`~promptreg.PromptVersion.render` fills with a list of
messages passed by name. :class:`ChatTemplate` parses every message once, when the version is
built; :func:`validate_messages` is the one input check every write and import runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from promptreg.registry.errors import InvalidInputError, MissingVariableError, PromptTooLargeError
from promptreg.registry.template import Template, render_format
from promptreg.registry.validation import validate_unicode

ROLE_PATTERN = re.compile(r"[a-z][a-z0-9_-]*")
PLACEHOLDER_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_ROLE_LENGTH = 64
MAX_MESSAGES = 1000
"""The most entries (messages and placeholders) one chat version may hold."""

Message = dict[str, str]
"""One rendered chat message: ``{"role": ..., "content": ...}``."""

_MESSAGE_KEYS = frozenset({"role", "content"})
_PLACEHOLDER_KEYS = frozenset({"placeholder"})


def check_shape(messages: Sequence[Mapping[str, str]]) -> None:
    """Raise ``ValueError`` unless every entry is a message or a placeholder (the model's check)."""
    for index, entry in enumerate(messages):
        keys = entry.keys()
        if keys != _MESSAGE_KEYS and keys != _PLACEHOLDER_KEYS:
            raise ValueError(f"messages[{index}] must have the keys role and content, or placeholder alone")


def validate_messages(messages: object, max_bytes: int) -> tuple[Message, ...]:
    """Return ``messages`` as a tuple of plain dicts if it is a valid chat version, else raise.

    Every entry is ``{"role": str, "content": str}`` or ``{"placeholder": name}``; roles match
    :data:`ROLE_PATTERN`, placeholder names are identifiers used by no ``{{variable}}``; at most
    :data:`MAX_MESSAGES` entries, and the UTF-8 size of every role, content and placeholder together
    within ``max_bytes``. Raises :class:`~promptreg.InvalidInputError` naming the entry
    (``messages[2].role``) or :class:`~promptreg.PromptTooLargeError`.
    """
    if isinstance(messages, (str, bytes, Mapping)) or not isinstance(messages, Sequence):
        raise InvalidInputError(f"messages must be a list of messages, got {type(messages).__name__}")
    if not messages:
        raise InvalidInputError("messages is empty: a chat version needs at least one message")
    if len(messages) > MAX_MESSAGES:
        raise InvalidInputError(f"messages has {len(messages)} entries, the limit is {MAX_MESSAGES}")
    clean: list[Message] = []
    size = 0
    for index, entry in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(entry, Mapping):
            raise InvalidInputError(f"{where} must be a mapping, got {type(entry).__name__}")
        keys = set(entry.keys())
        if keys == _PLACEHOLDER_KEYS:
            name = entry["placeholder"]
            if not isinstance(name, str) or len(name) > MAX_ROLE_LENGTH or not PLACEHOLDER_PATTERN.fullmatch(name):
                raise InvalidInputError(
                    f"{where}.placeholder must be an identifier of at most {MAX_ROLE_LENGTH} characters"
                )
            clean.append({"placeholder": name})
            size += len(name)
        elif keys == _MESSAGE_KEYS:
            role, content = entry["role"], entry["content"]
            if not isinstance(role, str) or len(role) > MAX_ROLE_LENGTH or not ROLE_PATTERN.fullmatch(role):
                raise InvalidInputError(
                    f"{where}.role must match [a-z][a-z0-9_-]* (at most {MAX_ROLE_LENGTH} characters), got {role!r:.80}"
                )
            if not isinstance(content, str):
                raise InvalidInputError(f"{where}.content must be a string, got {type(content).__name__}")
            size += len(role) + len(validate_unicode(content, f"{where}.content").encode("utf-8"))
            clean.append({"role": role, "content": content})
        else:
            shown = ", ".join(sorted(repr(k)[:40] for k in keys)) or "none"
            raise InvalidInputError(f"{where} must have the keys role and content, or placeholder alone (has {shown})")
        if size > max_bytes:
            raise PromptTooLargeError(f"messages are over {max_bytes} bytes, the limit is {max_bytes}")
    result = tuple(clean)
    parsed = ChatTemplate(result)
    both = parsed.variables & parsed.placeholders
    if both:
        raise InvalidInputError(f"messages: {', '.join(sorted(both))} is both a placeholder and a template variable")
    return result


class ChatTemplate:
    """The parsed messages of a chat version: each content compiled once (see :class:`Template`).

    :meth:`format_map` renders every message in one pass, so a chat version's ``render`` is the
    same call as a text version's (``self._format.format_map(values)``).
    """

    __slots__ = ("_parts", "placeholders", "variables")

    def __init__(self, messages: Sequence[Mapping[str, str]]) -> None:
        parts: list[tuple[str | None, str, frozenset[str]]] = []
        variables: set[str] = set()
        placeholders: set[str] = set()
        for entry in messages:
            if "placeholder" in entry:
                placeholders.add(entry["placeholder"])
                parts.append((None, entry["placeholder"], frozenset()))
            else:
                template = Template(entry["content"])
                variables.update(template.variables)
                parts.append((entry["role"], template.format_string, template.variables))
        self._parts = tuple(parts)
        self.variables: frozenset[str] = frozenset(variables)
        """Every ``{{variable}}`` of every message."""
        self.placeholders: frozenset[str] = frozenset(placeholders)
        """Every placeholder name."""

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatTemplate):
            return NotImplemented
        return self._parts == other._parts

    def __hash__(self) -> int:
        return hash(self._parts)

    def format_map(self, values: Mapping[str, Any]) -> list[Message]:
        """The rendered messages; a placeholder becomes the messages passed under its name.

        Raises :class:`MissingVariableError` naming every variable and placeholder not given, and
        :class:`~promptreg.InvalidInputError` when a placeholder's value is not a list of messages.
        """
        out: list[Message] = []
        try:
            for role, text, names in self._parts:
                if role is None:
                    out.extend(placeholder_messages(text, values[text]))
                else:
                    out.append({"role": role, "content": render_format(text, names, values)})
        except KeyError:
            missing = (self.variables | self.placeholders).difference(values)
            if missing:
                raise MissingVariableError(missing) from None
            raise
        return out

    render = format_map


def placeholder_messages(name: str, value: object) -> list[Message]:
    """``value`` (what was passed for placeholder ``name``) as a list of ``{"role", "content"}`` dicts.

    Raises :class:`~promptreg.InvalidInputError` naming the placeholder when it is not a list of
    mappings with string ``role`` and ``content``.
    """
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise InvalidInputError(f"placeholder {name!r} takes a list of messages, got {type(value).__name__}")
    out: list[Message] = []
    for index, item in enumerate(value):
        role = item.get("role") if isinstance(item, Mapping) else None
        content = item.get("content") if isinstance(item, Mapping) else None
        if not isinstance(role, str) or not isinstance(content, str):
            raise InvalidInputError(f"placeholder {name!r}[{index}] must be a mapping with str role and content")
        out.append({"role": role, "content": content})
    return out


def readable(messages: Sequence[Mapping[str, str]]) -> str:
    """The messages for people: ``[role]`` then the content; ``[placeholder: name]`` for a slot."""
    blocks = []
    for entry in messages:
        if "placeholder" in entry:
            blocks.append(f"[placeholder: {entry['placeholder']}]")
        else:
            blocks.append(f"[{entry['role']}]\n{entry['content']}")
    return "\n\n".join(blocks)


_ROLE_MARKER = re.compile(r"""\{\{\s*role\s+["']([a-z][a-z0-9_-]*)["']\s*\}\}""")
_HISTORY_MARKER = re.compile(r"\{\{\s*history\s*\}\}")


def dotprompt_messages(body: str) -> list[Message] | None:
    """The messages of a Dotprompt body with ``{{role "system"}}`` markers, or ``None`` without any.

    Text before the first marker is a ``user`` message (Dotprompt's default role); each message is
    stripped of surrounding blank space and empty ones are dropped; ``{{history}}`` becomes the
    ``{"placeholder": "history"}`` slot. In a body without role markers ``{{history}}`` stays an
    ordinary variable, as it always was in a text prompt file.
    """
    pieces = _ROLE_MARKER.split(body)
    if len(pieces) == 1:
        return None
    messages: list[Message] = []
    for role, text in zip(["user", *pieces[1::2]], pieces[0::2], strict=True):
        for index, part in enumerate(_HISTORY_MARKER.split(text)):
            if index:
                messages.append({"placeholder": "history"})
            if part.strip():
                messages.append({"role": role, "content": part.strip()})
    return messages
