"""What the Redis backend reads back, turned into models and errors: version hashes, audit-stream
entries, and the result codes of the write scripts (``{"ERR", CODE, detail}``), each mapped once.

:mod:`promptreg.registry.redis.store` writes and calls; this module only decodes, so a change to the stored
format or to a script's refusals is made here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgpack

from promptreg.registry.compatibility import CompatibilityReport, refusal_error, validate_mode
from promptreg.registry.errors import (
    InvalidInputError,
    LabelConflictError,
    LabelNotFoundError,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistryError,
    ProtectedLabelError,
    RegistryCorruptError,
    RegistryUnavailableError,
    RollbackUnavailableError,
    RolloutActiveError,
    RolloutNotFoundError,
    VersionNotFoundError,
)
from promptreg.registry.models import AuditEvent, PromptVersion, VersionType
from promptreg.registry.redis.chat import chat_fields
from promptreg.registry.rollouts import same_version

ADD_VERSION_ATTEMPTS = 1000
"""Tries of a write whose declared key another writer's write made wrong (the script answers RETRY).

Every RETRY means another write landed, so the writers as a whole always progress; one writer can
lose many races in a row only while others keep writing to the same prompt. When the tries run out,
:class:`~promptreg.RegistryUnavailableError` says so (nothing was written by this call)."""


def text_field(value: bytes | None) -> str | None:
    """A stored text field decoded, or ``None`` when absent."""
    return None if value is None else value.decode("utf-8")


def version_from_hash(name: str, number: int, fields: dict[bytes, bytes]) -> PromptVersion:
    """Build a :class:`PromptVersion` from a version hash (an ``HGETALL`` result).

    Raises :class:`RegistryCorruptError` when the hash is not a promptreg version.
    """
    try:
        metadata = msgpack.unpackb(fields[b"metadata"], raw=False) if b"metadata" in fields else {}
        messages, config = chat_fields(fields)
        return PromptVersion(
            version=number,
            prompt_text=fields[b"prompt_text"].decode("utf-8"),
            created_at=datetime.fromisoformat(fields[b"created_at"].decode("ascii")),
            author=text_field(fields.get(b"author")),
            message=text_field(fields.get(b"message")),
            metadata=metadata,
            messages=messages,
            config=config,
        )
    except (KeyError, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise RegistryCorruptError(f"version {number} of prompt {name!r} is not readable: {exc!r}") from exc


def event_from_entry(fields: dict[bytes, bytes]) -> AuditEvent:
    """Build an :class:`AuditEvent` from an audit-stream entry; :class:`RegistryCorruptError` if unreadable."""

    def opt_int(key: bytes) -> int | None:
        value = fields.get(key)
        return None if value is None else int(value)

    try:
        return AuditEvent(
            rev=int(fields[b"rev"]),
            at=datetime.fromisoformat(fields[b"at"].decode("ascii")),
            action=fields[b"action"].decode(),  # type: ignore[arg-type]  # validated by pydantic
            prompt=fields[b"prompt"].decode("utf-8"),
            label=text_field(fields.get(b"label")),
            version=opt_int(b"version"),
            previous_version=opt_int(b"previous_version"),
            author=text_field(fields.get(b"author")),
            reason=text_field(fields.get(b"reason")),
            forced=fields.get(b"forced") == b"1",
            compatibility=text_field(fields.get(b"compatibility")),  # type: ignore[arg-type]  # validated by pydantic
            percent=None if b"percent" not in fields else float(fields[b"percent"]),
            request=text_field(fields.get(b"request")),
            approvals=opt_int(b"approvals"),
        )
    except (KeyError, ValueError) as exc:
        raise RegistryCorruptError(f"unreadable audit entry {fields!r}: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a refused write was about, for building its exception: the write's own arguments and the
    script's reply ``{"ERR", CODE, detail...}`` (``detail`` the parts after the code)."""

    name: str
    label: str
    version: int
    expected: int
    detail: tuple[bytes, ...]

    @property
    def actual(self) -> int | None:
        """The label's current version a compare-and-set found (``CONFLICT``)."""
        return int(self.detail[0]) if self.detail and self.detail[0] is not None else None


