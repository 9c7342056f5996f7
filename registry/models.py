"""The data model: immutable versions, mutable labels, and the audit trail.

All models are frozen pydantic v2 models. A :class:`PromptVersion` parses its template once, when it
is built, so :meth:`PromptVersion.render` only joins strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from promptreg.registry.chat import ChatTemplate, Message, check_shape
from promptreg.registry.template import compile_template, render_format, text_variables
from promptreg.registry.validation import LATEST

AuditAction = Literal[
    "create_prompt",
    "add_version",
    "set_label",
    "delete_label",
    "rollback",
    "set_compatibility",
    "start_rollout",
    "set_rollout",
    "promote_rollout",
    "abort_rollout",
    "protect_label",
    "unprotect_label",
    "request_move",
    "approve_request",
    "reject_request",
]
"""What an :class:`AuditEvent` records."""
CompatibilityMode = Literal["none", "backward", "full"]
"""A prompt's compatibility mode (see :mod:`promptreg.registry.compatibility`)."""
VersionType = Literal["text", "chat"]
"""A text version holds ``prompt_text``; a chat version holds ``messages``."""
_NO_NAMES: frozenset[str] = frozenset()


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def describe_label_move(label: str | None, previous_version: int | None, version: int | None) -> str:
    """A label move in words, the one way every command and message says it.

    ``production 2 -> 3``; ``production unset -> 1`` (the label did not exist); ``production 3 ->
    deleted`` (the label was removed).
    """
    before = "unset" if previous_version is None else str(previous_version)
    after = "deleted" if version is None else str(version)
    return f"{label} {before} -> {after}"


def _as_utc(value: datetime) -> datetime:
    # A naive datetime is taken to be UTC already; an aware one is converted.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class _Compiled(Protocol):
    """What :class:`VersionRendering` needs of the class it is mixed into."""

    _format: Any
    messages: tuple[dict[str, str], ...] | None

    @property
    def variables(self) -> frozenset[str]: ...


class VersionRendering:
    """``render`` and ``render_messages`` of a version whose template was compiled when it was built:
    :class:`PromptVersion` (the registry's model) and :class:`~promptreg.CachedVersion` (the client's)."""

    __slots__ = ()

    def render(self: _Compiled, /, **variables: Any) -> str | list[Message]:
        """A text version: the text with every ``{{name}}`` replaced by ``str(variables[name])``.

        A chat version: the list of ``{"role", "content"}`` messages, every content rendered and each
        placeholder replaced by the list of messages passed under its name. Raises
        :class:`~promptreg.MissingVariableError` naming every variable and placeholder not given, and
        :class:`~promptreg.InvalidInputError` for a placeholder value that is not a list of messages.
        Extra variables are ignored.
        """
        try:  # the floor: one C call; the parsed template only when a variable is missing
            text: str | list[Message] = self._format.format_map(variables)
            return text
        except KeyError:
            if self.messages is not None:
                raise
            return render_format(self._format, self.variables, variables)

    def render_messages(self: _Compiled, /, **variables: Any) -> list[Message]:
        """Always a list of messages: a chat version's :meth:`render`, or a text version as one
        ``user`` message. Raises what :meth:`render` raises."""
        if self.messages is not None:
            rendered: list[Message] = self._format.format_map(variables)
            return rendered
        return [{"role": "user", "content": str(VersionRendering.render(self, **variables))}]


class PromptVersionLike(Protocol):
    """What every version object offers: :class:`PromptVersion` (the registry's API) and
    :class:`~promptreg.CachedVersion` (what :meth:`promptreg.PromptClient.get` returns).

    Annotate with it code that reads versions from either. ``metadata`` and ``config`` are read-only
    mappings here (a version is immutable).
    """

    @property
    def version(self) -> int:
        """1-based, contiguous per prompt."""

    @property
    def prompt_text(self) -> str:
        """The template text (empty for a chat version)."""

    @property
    def created_at(self) -> datetime:
        """When the version was written (timezone-aware UTC)."""

    @property
    def author(self) -> str | None:
        """Who wrote it."""

    @property
    def message(self) -> str | None:
        """Why (the commit message of the version)."""

    @property
    def metadata(self) -> Mapping[str, Any]:
        """Free-form metadata (read-only)."""

    @property
    def type(self) -> VersionType:
        """``"text"`` or ``"chat"``."""

    @property
    def messages(self) -> tuple[dict[str, str], ...] | None:
        """A chat version's messages and placeholders (``None``: text)."""

    @property
    def config(self) -> Mapping[str, Any]:
        """The model configuration (read-only)."""

    @property
    def variables(self) -> frozenset[str]:
        """The ``{{variable}}`` names of the text or of every message."""

    @property
    def placeholders(self) -> frozenset[str]:
        """A chat version's placeholder names (empty for text)."""

    def render(self, /, **variables: Any) -> str | list[Message]:
        """The text (or the messages) with every variable filled in: see :meth:`PromptVersion.render`."""

    def render_messages(self, /, **variables: Any) -> list[Message]:
        """Always a list of messages: see :meth:`PromptVersion.render_messages`."""


