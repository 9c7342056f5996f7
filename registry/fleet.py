"""The fleet view: which client process serves which revision (presence), and confirming a write.

Each :class:`promptreg.PromptClient` on Redis reports one small record (its *presence*) off the lookup
path: at start, right after it applies a change (the acknowledgement), and every
``report_interval`` seconds; the record expires after :data:`EXPIRY_INTERVALS` intervals without a
report. :meth:`promptreg.PromptRegistry.fleet` lists the records as :class:`FleetMember`;
:meth:`promptreg.PromptRegistry.wait_for_fleet` waits until every member serves a revision and
returns a :class:`FleetWait`. The Redis layout is in :mod:`promptreg.registry.redis.keys` and
:mod:`promptreg.registry.redis.fleet`; this module holds the models and the record's wire form (msgpack, one
map), shared by the writer (the client) and the readers (the registry, the CLI).

**A record is untrusted input.** Every service holds the ``reader`` ACL user, which may write any
presence key (:mod:`promptreg.registry.redis.acl`), so a record read back may have been written by anyone of them.
:func:`decode_member` therefore accepts only what a client of this library writes: at most
:data:`MAX_RECORD_BYTES`, one msgpack map with every field of the right type (no coercion), a valid
client id, printable one-line strings within their limits, finite times, an interval a client may
have. Anything else is not a member (the readers count it, :class:`FleetRead`). Printers still
escape control characters (:func:`escape_control`): the checks keep forged rows out, the escaping
keeps the terminal safe whatever a future field lets through.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.validation import validate_label

EXPIRY_INTERVALS = 3
"""A member whose client has not reported for this many ``report_interval`` s disappears."""
DEFAULT_REPORT_INTERVAL = 5.0
"""Seconds between a client's reports when nothing changes."""
MIN_REPORT_INTERVAL = 0.05
MAX_REPORT_INTERVAL = 3600.0
MAX_CLIENT_ID = 200
MAX_CLIENT_NAME = 100
MAX_HOST = 255
"""A host name as reported (longer ones are cut: a DNS name has at most 253 characters)."""
MAX_LIBRARY_VERSION = 64
MAX_STATE = 32
MAX_PID = 2**32 - 1
MAX_REV = 2**63 - 1
MAX_RECORD_BYTES = 4096
"""The largest presence record a reader accepts (a client's is 200 to 700 bytes; all limits above
together stay under 2.5 KB). Readers never fetch more than this many bytes of a record plus one."""

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_HOST_CHAR = re.compile(r"[^A-Za-z0-9.-]")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def escape_control(text: str) -> str:
    """``text`` with every character that is not printable written as its Python escape.

    A newline becomes ``\\n``, ESC ``\\x1b``, a bidirectional override ``\\u202e``, a lone
    surrogate ``\\udcff``; printable text (accents and other scripts included) is kept. What the
    CLI prints of a presence record goes through this: a record can be forged (module docstring).
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def _one_line(value: str, what: str, limit: int) -> str:
    if not value or len(value) > limit or not value.isprintable():
        raise ValueError(f"{what} must be 1-{limit} printable characters")
    return value


def reportable(text: str, limit: int) -> str:
    """What the client reports of a value it does not choose (its host name, the library version):
    control characters escaped, cut to ``limit`` characters, ``"-"`` when empty."""
    return escape_control(text)[:limit] or "-"


class FleetMember(BaseModel):
    """One client process as it last reported itself.

    ``client_id`` is stable for the life of the process (host, pid and a random part); ``rev`` is
    the registry revision the client serves; ``state`` its status (``initializing``, ``live``,
    ``stale``); ``label`` its default label; ``last_seen`` when it last reported (the client's
    clock); the record expires ``3 * report_interval`` seconds after that report (the server's clock).
    Every string is one printable line within its limit (``MAX_*`` above; ``client_id``,
    ``client_name`` and ``label`` as their validators say), numbers are within range: a record
    outside them is no member (pydantic's ``ValidationError`` when built, ``None`` when decoded).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: str
    client_name: str | None = None
    host: str
    pid: int = Field(ge=0, le=MAX_PID)
    label: str
    library_version: str
    state: str
    rev: int = Field(ge=0, le=MAX_REV)
    started_at: datetime
    last_seen: datetime
    report_interval: float = Field(ge=MIN_REPORT_INTERVAL, le=MAX_REPORT_INTERVAL)

    @field_validator("started_at", "last_seen")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    # Every string is one printable line within a limit: the fleet table prints them (a newline
    # in a record would add a row), and a reader keeps what it reads bounded.
    @field_validator("client_id")
    @classmethod
    def _client_id(cls, value: str) -> str:
        return validate_client_id(value)

    @field_validator("client_name")
    @classmethod
    def _client_name(cls, value: str | None) -> str | None:
        return validate_client_name(value)

    @field_validator("label")
    @classmethod
    def _label(cls, value: str) -> str:
        return validate_label(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return _one_line(value, "host", MAX_HOST)

    @field_validator("library_version")
    @classmethod
    def _library_version(cls, value: str) -> str:
        return _one_line(value, "library_version", MAX_LIBRARY_VERSION)

    @field_validator("state")
    @classmethod
    def _state(cls, value: str) -> str:
        return _one_line(value, "state", MAX_STATE)


class FleetWait(BaseModel):
    """What :meth:`~promptreg.PromptRegistry.wait_for_fleet` saw.

    ``reached``: the ``client_id`` s serving ``rev`` or newer; ``lagging``: those still behind when
    the wait ended; ``gone``: members that were behind and whose record expired or was removed
    during the wait (closed or dead: they serve nothing any more). ``elapsed`` is in seconds;
    ``complete`` means nothing lags (also when no client reports at all: check ``reached``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rev: int
    reached: list[str]
    lagging: list[str]
    gone: list[str] = Field(default_factory=list)
    elapsed: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def complete(self) -> bool:
        """Whether every client present when the wait began serves ``rev`` (or has gone)."""
        return not self.lagging


@dataclass(frozen=True, slots=True)
class FleetRead:
    """One read of the fleet: the members, and what the read left out.

    ``malformed``: index entries and records that are not a client's report (wrong size, type or
    fields, an invalid id, a record without a server-side expiry or with one its own interval does
    not allow, an index of the wrong type); they were skipped. ``truncated``: the index held more
    entries than a read takes (:data:`promptreg.registry.redis.fleet.MAX_FLEET`), so some members may be
    missing. ``promptreg fleet`` prints both; ``label --wait`` does not confirm a truncated fleet.
    """

    members: list[FleetMember] = field(default_factory=list)
    malformed: int = 0
    truncated: bool = False


def is_client_id(value: object) -> bool:
    """Whether ``value`` can be a client id: letters, digits and ``. _ : -``, at most 200 characters."""
    return isinstance(value, str) and len(value) <= MAX_CLIENT_ID and _CLIENT_ID.fullmatch(value) is not None


def validate_client_id(client_id: str) -> str:
    """Return ``client_id`` if it can name a presence key, else raise :class:`~promptreg.InvalidInputError`."""
    if not is_client_id(client_id):
        raise InvalidInputError(f"invalid client id {client_id!r}: letters, digits and . _ : - (at most 200)")
    return client_id


def validate_client_name(name: str | None) -> str | None:
    """A printable one-line name of at most 100 characters, or ``None``; else :class:`~promptreg.InvalidInputError`."""
    if name is None:
        return None
    if not isinstance(name, str) or not name or len(name) > MAX_CLIENT_NAME or not name.isprintable():
        raise InvalidInputError(f"invalid client_name {name!r}: 1-100 printable characters")
    return name


def validate_report_interval(seconds: float) -> float:
    """``seconds`` as a float between 0.05 and 3600; else :class:`~promptreg.InvalidInputError`."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidInputError(f"report_interval must be a number of seconds, got {seconds!r}")
    if not MIN_REPORT_INTERVAL <= seconds <= MAX_REPORT_INTERVAL:
        raise InvalidInputError(f"report_interval must be between 0.05 and 3600 seconds, got {seconds!r}")
    return float(seconds)


def host_part(hostname: str) -> str:
    """The host name as it may appear in a client id (other characters become ``-``; at most 64)."""
    cleaned = _HOST_CHAR.sub("-", hostname)[:64].strip("-.")
    return cleaned or "host"


def encode_member(member: FleetMember) -> bytes:
    """The presence record: one msgpack map (times as Unix seconds)."""
    data: dict[str, Any] = member.model_dump(exclude={"started_at", "last_seen"})
    data["started_at"] = member.started_at.timestamp()
    data["last_seen"] = member.last_seen.timestamp()
    packed: bytes = msgpack.packb(data)
    return packed


def decode_member(raw: bytes) -> FleetMember | None:
    """A record read back, or ``None`` if it is not one a client of this library writes (never raises).

    Refused: more than :data:`MAX_RECORD_BYTES`, anything but one msgpack map, a field missing or
    of another type (strict: no ``"7"`` for ``7``, no ``True`` for ``1``), a time that is not a
    finite number of seconds within the calendar, and whatever :class:`FleetMember` refuses.
    """
    if not isinstance(raw, bytes) or len(raw) > MAX_RECORD_BYTES:
        return None
    try:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict):
            return None
        for key in ("started_at", "last_seen"):
            seconds = data[key]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
                return None
            data[key] = datetime.fromtimestamp(seconds, UTC)
        return FleetMember.model_validate(data, strict=True)
    except (ValueError, TypeError, KeyError, OverflowError, OSError, msgpack.UnpackException):
        return None  # pydantic's ValidationError and InvalidInputError are ValueErrors


def await_fleet(
    rev: int,
    present: Iterable[FleetMember],
    read: Callable[[list[str]], dict[str, FleetMember | None]],
    timeout: float,
    started: float,
) -> FleetWait:
    """The fleet confirmation of a write (:meth:`~promptreg.PromptRegistry.wait_for_fleet`): poll
    ``read`` (the current record of each client still behind; ``None``: gone) until every member
    ``present`` at the start serves ``rev``, or ``timeout`` seconds after ``started`` (monotonic)."""
    reached: list[str] = []
    pending: list[str] = []
    for member in present:
        (reached if member.rev >= rev else pending).append(member.client_id)
    gone: list[str] = []
    delay = 0.001
    while pending:
        remaining = timeout - (time.monotonic() - started)
        if remaining <= 0:
            break
        time.sleep(min(delay, remaining))
        # Acknowledgements come within milliseconds, or 25 ms in a burst: poll closely, then gently.
        delay = min(delay * 2, 0.01 if time.monotonic() - started < 0.25 else 0.05)
        fresh = read(pending)
        still: list[str] = []
        for client_id in pending:
            found = fresh.get(client_id)
            if found is None:
                gone.append(client_id)
            elif found.rev >= rev:
                reached.append(client_id)
            else:
                still.append(client_id)
        pending = still
    return FleetWait(
        rev=rev, reached=sorted(reached), lagging=sorted(pending), gone=sorted(gone),
        elapsed=time.monotonic() - started,
    )  # fmt: skip
