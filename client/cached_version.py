"""The version a client caches: :class:`CachedVersion`, immutable, with the read API of
:class:`~promptreg.PromptVersion` and a fifth of its cost.

A client builds every version its labels point at when it starts (200k at 100k prompts), so the
object is what a start-up's time and memory are made of. The pydantic model costs 1.7 µs to build
even unvalidated and carries a ``__dict__`` per version; this slotted class costs about 0.3 µs and
holds no dict. The registry's own API keeps returning :class:`~promptreg.PromptVersion` (validated,
serialisable); :meth:`CachedVersion.to_model` gives one when a caller needs it, and
:class:`~promptreg.PromptVersionLike` types code that reads either.

**One copy of each text.** The template is compiled when the version is built (never on the lookup
path), to the ``str.format`` string :meth:`render` calls. For the common template, whose every
brace is in a ``{{name}}`` written without spaces, the text follows from the format string exactly
(:func:`~promptreg.registry.template.untight_format`), so only the format string is kept and
:attr:`CachedVersion.prompt_text` rebuilds the text on its first read (then keeps it). A text
without braces is its own format string (one object). Only a text with other braces keeps both.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NoReturn

from promptreg.registry.chat import ChatTemplate
from promptreg.registry.models import PromptVersion, VersionRendering, VersionType
from promptreg.registry.template import compile_batch, compile_template, text_variables, untight_format

__all__ = ["EMPTY", "CachedVersion", "cached_chat", "cached_from_model", "cached_text"]


class _ReadOnlyDict(dict[str, Any]):
    """A ``dict`` that refuses changes: the one empty ``metadata`` / ``config`` every version without
    any shares (a dict per version would cost 64 bytes each, 25 MB at 100k prompts)."""

    __slots__ = ()

    def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError("a cached version's metadata and config are read-only")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _refuse


EMPTY: dict[str, Any] = _ReadOnlyDict()
"""The shared empty ``metadata`` / ``config`` (read-only)."""


class _Fields(VersionRendering):
    # The slots, set once by the builders below; CachedVersion (same layout) refuses every later set.
    __slots__ = ("_chat", "_format", "_text", "_variables", "author", "config", "created_at", "message",
                 "messages", "metadata", "version")  # fmt: skip

    def __init__(
        self,
        version: int,
        text: str | None,
        created_at: datetime,
        author: str | None,
        message: str | None,
        metadata: dict[str, Any],
        messages: tuple[dict[str, str], ...] | None,
        config: dict[str, Any],
        format_: Any,
        variables: frozenset[str] | None,
        chat: ChatTemplate | None,
    ) -> None:
        self.version = version
        self._text = text
        self.created_at = created_at
        self.author = author
        self.message = message
        self.metadata = metadata
        self.messages = messages
        self.config = config
        self._format = format_
        self._variables = variables
        self._chat = chat


class CachedVersion(_Fields):
    """One immutable version as a :class:`~promptreg.PromptClient` caches it (module docstring).

    Attributes as :class:`~promptreg.PromptVersion`'s: ``version``, ``prompt_text``, ``created_at``,
    ``author``, ``message``, ``metadata``, ``type``, ``messages``, ``config``, ``variables``,
    ``placeholders``; :meth:`render` and :meth:`render_messages` render it as the model does. Setting
    an attribute raises ``AttributeError``; ``metadata`` and ``config`` are to be read, not changed.
    Equal to a :class:`CachedVersion` or :class:`~promptreg.PromptVersion` with the same fields.
    """

    __slots__ = ()

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"a cached version is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"a cached version is immutable: cannot delete {name!r}")

    @property
    def prompt_text(self) -> str:
        """The template text (``""`` for a chat version)."""
        text = self._text
        if text is None:  # kept as its format string only: rebuilt once, on the first read
            text = untight_format(self._format)
            object.__setattr__(self, "_text", text)
        return text

    def text_once(self) -> str:
        """:attr:`prompt_text` without keeping it: for code that reads every version once (the
        last-known-good file, a content check), which would otherwise keep a second copy of each."""
        text = self._text
        return untight_format(self._format) if text is None else text

    @property
    def type(self) -> VersionType:
        """``"chat"`` for a chat version, else ``"text"``."""
        return "text" if self.messages is None else "chat"

    @property
    def variables(self) -> frozenset[str]:
        """The template variable names used by the text (or by every message)."""
        names = self._variables
        if names is None:  # a template compiled in a batch: its names are found on first use
            names = text_variables(self.prompt_text)
            object.__setattr__(self, "_variables", names)
        return names

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholder names of a chat version (empty for text)."""
        chat = self._chat
        return frozenset() if chat is None else chat.placeholders

    @property
    def partials(self) -> dict[str, int]:
        """The partials included and their versions (a version composed at a label,
        :mod:`promptreg.client.composition`); empty, read-only, for any other."""
        return EMPTY

    def to_model(self) -> PromptVersion:
        """This version as the registry's pydantic :class:`~promptreg.PromptVersion`."""
        return PromptVersion.trusted(
            self.version, self.prompt_text, self.created_at, self.author, self.message, dict(self.metadata),
            self.messages, dict(self.config),
        )  # fmt: skip

    def _key(self) -> tuple[Any, ...]:
        return (self.version, self.prompt_text, self.created_at, self.author, self.message, self.metadata,
                self.messages, self.config)  # fmt: skip

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CachedVersion):
            return self._key() == other._key()
        if isinstance(other, PromptVersion):
            return self._key() == (other.version, other.prompt_text, other.created_at, other.author, other.message,
                                   other.metadata, other.messages, other.config)  # fmt: skip
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # holds dicts, as the model does

    def __repr__(self) -> str:
        return (f"CachedVersion(version={self.version}, type={self.type!r}, prompt_text={self.prompt_text!r}, "
                f"created_at={self.created_at!r}, author={self.author!r})")  # fmt: skip

    def __reduce__(self) -> tuple[Any, ...]:  # pickle, copy: rebuilt from its values
        return (_rebuild, self._key())


