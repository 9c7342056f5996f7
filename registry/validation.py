"""Input rules shared by every backend: names, labels, sizes, metadata.

Everything is checked here, before a backend writes anything, so a refused call never leaves a
partial write behind. Names are also what keeps Redis keys safe: a valid name cannot contain
``:``, ``{``, ``}`` or whitespace, so it can never forge another key or leave the hash tag.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from promptreg.registry.errors import InvalidInputError, InvalidNameError, PromptTooLargeError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*")
LABEL_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_LENGTH = 128
MAX_LABEL_LENGTH = 64
MAX_TEXT_BYTES = 1024 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_FIELD_LENGTH = 4096
"""Limit for short free-text fields: author, message, reason, description."""
MAX_METADATA_DEPTH = 32
"""How deeply metadata may nest (a mapping or list inside another counts one level)."""
MAX_JSON_DEPTH = MAX_METADATA_DEPTH + 16
"""How deeply a whole JSON document (the JSON registry file) may nest: metadata's depth plus room
for the document's own structure (prompts, versions, messages); see :func:`check_json_depth`."""
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
"""Metadata integers must fit a signed 64-bit integer: every store and wire format holds them."""

LATEST = "latest"
DEFAULT_NAMESPACE = "promptreg"
"""The namespace of a registry opened without one (every backend: Redis key prefix, PostgreSQL rows)."""
"""The reserved label that always resolves to the newest version; it cannot be set."""


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid prompt name, else raise :class:`InvalidNameError`."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(
            f"invalid prompt name {name!r}: use letters, digits and . _ / - (starting with a letter or digit)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidNameError(f"prompt name is {len(name)} characters, the limit is {MAX_NAME_LENGTH}")
    if "//" in name or name.endswith("/"):
        raise InvalidNameError(f"invalid prompt name {name!r}: empty path segment")
    return name


def validate_label(label: object, *, settable: bool = False) -> str:
    """Return ``label`` if valid; with ``settable=True`` also refuse the reserved ``latest``."""
    if not isinstance(label, str) or not LABEL_PATTERN.fullmatch(label):
        raise InvalidNameError(
            f"invalid label {label!r}: use letters, digits and . _ - (starting with a letter or digit)"
        )
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidNameError(f"label is {len(label)} characters, the limit is {MAX_LABEL_LENGTH}")
    if settable and label == LATEST:
        raise InvalidNameError(f"{LATEST!r} is reserved: it always resolves to the newest version")
    return label


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it can be used as a Redis key prefix."""
    if not isinstance(namespace, str) or not LABEL_PATTERN.fullmatch(namespace) or len(namespace) > 64:
        raise InvalidNameError(f"invalid namespace {namespace!r}: use letters, digits and . _ -")
    return namespace


def validate_version_number(version: object, *, allow_zero: bool = False) -> int:
    """Return ``version`` if it is a positive int (or 0 when ``allow_zero``)."""
    if isinstance(version, bool) or not isinstance(version, int) or version < (0 if allow_zero else 1):
        raise InvalidInputError(f"invalid version number {version!r}: expected an integer >= 1")
    return version


PERCENT_SCALE = 100
"""A rollout's percentage is kept in hundredths of a percent (basis points): ``10.25`` is ``1025``."""


def validate_percent(percent: object) -> int:
    """A rollout percentage (``0 < percent < 100``, at most two decimals) as basis points (1..9999).

    Raises :class:`InvalidInputError` for anything else (a bool, NaN, ``100``, ``10.125``)."""
    if isinstance(percent, bool) or not isinstance(percent, int | float):
        raise InvalidInputError(f"percent must be a number, got {type(percent).__name__}")
    if not 0 < percent < 100:
        raise InvalidInputError(f"percent must be above 0 and below 100, got {percent!r}")
    points = round(percent * PERCENT_SCALE)
    if abs(points - percent * PERCENT_SCALE) > 1e-6 or not 1 <= points < 100 * PERCENT_SCALE:
        raise InvalidInputError(f"percent takes at most two decimals, got {percent!r}")
    return points


