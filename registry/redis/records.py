"""What the Redis backend reads back, turned into models and errors: version hashes, audit-stream
entries, and the result codes of the write scripts (``{"ERR", CODE, detail}``), each mapped once.

:mod:`promptreg.registry.redis.store` writes and calls; this module only decodes, so a change to the stored
format or to a script's refusals is made here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import msgpack

from promptreg.registry.errors import (
    LabelConflictError,
    LabelNotFoundError,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistryError,
    RegistryCorruptError,
    RegistryUnavailableError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.models import AuditEvent, PromptVersion
from promptreg.registry.redis.chat import chat_fields

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
        )
    except (KeyError, ValueError) as exc:
        raise RegistryCorruptError(f"unreadable audit entry {fields!r}: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class Refusal:
    """What a refused write was about, for building its exception."""

    name: str
    label: str
    version: int
    expected: int
    actual: int | None


REFUSALS: dict[str, Callable[[Refusal], PromptRegistryError]] = {  # an unknown code: RegistryCorruptError
    # The result codes of registry/redis/lua/*.lua ({"ERR", CODE, detail}), each mapped to its error once.
    "NOPROMPT": lambda r: PromptNotFoundError(r.name),
    "EXISTS": lambda r: PromptExistsError(r.name),
    "NOVERSION": lambda r: VersionNotFoundError(r.name, r.version),
    "NOLABEL": lambda r: LabelNotFoundError(r.name, r.label),
    "NOROLLBACK": lambda r: RollbackUnavailableError(r.name, r.label),
    "CONFLICT": lambda r: LabelConflictError(r.name, r.label, r.expected, r.actual),
    "RETRY": lambda r: RegistryUnavailableError(
        f"prompt {r.name!r}: other writers kept changing it; {ADD_VERSION_ATTEMPTS} tries, nothing written"
    ),
}