class PromptVersion(VersionRendering, BaseModel):
    """One immutable version of a prompt: a text template, or a list of chat messages.

    A ``"text"`` version holds ``prompt_text``; a ``"chat"`` version holds ``messages`` (a tuple of
    ``{"role", "content"}`` dicts and ``{"placeholder": name}`` slots, see :mod:`promptreg.registry.chat`) and
    an empty ``prompt_text``. ``config`` is the model configuration (model name, temperature, ...).
    ``variables`` is the set of ``{{name}}`` variables in the text or in every message;
    ``placeholders`` the placeholder names; ``render`` fills both.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")
    # The parsed template lives in plain slots, not pydantic private attributes: reading a private
    # attribute goes through BaseModel.__getattr__ (~2 us), a slot is a C descriptor (render's floor).
    # ``_format``: what render() calls format_map on (the format string, or the ChatTemplate);
    # ``_variables``: the variable names; ``_chat``: the ChatTemplate of a chat version, else None.
    __slots__ = ("_chat", "_format", "_variables")

    version: int = Field(ge=1, description="1-based, contiguous per prompt")
    prompt_text: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    author: str | None = None
    message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    type: VersionType = "text"
    messages: tuple[dict[str, str], ...] | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    partials: dict[str, int] = Field(default_factory=dict, exclude_if=lambda value: not value)
    """For a version composed at a label (``get_version(..., resolve=True)``): every partial it
    includes, at any depth, and the version used; empty for a version as stored (and then left out
    of its JSON, so stored files and exports keep their format)."""

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @field_validator("messages")
    @classmethod
    def _chat_shape(cls, value: tuple[dict[str, str], ...] | None) -> tuple[dict[str, str], ...] | None:
        if value is not None:
            check_shape(value)
        return value

    def model_post_init(self, context: Any, /) -> None:
        """Parse the template (or every message) once, when the version is built."""
        messages = self.messages
        if messages is None:
            format_string, names = compile_template(self.prompt_text)
            object.__setattr__(self, "_format", format_string)
            object.__setattr__(self, "_variables", names)
            object.__setattr__(self, "_chat", None)
            if self.type != "text":
                raise ValueError("a chat version needs messages")
            return
        parsed = ChatTemplate(messages)
        object.__setattr__(self, "_chat", parsed)
        object.__setattr__(self, "_variables", parsed.variables)
        object.__setattr__(self, "_format", parsed)  # format_map renders every message
        if self.type != "chat":  # the type follows from the content
            self.__dict__["type"] = "chat"

    @classmethod
    def trusted(
        cls,
        version: int,
        prompt_text: str,
        created_at: datetime,
        author: str | None,
        message: str | None,
        metadata: dict[str, Any],
        messages: tuple[dict[str, str], ...] | None = None,
        config: dict[str, Any] | None = None,
    ) -> PromptVersion:
        """A version built from values the registry validated when it was written: no validation.

        For readers of a registry (the client's cache): ``created_at`` must be timezone-aware UTC
        and every value of the type its field declares. The template is parsed as in the
        constructor. Use the constructor for anything else.
        """
        fields = {
            "version": version,
            "prompt_text": prompt_text,
            "created_at": created_at,
            "author": author,
            "message": message,
            "metadata": metadata,
            "type": "text" if messages is None else "chat",
            "messages": messages,
            "config": {} if config is None else config,
            "partials": {},
        }
        # What model_construct does, without its per-field loops (half the cost of validating).
        # Every field is set, so all share one fields-set (472 bytes each otherwise): pydantic only
        # ever adds field names to it, which are all in it, or copies it first (model_copy).
        obj = cls.__new__(cls)
        object.__setattr__(obj, "__dict__", fields)
        object.__setattr__(obj, "__pydantic_fields_set__", _ALL_FIELDS_SET)
        object.__setattr__(obj, "__pydantic_extra__", None)
        object.__setattr__(obj, "__pydantic_private__", None)
        obj.model_post_init(None)
        return obj

    def __getattr__(self, item: str) -> Any:
        # A copy made by pickle, copy or model_copy has empty slots: parse again, once.
        if item == "_variables" and self.messages is None:
            names = text_variables(self.prompt_text)
            object.__setattr__(self, "_variables", names)
            return names
        if item in ("_chat", "_format", "_variables"):
            self.model_post_init(None)
            return object.__getattribute__(self, item)
        return super().__getattr__(item)  # type: ignore[misc]

    @property
    def variables(self) -> frozenset[str]:
        """The template variable names used by this version's text (or by every message)."""
        names: frozenset[str] = self._variables
        return names

    @property
    def placeholders(self) -> frozenset[str]:
        """The placeholder names of a chat version (empty for text)."""
        if self.messages is None:
            return _NO_NAMES
        parsed: ChatTemplate = self._chat
        return parsed.placeholders

    def to_model(self) -> PromptVersion:
        """This version itself (what :meth:`promptreg.CachedVersion.to_model` gives for a cached one)."""
        return self


_VERSION_FIELDS = frozenset(PromptVersion.model_fields)
_ALL_FIELDS_SET = set(_VERSION_FIELDS)


class Rollout(BaseModel):
    """A rollout running on a label: the label keeps its version (the *stable* one) and
    ``version`` (the *candidate*) gets ``percent`` of the lookups (``0 < percent < 100``, at most two
    decimals). A client given a ``key`` picks by a stable hash of it (the same key gets the same
    variant everywhere, and raising the percentage only moves keys to the candidate); without a key,
    at random. ``started_at`` and ``author`` are those of ``start_rollout``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="the candidate version")
    percent: float = Field(gt=0, lt=100)
    started_at: datetime = Field(default_factory=utcnow)
    author: str | None = None

    @field_validator("started_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class Prompt(BaseModel):
    """A named prompt: its versions (oldest first), the labels that point at them, and its
    ``compatibility`` mode (which label moves it accepts, see :mod:`promptreg.registry.compatibility`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    author: str | None = None
    versions: list[PromptVersion] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)
    compatibility: CompatibilityMode = "none"
    rollouts: dict[str, Rollout] = Field(default_factory=dict)
    """The rollouts running, by label (each label is also in ``labels``: its stable version)."""

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @property
    def latest(self) -> PromptVersion | None:
        """The newest version, or ``None`` when the prompt has no version yet."""
        return self.versions[-1] if self.versions else None

    def get_version_by_number(self, version_number: int) -> PromptVersion | None:
        """The version with this number, or ``None``."""
        if 1 <= version_number <= len(self.versions):
            found = self.versions[version_number - 1]
            if found.version == version_number:
                return found
        return next((v for v in self.versions if v.version == version_number), None)

    def get_version_by_label(self, label: str) -> PromptVersion | None:
        """The version ``label`` points at (``latest`` is the newest), or ``None``."""
        if label == LATEST:
            return self.latest
        number = self.labels.get(label)
        return None if number is None else self.get_version_by_number(number)


class AuditEvent(BaseModel):
    """One entry of the audit trail: a write, who made it, and why.

    ``rev`` is the registry-wide revision the write produced. For label moves ``version`` is where
    the label points after the write (``None`` after a delete) and ``previous_version`` where it
    pointed before (``None`` if it did not exist). Rollouts: ``start_rollout`` and ``set_rollout``
    have the candidate in ``version``, the label's (stable) version in ``previous_version`` and the
    new share in ``percent``; ``promote_rollout`` is a label move to the candidate (``version``) from
    the stable one; ``abort_rollout`` has the label's version in ``version`` and the dropped candidate
    in ``previous_version``. ``forced`` marks a move the prompt's compatibility
    mode refused (or could not check) that was made anyway (``force=True``); ``compatibility`` is the
    mode a ``set_compatibility`` write set.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rev: int
    at: datetime
    action: AuditAction
    prompt: str
    label: str | None = None
    version: int | None = None
    previous_version: int | None = None
    author: str | None = None
    reason: str | None = None
    forced: bool = False
    compatibility: CompatibilityMode | None = None
    percent: float | None = None
    request: str | None = None
    """The move request this write is about (``request_move``, ``approve_request``,
    ``reject_request``), or that an approved move applied (``set_label``)."""
    approvals: int | None = None
    """``protect_label``: the approvals the label's moves need."""

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)
