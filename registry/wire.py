"""The change message every write publishes, and its codec.

A message is a msgpack map with these fields (``None`` where not applicable):

==========  =======  =============================================================
field       type     meaning
==========  =======  =============================================================
``rev``     int      the registry revision this write produced
``op``      str      ``create_prompt``, ``add_version``, ``set_label``,
                     ``delete_label``, ``rollback``, ``set_compatibility``, a rollout's
                     or a protected label's (:data:`GOVERNANCE_OPERATIONS`: no move)
``prompt``  str      prompt name
``label``   str      the label moved (label operations only)
``version`` int      the version added, or where the label points now
``prev``    int      where the label pointed before
``author``  str      who made the write
``at``      float    when, seconds since the Unix epoch (UTC)
``sha``     str      the first 16 hex digits of the sha256 of ``version``'s text: what the
                     version number stands for in this history
``hid``     str      this write's id (16 hex digits, random per write)
``phid``    str      the id of the write before it (``''``: none recorded)
``pct``     float    rollouts only: the candidate's share (``start_rollout``,
                     ``set_rollout``; ``None`` when the rollout ends)
==========  =======  =============================================================

A rollout's messages (``start_rollout``, ``set_rollout``, ``promote_rollout``, ``abort_rollout``)
carry the same fields as its audit entry (:class:`~promptreg.AuditEvent`): ``version`` is the
candidate (``start``/``set``), the label's new version (``promote``) or the label's version
(``abort``); ``sha`` is always that of ``version``.

``hid`` and ``phid`` identify the history: a write runs once, on one state, so every copy of the
data holding a write id holds the whole history up to it. A client applies a message only when its
``rev`` is the next one *and* its ``phid`` is the id of the last write the client holds; after a
failover that lost writes or a restore, the numbers can repeat but the ids cannot.

Python packs the part it knows before the write (``op``, ``prompt``, ``label``, ``author``,
``at``); the Lua script appends ``rev``, ``version``, ``prev``, ``sha``, ``hid`` and ``phid``. The
map header written by Python already counts those six trailing pairs. Doing it this way needs no
``cmsgpack`` in Lua, which fakeredis's Lua does not have. A message of a writer older than these
fields has ``None`` there, and the client skips the checks they feed.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgpack

from promptreg.registry.errors import RegistryCorruptError

ROLLOUT_OPERATIONS = frozenset({"start_rollout", "set_rollout", "promote_rollout", "abort_rollout"})
GOVERNANCE_OPERATIONS = frozenset(
    {"protect_label", "unprotect_label", "request_move", "approve_request", "reject_request"}
)
"""Writes that move no label (registry/governance.py): a client only advances its revision."""
OPERATIONS = frozenset(
    {
        "create_prompt", "add_version", "set_label", "delete_label", "rollback", "set_compatibility",
        *ROLLOUT_OPERATIONS, *GOVERNANCE_OPERATIONS,
    }
)  # fmt: skip
_LUA_FIELDS = 6  # rev, version, prev, sha, hid, phid: appended by the Lua script


class ChangeMessage(NamedTuple):
    """One decoded change message.

    A named tuple: every process of a fleet builds one per write, and a tuple is built in C where a
    frozen dataclass sets each field through ``object.__setattr__``.
    """

    rev: int
    op: str
    prompt: str
    label: str | None
    version: int | None
    previous_version: int | None
    author: str | None
    at: float
    sha: str | None = None
    """The first 16 hex digits of the sha256 of ``version``'s text (``None``: not sent)."""
    write_id: str | None = None
    """This write's id (``None``: a writer older than write ids, or not a Redis message)."""
    previous_write_id: str | None = None
    """The id of the write before this one (``''``: none recorded; ``None``: not sent)."""
    percent: float | None = None
    """A rollout's share of the candidate after this write (``None``: not a rollout, or it ended)."""


def pack_static_part(
    op: str, prompt: str, label: str | None, author: str | None, at: float, percent: float | None = None
) -> bytes:
    """The message's head: a map header counting every field, then the fields Python knows
    (``pct`` only in a rollout's message)."""
    fields: dict[str, Any] = {"op": op, "prompt": prompt, "label": label, "author": author, "at": at}
    if op in ROLLOUT_OPERATIONS:
        fields["pct"] = percent
    packer = msgpack.Packer()
    head: bytes = packer.pack_map_header(len(fields) + _LUA_FIELDS)
    return head + b"".join(packer.pack(key) + packer.pack(value) for key, value in fields.items())


def decode(data: bytes) -> ChangeMessage:
    """Decode and check a message; anything malformed raises :class:`RegistryCorruptError`.

    The checks are inline ``type(...) is`` tests (a ``bool`` is not an ``int`` here): this runs for
    every write in every process of a fleet.
    """
    try:
        raw: Any = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        raise RegistryCorruptError(f"undecodable change message: {exc}") from exc
    if type(raw) is not dict:
        raise RegistryCorruptError("change message is not a map")
    get = raw.get
    rev, op, prompt, label, version, prev, author, at = (
        get("rev"), get("op"), get("prompt"), get("label"), get("version"), get("prev"), get("author"), get("at"),
    )  # fmt: skip
    sha, hid, phid, pct = get("sha"), get("hid"), get("phid"), get("pct")
    if (
        type(rev) is not int
        or type(op) is not str
        or type(prompt) is not str
        or (label is not None and type(label) is not str)
        or (version is not None and type(version) is not int)
        or (prev is not None and type(prev) is not int)
        or (author is not None and type(author) is not str)
        or (at is not None and type(at) is not float and type(at) is not int)
        or (sha is not None and type(sha) is not str)
        or (hid is not None and type(hid) is not str)
        or (phid is not None and type(phid) is not str)
        or (pct is not None and ((type(pct) is not float and type(pct) is not int) or not 0 < pct < 100))
    ):
        fields = {"rev": rev, "op": op, "prompt": prompt, "label": label, "version": version, "prev": prev}
        shown = {key: type(value).__name__ for key, value in fields.items()}
        raise RegistryCorruptError(f"malformed change message: field types {shown}, author {type(author).__name__}")
    if op not in OPERATIONS or rev < 1:
        raise RegistryCorruptError(f"malformed change message: op={op!r} rev={rev}")
    percent = None if pct is None else float(pct)
    return ChangeMessage(rev, op, prompt, label, version, prev, author, float(at or 0.0), sha, hid, phid, percent)
