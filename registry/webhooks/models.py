"""What the webhooks store: endpoints, each endpoint's cursor, dead letters, the worker's lease.

Every model is frozen pydantic and re-validates what it reads back, so a stored record someone
edited (a ``file://`` URL, a malformed id) is refused (:class:`~promptreg.RegistryCorruptError`
from the store) rather than used.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime
from typing import Any, Final, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from promptreg.registry.errors import InvalidInputError, RegistryCorruptError
from promptreg.registry.models import _as_utc, utcnow
from promptreg.registry.urls import redact_url
from promptreg.registry.webhooks.event_types import FLEET_CONVERGED, FLEET_LAGGING, RESYNC, matches, validate_patterns

WebhookFormat = Literal["standard", "slack"]
"""``standard``: the event as JSON (``type``, ``timestamp``, ``data``); ``slack``: ``{"text": ...}``."""
FORMATS: Final = ("standard", "slack")
DEFAULT_MAX_ATTEMPTS: Final = 5
MIN_MAX_ATTEMPTS: Final = 5
"""Fewer attempts than this would dead-letter a message over a receiver's restart."""
MAX_MAX_ATTEMPTS: Final = 50
MAX_URL_LENGTH: Final = 2048
MAX_ENDPOINTS: Final = 100
"""Endpoints one registry may have (the worker delivers to each in turn)."""
MAX_DEAD_LETTERS: Final = 1000
"""Dead letters kept per endpoint; older ones are dropped."""
MAX_BODY_BYTES: Final = 256 * 1024
"""The largest message body kept in a cursor or dead letter (an audit entry is far smaller)."""
MAX_ERROR_LENGTH: Final = 300
ENDPOINT_ID: Final = re.compile(r"wh_[0-9a-f]{12}")
ENV_NAME: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MESSAGE_ID: Final = re.compile(r"msg_[0-9a-f]{32}")
_M = TypeVar("_M", bound=BaseModel)