def _rebuild(
    version: int, text: str, created_at: datetime, author: str | None, message: str | None,
    metadata: dict[str, Any], messages: tuple[dict[str, str], ...] | None, config: dict[str, Any],
) -> CachedVersion:  # fmt: skip
    if messages is None:
        format_string, names = compile_template(text)
        return cached_text(version, text, format_string, names, created_at, author, message, metadata, config)
    return cached_chat(version, messages, created_at, author, message, metadata, config)


def cached_text(
    version: int,
    text: str | None,
    format_string: str,
    variables: frozenset[str] | None,
    created_at: datetime,
    author: str | None,
    message: str | None,
    metadata: dict[str, Any] | None,
    config: dict[str, Any] | None,
) -> CachedVersion:
    """A text version from values the registry validated when it was written (no validation).

    ``format_string`` is the text's, compiled by :mod:`promptreg.registry.template`; ``text`` may be
    ``None`` when the text follows from it (:func:`~promptreg.registry.template.untight_format`);
    ``variables`` ``None`` when not computed yet (found on first use); empty ``metadata`` / ``config``
    (or ``None``) become :data:`EMPTY`.
    """
    return _sealed(_Fields(version, text, created_at, author, message, metadata or EMPTY, None, config or EMPTY,
                           format_string, variables, None))  # fmt: skip


def cached_chat(
    version: int,
    messages: tuple[dict[str, str], ...],
    created_at: datetime,
    author: str | None,
    message: str | None,
    metadata: dict[str, Any] | None,
    config: dict[str, Any] | None,
) -> CachedVersion:
    """A chat version from values the registry validated when it was written (no validation)."""
    parsed = ChatTemplate(messages)
    return _sealed(_Fields(version, "", created_at, author, message, metadata or EMPTY, messages, config or EMPTY,
                           parsed, parsed.variables, parsed))  # fmt: skip


def _sealed(built: _Fields) -> CachedVersion:
    built.__class__ = CachedVersion  # same layout: from now on every set is refused
    return built  # type: ignore[return-value]


def cached_from_model(model: PromptVersion | CachedVersion) -> CachedVersion:
    """The cached form of a registry's :class:`~promptreg.PromptVersion` (a :class:`CachedVersion` as is).

    The model parsed its template when it was built: its compiled form is taken, not compiled again.
    """
    if isinstance(model, CachedVersion):
        return model
    chat: ChatTemplate | None = model._chat  # the model's own parse (a slot, or parsed again once by a copy)
    metadata, config = dict(model.metadata), dict(model.config)
    if chat is not None:
        return _sealed(_Fields(model.version, "", model.created_at, model.author, model.message, metadata or EMPTY,
                               model.messages, config or EMPTY, chat, chat.variables, chat))  # fmt: skip
    return cached_text(model.version, model.prompt_text, model._format, model.variables, model.created_at,
                       model.author, model.message, metadata, config)  # fmt: skip


VersionRow = tuple[int, str, datetime, "str | None", "str | None", "dict[str, Any] | None",
                   "tuple[dict[str, str], ...] | None", "dict[str, Any] | None"]  # fmt: skip
"""``(version, prompt_text, created_at, author, message, metadata, messages, config)``, ``created_at``
timezone-aware UTC; ``messages`` ``None`` for a text version."""


def cached_batch(rows: list[VersionRow]) -> list[CachedVersion]:
    """The cached version of each row, trusted (the registry validated them when they were written),
    the templates of the text versions compiled together (:func:`~promptreg.registry.template.compile_batch`)."""
    formats, kept = compile_batch([row[1] for row in rows if row[6] is None])
    built: list[CachedVersion] = []
    position = 0
    for number, _text, created_at, author, message, metadata, messages, config in rows:
        if messages is None:
            built.append(cached_text(number, kept[position], formats[position], None, created_at, author, message,
                                     metadata, config))  # fmt: skip
            position += 1
        else:
            built.append(cached_chat(number, tuple(messages), created_at, author, message, metadata, config))
    return built
