"""The change message every write publishes, and its codec.

A message is a msgpack map with these fields (``None`` where not applicable):

==========  =======  =============================================================
field       type     meaning
==========  =======  =============================================================
``rev``     int      the registry revision this write produced
``op``      str      ``create_prompt``, ``add_version``, ``set_label``,
                     ``delete_label``, ``rollback`` or ``set_compatibility``
``prompt``  str      prompt name
``label``   str      the label moved (label operations only)
``version`` int      the version added, or where the label points now
``prev``    int      where the label pointed before
``author``  str      who made the write
``at``      float    when, seconds since the Unix epoch (UTC)
==========  =======  =============================================================

Python packs the part it knows before the write (``op``, ``prompt``, ``label``, ``author``,
``at``); the Lua script appends ``rev``, ``version`` and ``prev``, which only it knows. The map
header written by Python already counts those three trailing pairs. Doing it this way needs no
``cmsgpack`` in Lua, which fakeredis's Lua does not have.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from registry.errors import RegistryCorruptError

OPERATIONS = frozenset({"create_prompt", "add_version", "set_label", "delete_label", "rollback", "set_compatibility"})
_LUA_FIELDS = 3  # rev, version, prev: appended by the Lua script


@dataclass(frozen=True, slots=True)
class ChangeMessage:
    """One decoded change message."""

    rev: int
    op: str
    prompt: str
    label: str | None
    version: int | None
    previous_version: int | None
    author: str | None
    at: float


def pack_static_part(op: str, prompt: str, label: str | None, author: str | None, at: float) -> bytes:
    """The message's head: a map header counting every field, then the fields Python knows."""
    fields = {"op": op, "prompt": prompt, "label": label, "author": author, "at": at}
    packer = msgpack.Packer()
    head: bytes = packer.pack_map_header(len(fields) + _LUA_FIELDS)
    return head + b"".join(packer.pack(key) + packer.pack(value) for key, value in fields.items())


def decode(data: bytes) -> ChangeMessage:
    """Decode and check a message; anything malformed raises :class:`RegistryCorruptError`."""
    try:
        raw: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RegistryCorruptError(f"undecodable change message: {exc}") from exc
    if not isinstance(raw, dict):
        raise RegistryCorruptError("change message is not a map")
    try:
        message = ChangeMessage(
            rev=_int(raw["rev"]),
            op=_str(raw["op"]),
            prompt=_str(raw["prompt"]),
            label=_opt_str(raw.get("label")),
            version=_opt_int(raw.get("version")),
            previous_version=_opt_int(raw.get("prev")),
            author=_opt_str(raw.get("author")),
            at=float(raw.get("at") or 0.0),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise RegistryCorruptError(f"malformed change message: {exc!r}") from exc
    if message.op not in OPERATIONS or message.rev < 1:
        raise RegistryCorruptError(f"malformed change message: op={message.op!r} rev={message.rev}")
    return message


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected int, got {value!r}")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected str, got {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)
