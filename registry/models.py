"""The data model: immutable versions, mutable labels, and the audit trail.

All models are frozen pydantic v2 models. A :class:`PromptVersion` parses its template once, when it
is built, so :meth:`PromptVersion.render` only joins strings.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from registry.template import Template
from registry.validation import LATEST

AuditAction = Literal["create_prompt", "add_version", "set_label", "delete_label", "rollback"]
"""What an :class:`AuditEvent` records."""


def utcnow() -> datetime:
    """The current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    # A naive datetime is taken to be UTC already; an aware one is converted.
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class PromptVersion(BaseModel):
    """One immutable version of a prompt.

    ``variables`` is the set of ``{{name}}`` placeholders in ``prompt_text``; ``render`` fills them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="1-based, contiguous per prompt")
    prompt_text: str
    created_at: datetime = Field(default_factory=utcnow)
    author: str | None = None
    message: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    _template: Template = PrivateAttr()

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    def model_post_init(self, context: Any, /) -> None:
        """Parse the template once, when the version is built."""
        self._template = Template(self.prompt_text)

    @property
    def variables(self) -> frozenset[str]:
        """The template variable names used by this version's text."""
        return self._template.variables

    def render(self, /, **variables: Any) -> str:
        """Return the text with every ``{{name}}`` replaced by ``str(variables[name])``.

        Raises :class:`~registry.MissingVariableError` naming every variable not given.
        Extra variables are ignored.
        """
        return self._template.render(variables)


class Prompt(BaseModel):
    """A named prompt: its versions (oldest first) and the labels that point at them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    author: str | None = None
    versions: list[PromptVersion] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)

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
    pointed before (``None`` if it did not exist).
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

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)
