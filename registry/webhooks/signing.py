"""Signing, per the Standard Webhooks specification (https://www.standardwebhooks.com/).

Each message carries three headers:

- ``webhook-id``: the message's id (``msg_`` + 32 hex digits), the same on every retry of it;
- ``webhook-timestamp``: when this attempt was sent, in Unix seconds;
- ``webhook-signature``: ``v1,`` and the base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``,
  keyed with the secret.

The secret comes from the worker's environment, named by the endpoint (``--secret-env VAR``).
Accepted: a ``whsec_`` secret (what Standard Webhooks libraries generate): the key is the base64
decoding of what follows the prefix; or any other value: the key is its UTF-8 bytes. Either way the
key must be 16 to 1024 bytes (the specification recommends 24 to 64 random bytes).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

from promptreg.registry.errors import ConfigurationError

SECRET_PREFIX: Final = "whsec_"
MIN_KEY_BYTES: Final = 16
MAX_KEY_BYTES: Final = 1024


def parse_secret(value: str, name: str) -> bytes:
    """The HMAC key of a secret (module docstring); ``name`` (the variable's) is what messages say.
    Raises :class:`~promptreg.ConfigurationError`, never quoting the value."""
    if value.startswith(SECRET_PREFIX):
        try:
            key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError(f"${name}: a whsec_ secret must be base64 after the prefix") from None
    else:
        try:
            key = value.encode("utf-8")
        except UnicodeError:
            raise ConfigurationError(f"${name}: the secret is not valid UTF-8 text") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ConfigurationError(
            f"${name}: the signing key is {len(key)} bytes; it must be {MIN_KEY_BYTES} to {MAX_KEY_BYTES} "
            "(use 32 random bytes: whsec_ + their base64)"
        )
    return key


def read_secret(environ: Mapping[str, str], name: str) -> bytes:
    """The key of the secret in the environment variable ``name``. Raises
    :class:`~promptreg.ConfigurationError` when it is unset or empty (or malformed: :func:`parse_secret`)."""
    value = environ.get(name)
    if not value:
        raise ConfigurationError(
            f"the webhook secret variable ${name} is not set in the delivery worker's environment "
            "(the registry stores its name only)"
        )
    return parse_secret(value, name)


def sign(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,`` + base64(HMAC-SHA256(key, id.timestamp.body))."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")


def signature_headers(key: bytes, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of one attempt."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(key, message_id, timestamp, body),
    }