_TYPES: dict[bytes, VersionType] = {b"text": "text", b"chat": "chat"}


def _incompatible(r: Refusal) -> PromptRegistryError:
    # check_move in _commit.lua: mode, added, removed, current version, current type, target type, kinds
    mode, added, removed = (part.decode("utf-8") for part in r.detail[0:3])
    current_type, target_type = (_TYPES.get(part, "text") for part in r.detail[4:6])
    report = CompatibilityReport(
        False, validate_mode(mode), tuple(added.split()), tuple(removed.split()), int(r.detail[3]), r.version,
        None if current_type == target_type else (current_type, target_type), tuple(r.detail[6].decode().split()),
    )  # fmt: skip
    return refusal_error(r.name, r.label, report)


REFUSALS: dict[bytes, Callable[[Refusal], PromptRegistryError]] = {  # an unknown code: RegistryCorruptError
    # Every result code of registry/redis/lua/*.lua ({"ERR", CODE, detail...}), each mapped to its error once.
    b"NOPROMPT": lambda r: PromptNotFoundError(r.name),
    b"EXISTS": lambda r: PromptExistsError(r.name),
    b"NOVERSION": lambda r: VersionNotFoundError(r.name, r.version),
    b"NOLABEL": lambda r: LabelNotFoundError(r.name, r.label),
    b"NOROLLBACK": lambda r: RollbackUnavailableError(r.name, r.label),
    b"CONFLICT": lambda r: LabelConflictError(r.name, r.label, r.expected, r.actual),
    b"ROLLOUT": lambda r: RolloutActiveError(r.name, r.label, r.actual),
    b"NOROLLOUT": lambda r: RolloutNotFoundError(r.name, r.label),
    b"SAMEVERSION": lambda r: same_version(r.name, r.label, r.version),
    b"RETRY": lambda r: RegistryUnavailableError(
        f"prompt {r.name!r}: other writers kept changing it; {ADD_VERSION_ATTEMPTS} tries, nothing written"
    ),
    b"GRAPH": lambda r: (
        RegistryUnavailableError(  # redis/partials.py retries first; reached only by a caller that does not
            f"prompt {r.name!r} is in a composition: the write needs the graph checked at the current revision; "
            "other writers kept changing it, nothing written"
        )
    ),
    b"PROTECTED": lambda r: ProtectedLabelError(r.name, r.label),
    b"NOTPROTECTED": lambda r: InvalidInputError(f"label {r.label!r} of prompt {r.name!r} is not protected"),
    b"REQUEST": lambda r: RegistryUnavailableError(
        f"prompt {r.name!r}: the move request kept changing while it was decided; nothing written"
    ),
    b"CORRUPT": lambda r: RegistryCorruptError(f"prompt {r.name!r} is inconsistent in redis (CORRUPT)"),
    b"INCOMPATIBLE": _incompatible,
    b"NOINPUTS": lambda r: RegistryCorruptError(
        f"prompt {r.name!r}: version {int(r.detail[0])} was written before promptreg stored its variables and "
        f"placeholders, so the compatibility check of label {r.label!r} cannot read it: run `promptreg migrate` "
        "(or force the move)"
    ),
}


def refusal(
    name: str, label: str | None, result: list[Any], expected: int | None = None, version: int = 0
) -> PromptRegistryError:
    """The typed error of a script's refusal ``result`` (``{"ERR", CODE, detail...}``), from :data:`REFUSALS`;
    an unknown code is a :class:`RegistryCorruptError`."""
    code = result[1] if isinstance(result[1], bytes) else str(result[1]).encode()
    build = REFUSALS.get(code)
    if build is None:
        return RegistryCorruptError(f"prompt {name!r} is inconsistent in redis ({code.decode(errors='replace')})")
    return build(Refusal(name, str(label), version, int(expected or 0), tuple(result[2:])))
