"""The fleet view: which client process serves which revision (presence), and confirming a write.

Each :class:`client.PromptClient` on Redis reports one small record (its *presence*) off the lookup
path: at start, right after it applies a change (the acknowledgement), and every
``report_interval`` seconds; the record expires after :data:`EXPIRY_INTERVALS` intervals without a
report. :meth:`registry.PromptRegistry.fleet` lists the records as :class:`FleetMember`;
:meth:`registry.PromptRegistry.wait_for_fleet` waits until every member serves a revision and
returns a :class:`FleetWait`. The Redis layout is in :mod:`registry.keys` and
:mod:`registry.redis_fleet`; this module holds the models and the record's wire form (msgpack, one
map), shared by the writer (the client) and the readers (the registry, the CLI).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator

from registry.errors import InvalidInputError

EXPIRY_INTERVALS = 3
"""A member whose client has not reported for this many ``report_interval`` s disappears."""
DEFAULT_REPORT_INTERVAL = 5.0
"""Seconds between a client's reports when nothing changes."""
MIN_REPORT_INTERVAL = 0.05
MAX_REPORT_INTERVAL = 3600.0
MAX_CLIENT_ID = 200
MAX_CLIENT_NAME = 100

_CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]*")
_HOST_CHAR = re.compile(r"[^A-Za-z0-9.-]")


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class FleetMember(BaseModel):
    """One client process as it last reported itself.

    ``client_id`` is stable for the life of the process (host, pid and a random part); ``rev`` is
    the registry revision the client serves; ``state`` its status (``initializing``, ``live``,
    ``stale``); ``label`` its default label; ``last_seen`` when it last reported (the client's
    clock); the record expires ``3 * report_interval`` seconds after that report (the server's clock).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    client_id: str
    client_name: str | None = None
    host: str
    pid: int
    label: str
    library_version: str
    state: str
    rev: int = Field(ge=0)
    started_at: datetime
    last_seen: datetime
    report_interval: float = Field(gt=0)

    @field_validator("started_at", "last_seen")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class FleetWait(BaseModel):
    """What :meth:`~registry.PromptRegistry.wait_for_fleet` saw.

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


def validate_client_id(client_id: str) -> str:
    """Return ``client_id`` if it can name a presence key, else raise :class:`~registry.InvalidInputError`."""
    if not isinstance(client_id, str) or len(client_id) > MAX_CLIENT_ID or not _CLIENT_ID.fullmatch(client_id):
        raise InvalidInputError(f"invalid client id {client_id!r}: letters, digits and . _ : - (at most 200)")
    return client_id


def validate_client_name(name: str | None) -> str | None:
    """A printable one-line name of at most 100 characters, or ``None``; else :class:`~registry.InvalidInputError`."""
    if name is None:
        return None
    if not isinstance(name, str) or not name or len(name) > MAX_CLIENT_NAME or not name.isprintable():
        raise InvalidInputError(f"invalid client_name {name!r}: 1-100 printable characters")
    return name


def validate_report_interval(seconds: float) -> float:
    """``seconds`` as a float between 0.05 and 3600; else :class:`~registry.InvalidInputError`."""
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
    """A record read back, or ``None`` if it is not a presence record (never raises)."""
    try:
        data = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict):
            return None
        for key in ("started_at", "last_seen"):
            data[key] = datetime.fromtimestamp(float(data[key]), UTC)
        member = FleetMember.model_validate(data)
        validate_client_id(member.client_id)
    except (ValueError, TypeError, KeyError, OverflowError, InvalidInputError, msgpack.UnpackException):
        return None  # pydantic's ValidationError is a ValueError
    return member