def validate_webhook_url(url: object) -> str:
    """An ``http://`` or ``https://`` URL with a host, at most 2048 ASCII characters, no whitespace or
    control characters. Raises :class:`~promptreg.InvalidInputError` (the message hides credentials)."""
    if not isinstance(url, str) or not url:
        raise InvalidInputError("a webhook URL must be a non-empty string")
    if len(url) > MAX_URL_LENGTH or not url.isascii() or any(not ch.isprintable() or ch.isspace() for ch in url):
        raise InvalidInputError(
            f"a webhook URL is at most {MAX_URL_LENGTH} printable ASCII characters, without spaces "
            "(percent-encode the path, write an international host name in punycode: xn--...)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"malformed webhook URL {redact_url(url)!r}: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidInputError(f"a webhook URL must be http:// or https://, got {redact_url(url)[:80]!r}")
    if not parts.hostname or parts.fragment or port == 0:
        raise InvalidInputError(f"a webhook URL needs a host (and a port other than 0), no #fragment: "
                                f"{redact_url(url)[:80]!r}")  # fmt: skip
    return url


def validate_env_name(name: object) -> str:
    """The name of an environment variable (``[A-Za-z_][A-Za-z0-9_]*``, at most 128 characters).
    Raises :class:`~promptreg.InvalidInputError` (never quoting a value that looks like a secret)."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        raise InvalidInputError(
            "--secret-env takes the NAME of an environment variable holding the secret (letters, digits, _), "
            "not the secret itself"
        )
    return name


def validate_max_attempts(value: object) -> int:
    """Attempts before a message is dead-lettered: an integer from 5 to 50."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_MAX_ATTEMPTS <= value <= MAX_MAX_ATTEMPTS:
        raise InvalidInputError(f"max attempts must be an integer from {MIN_MAX_ATTEMPTS} to {MAX_MAX_ATTEMPTS}, "
                                f"got {value!r:.40}")  # fmt: skip
    return value


def display_url(url: str) -> str:
    """The URL to show: user info and secret query values hidden (:func:`~promptreg.registry.urls.redact_url`)."""
    return redact_url(url)


class WebhookEndpoint(BaseModel):
    """A receiver of the registry's events.

    ``secret_env`` is the NAME of the environment variable the delivery worker reads the signing
    secret from: the secret itself is never stored. ``events`` are type patterns
    (:mod:`~promptreg.registry.webhooks.event_types`); ``max_attempts`` failures of one message put it
    in the dead letters.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    url: str
    secret_env: str
    events: tuple[str, ...] = ("*",)
    format: WebhookFormat = "standard"
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    created_at: datetime = Field(default_factory=utcnow)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return validate_endpoint_id(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return validate_webhook_url(value)

    @field_validator("secret_env")
    @classmethod
    def _env(cls, value: str) -> str:
        return validate_env_name(value)

    @field_validator("events", mode="before")
    @classmethod
    def _events(cls, value: Any) -> tuple[str, ...]:
        return validate_patterns(list(value) if isinstance(value, tuple) else value)

    @field_validator("max_attempts")
    @classmethod
    def _attempts(cls, value: int) -> int:
        return validate_max_attempts(value)

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    @property
    def display_url(self) -> str:
        """:attr:`url` without credentials, for messages and listings."""
        return display_url(self.url)

    def wants(self, kind: str) -> bool:
        """Whether this endpoint gets events of type ``kind`` (``registry.resync``: always)."""
        return kind == RESYNC or matches(self.events, kind)

    def wants_fleet(self) -> bool:
        """Whether this endpoint gets either fleet event (then label moves wait for the fleet)."""
        return self.wants(FLEET_CONVERGED) or self.wants(FLEET_LAGGING)


def new_endpoint_id() -> str:
    """A fresh endpoint id: ``wh_`` and 12 random hex digits."""
    return "wh_" + secrets.token_hex(6)


def validate_endpoint_id(value: object) -> str:
    """An endpoint id (``wh_`` + 12 hex digits); raises :class:`~promptreg.InvalidInputError`."""
    if not isinstance(value, str) or not ENDPOINT_ID.fullmatch(value):
        raise InvalidInputError(f"a webhook endpoint id is wh_ and 12 hex digits, got {str(value)[:40]!r}")
    return value


class Position(BaseModel):
    """How far an endpoint's deliveries got: every audit entry up to ``rev`` is done, and the first
    ``step`` messages of the entry after it. ``fingerprint`` identifies the entry at ``rev`` (a
    restore that rewrote the history is noticed: :data:`~promptreg.registry.webhooks.event_types.RESYNC`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rev: int = Field(ge=0)
    step: int = Field(default=0, ge=0, le=16)
    fingerprint: str | None = Field(default=None, max_length=64)


class PendingMessage(BaseModel):
    """A message that failed and waits for its next attempt: kept with the cursor, so a restarted
    worker sends the very same message (``id`` and ``body``) and counts its attempts on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=MESSAGE_ID.pattern)
    type: str = Field(max_length=64)
    rev: int = Field(ge=0)
    body: str = Field(max_length=MAX_BODY_BYTES)
    attempts: int = Field(ge=1, le=MAX_MAX_ATTEMPTS)
    next_attempt_at: float
    """Unix time of the next attempt."""
    last_error: str | None = Field(default=None, max_length=MAX_ERROR_LENGTH)
    after: Position
    """The cursor's position once this message is delivered or dead-lettered."""


class Cursor(Position):
    """An endpoint's durable cursor: its :class:`Position` and the message waiting to be retried."""

    pending: PendingMessage | None = None


class DeadLetter(BaseModel):
    """A message given up on after ``attempts`` failures (``error``: the last one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    endpoint: str
    id: str = Field(pattern=MESSAGE_ID.pattern)
    type: str = Field(max_length=64)
    rev: int = Field(ge=0)
    body: str = Field(max_length=MAX_BODY_BYTES)
    attempts: int = Field(ge=1)
    error: str = Field(max_length=MAX_ERROR_LENGTH)
    at: datetime = Field(default_factory=utcnow)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class Lease(BaseModel):
    """The delivery worker's lease: who delivers (``holder``: host, pid and a random tag) until when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    holder: str = Field(max_length=256)
    expires_at: datetime

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


def new_holder() -> str:
    """A worker's identity in the lease: ``host:pid:random``."""
    return f"{os.uname().nodename[:64]}:{os.getpid()}:{secrets.token_hex(4)}"


def parse_record(model: type[_M], data: str | bytes, where: str) -> _M:
    """``model`` from stored JSON, bounded; raises :class:`~promptreg.RegistryCorruptError` naming ``where``."""
    if len(data) > 2 * MAX_BODY_BYTES:
        raise RegistryCorruptError(f"{where}: the stored webhook record is over {2 * MAX_BODY_BYTES} bytes")
    try:
        return model.model_validate_json(data)
    except (ValidationError, ValueError) as exc:
        raise RegistryCorruptError(f"{where}: malformed webhook record ({type(exc).__name__})") from None


def new_endpoint(
    url: str, secret_env: str, *, events: tuple[str, ...] | list[str] = ("*",), format: str = "standard",
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> WebhookEndpoint:  # fmt: skip
    """A new endpoint with a fresh id, every argument checked first. Raises
    :class:`~promptreg.InvalidInputError` naming what is wrong (never quoting credentials)."""
    if format not in FORMATS:
        raise InvalidInputError(f"format must be one of {', '.join(FORMATS)}, got {str(format)[:20]!r}")
    return WebhookEndpoint(
        id=new_endpoint_id(), url=validate_webhook_url(url), secret_env=validate_env_name(secret_env),
        events=validate_patterns(list(events)), format=format,  # type: ignore[arg-type]
        max_attempts=validate_max_attempts(max_attempts),
    )  # fmt: skip
