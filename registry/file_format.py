"""The JSON-file registry's format: what the file holds (:class:`StoredState`), and reading it back
with every check (:func:`parse_state`). :mod:`promptreg.registry.file_store` reads, locks and writes
the file; the layout is described there.

A file that cannot be read as a promptreg registry raises :class:`~promptreg.RegistryCorruptError`
naming the first problem; one nested deeper than
:data:`~promptreg.registry.validation.MAX_JSON_DEPTH` levels is refused without a recursive parse.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from promptreg.registry.errors import InvalidInputError, RegistryCorruptError
from promptreg.registry.governance import MAX_APPROVALS, MoveRequest
from promptreg.registry.models import AuditEvent, CompatibilityMode, Prompt, PromptVersion, Rollout
from promptreg.registry.rollouts import points_of
from promptreg.registry.validation import PERCENT_SCALE, check_json_depth, validate_label, validate_name

FORMAT: Final = "promptreg"
"""The value of the file's ``format`` marker."""
FORMAT_VERSION: Final = 1
"""The file layout version this module reads and writes."""


class StoredPrompt(BaseModel):
    """One prompt as the file holds it: its header, versions, labels, previous positions, history."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = None
    author: str | None = None
    created_at: datetime
    versions: list[PromptVersion] = Field(default_factory=list)
    labels: dict[str, int] = Field(default_factory=dict)
    previous: dict[str, int] = Field(default_factory=dict)
    history: list[AuditEvent] = Field(default_factory=list)
    compatibility: CompatibilityMode = "none"
    rollouts: dict[str, Rollout] = Field(default_factory=dict)
    protected: dict[str, int] = Field(default_factory=dict, exclude_if=lambda value: not value)
    """Protected labels -> the approvals a move needs (registry/governance.py)."""

    def to_prompt(self, name: str) -> Prompt:
        header = self.model_dump(include={"description", "author", "created_at", "compatibility"})
        return Prompt(
            name=name, versions=list(self.versions), labels=dict(self.labels), rollouts=dict(self.rollouts), **header
        )


class StoredState(BaseModel):
    """The whole file: the format marker, the registry revision, every prompt."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["promptreg"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    rev: int = Field(default=0, ge=0)
    prompts: dict[str, StoredPrompt] = Field(default_factory=dict)
    requests: dict[str, MoveRequest] = Field(default_factory=dict, exclude_if=lambda value: not value)
    """Move requests of protected labels, by id."""


def parse_state(data: bytes, path: Path) -> StoredState:
    """Read and check a registry file; anything unreadable raises RegistryCorruptError."""
    untouched = "the file was left untouched"
    if not data.strip():
        raise RegistryCorruptError(f"{path}: the file is empty, not a promptreg registry ({untouched})")
    try:
        state = StoredState.model_validate_json(data, strict=True)
    except ValidationError as exc:
        raise RegistryCorruptError(f"{path}: {_diagnose(data, exc)} ({untouched})") from exc
    problem = _inconsistency(state)
    if problem:
        raise RegistryCorruptError(f"{path}: {problem} ({untouched})")
    return state


def _diagnose(data: bytes, exc: ValidationError) -> str:
    try:
        check_json_depth(data, "the file")  # json.loads recurses: bound the depth first
    except InvalidInputError as depth_exc:
        return f"{depth_exc}, not a promptreg registry"
    try:
        raw = json.loads(data)
    except ValueError as json_exc:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return f"not valid JSON, truncated or corrupt ({json_exc})"
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        return f'not a promptreg registry file (no "format": "{FORMAT}" marker)'
    if raw.get("format_version") != FORMAT_VERSION:
        return f"unsupported format_version {raw.get('format_version')!r} (this version reads {FORMAT_VERSION})"
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "<top>"
    return f"malformed registry data at {where}: {first['msg']} ({exc.error_count()} problem(s) in all)"


def _inconsistency(state: StoredState) -> str | None:
    """What breaks the registry's invariants, or ``None``."""
    for name, stored in state.prompts.items():
        try:
            validate_name(name)
            for label in (*stored.labels, *stored.previous, *stored.protected):
                validate_label(label, settable=True)
        except InvalidInputError as exc:
            return f"prompt {name!r}: {exc}"
        for index, version in enumerate(stored.versions, 1):
            if version.version != index:
                return f"prompt {name!r}: version #{index} is numbered {version.version}"
        count = len(stored.versions)
        for what, pointers in (("label", stored.labels), ("previous position of label", stored.previous)):
            for label, number in pointers.items():
                if not 1 <= number <= count:
                    return f"prompt {name!r}: {what} {label!r} points at missing version {number}"
        for label, rollout in stored.rollouts.items():
            if label not in stored.labels or not 1 <= rollout.version <= count:
                return f"prompt {name!r}: the rollout of label {label!r} has no label or no candidate version"
            if points_of(rollout.percent) != rollout.percent * PERCENT_SCALE:
                return f"prompt {name!r}: the rollout of label {label!r} has a percentage with over two decimals"
        for event in stored.history:
            if event.prompt != name or event.rev > state.rev:
                return f"prompt {name!r}: audit entry rev {event.rev} does not belong here"
        if any(not 1 <= count <= MAX_APPROVALS for count in stored.protected.values()):
            return f"prompt {name!r}: a protected label needs 1 to {MAX_APPROVALS} approvals"
    for request_id, request in state.requests.items():
        if request.id != request_id or request.prompt not in state.prompts:
            return f"move request {request_id!r:.40} does not belong here"
    return None