def validate_text(text: object, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Return ``text`` if it is a string within ``max_bytes`` when UTF-8 encoded."""
    if not isinstance(text, str):
        raise InvalidInputError(f"prompt text must be a string, got {type(text).__name__}")
    size = len(_utf8(text, "prompt text"))
    if size > max_bytes:
        raise PromptTooLargeError(f"prompt text is {size} bytes, the limit is {max_bytes}")
    return text


def validate_field(value: object, what: str) -> str | None:
    """Return a short optional text field (author, message, reason, description) if valid.

    An empty string is taken as absent (``None``), so every backend stores "no value" one way.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_FIELD_LENGTH:
        raise PromptTooLargeError(f"{what} is {len(value)} characters, the limit is {MAX_FIELD_LENGTH}")
    _utf8(value, what)
    return value


def validate_unicode(value: str, what: str) -> str:
    """Return ``value`` if it can be stored as UTF-8 (no lone surrogates), else raise.

    Python strings may hold lone surrogates (from ``surrogateescape``-decoded command-line
    arguments or file names, or from a JSON ``"\\ud800"`` escape); no store and no wire format
    can hold them, so they are refused with an :class:`~promptreg.InvalidInputError` naming ``what``.
    """
    _utf8(value, what)
    return value


def _utf8(value: str, what: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"{what} is not valid Unicode: lone surrogate {value[exc.start]!r} at character {exc.start}"
        ) from exc


# A string, or an unterminated one to the end: with the closing quote optional no match fails, so
# the scan stays linear (a failing match would be retried from every later quote).
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"?', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = tuple(1 if b in b"[{" else -1 if b in b"]}" else 0 for b in range(256))


def check_json_depth(data: bytes, what: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise :class:`~promptreg.InvalidInputError` if the JSON text ``data`` nests arrays and objects
    deeper than ``max_depth`` levels.

    Call it before a recursive parser (``json.loads``) sees hostile bytes: it counts the brackets
    outside strings without parsing and without recursion, in time linear in ``data``, so even a
    file nested 100,000 deep costs one pass. It does not check that ``data`` is valid JSON.
    ``what`` names the input in the message.
    """
    # Brackets inside strings do not nest; a parser stops at an unterminated string, so its
    # brackets do not count either.
    brackets = _JSON_STRING.sub(b"", data).translate(None, _NOT_A_BRACKET)
    depth = max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)
    if depth > max_depth:
        raise InvalidInputError(f"{what} is nested deeper than {max_depth} levels")


def validate_metadata(
    metadata: Mapping[str, Any] | None, max_bytes: int = MAX_METADATA_BYTES, what: str = "metadata"
) -> dict[str, Any]:
    """Return a JSON-compatible copy of ``metadata`` within ``max_bytes`` as compact JSON.

    Values must be JSON types: ``None``, ``bool``, strings (valid Unicode), integers in the signed
    64-bit range, finite floats, lists/tuples and mappings with string keys, nested at most
    :data:`MAX_METADATA_DEPTH` levels. The walk stops as soon as the input is known to be over
    ``max_bytes``, so an oversized value costs no more than the limit to refuse. Raises
    :class:`~promptreg.InvalidInputError` naming the offending path (``metadata.a.b[2]``), or
    :class:`~promptreg.PromptTooLargeError`. ``what`` names the field in errors (``config`` for a
    version's model configuration, which follows the same rules).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"{what} must be a mapping, got {type(metadata).__name__}")
    _JsonCheck(max_bytes, what).walk(metadata, what, 0)
    encoded = json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    size = len(encoded.encode("utf-8"))
    if size > max_bytes:
        raise PromptTooLargeError(f"{what} is {size} bytes as JSON, the limit is {max_bytes}")
    result: dict[str, Any] = json.loads(encoded)
    return result


class _JsonCheck:
    """One walk over a metadata value: types, ranges, Unicode, depth, and a running size bound."""

    def __init__(self, max_bytes: int, what: str = "metadata") -> None:
        self.max_bytes = max_bytes
        self.what = what
        self.budget = max_bytes + 1  # every JSON value takes at least one byte

    def spend(self, nbytes: int) -> None:
        self.budget -= nbytes
        if self.budget < 0:
            limit = self.max_bytes
            raise PromptTooLargeError(f"{self.what} is over {limit} bytes as JSON, the limit is {limit}")

    def walk(self, value: Any, path: str, depth: int) -> None:
        if depth > MAX_METADATA_DEPTH:
            raise InvalidInputError(f"{path}: nested deeper than {MAX_METADATA_DEPTH} levels")
        if value is None or isinstance(value, bool):
            self.spend(4)
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise InvalidInputError(f"{path}: integer out of the signed 64-bit range")
            self.spend(1)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInputError(f"{path}: {value!r} is not JSON-compatible")
            self.spend(1)
        elif isinstance(value, str):
            self.spend(len(value) + 2)
            _utf8(value, path)
        elif isinstance(value, Mapping):
            self.spend(2)
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidInputError(f"{path}: key {key!r} is not a string")
                self.spend(len(key) + 3)
                _utf8(key, f"{path}: key")
                self.walk(item, f"{path}.{key}", depth + 1)
        elif isinstance(value, (list, tuple)):
            self.spend(2)
            for i, item in enumerate(value):
                self.walk(item, f"{path}[{i}]", depth + 1)
        else:
            raise InvalidInputError(f"{path}: {type(value).__name__} is not JSON-compatible")


def refuse_nul(value: str | None, what: str) -> None:
    """Raise :class:`~promptreg.InvalidInputError` when ``value`` holds a NUL character (U+0000).

    For the text fields every backend stores as text (prompt text, description, author, message,
    reason): PostgreSQL text cannot hold U+0000, so no backend takes it, and ``sync`` / ``import``
    refuse it before their first write. Metadata, config and chat messages are JSON and may hold it.
    """
    if value is not None and "\x00" in value:
        raise InvalidInputError(f"{what} holds a NUL character (U+0000), which PostgreSQL text cannot store")


def validate_text_field(value: object, what: str) -> str | None:
    """:func:`validate_field` (author, message, reason, description) and :func:`refuse_nul`."""
    clean = validate_field(value, what)
    refuse_nul(clean, what)
    return clean
