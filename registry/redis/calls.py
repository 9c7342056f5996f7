"""One typed call per write script: its KEYS and ARGV by name, and its reply decoded.

Each ``registry/redis/lua/<script>.lua`` documents its KEYS and ARGV by position; the class of the
same name here is the one place Python puts them in that order (``script_keys``, ``script_args``),
so the store builds a call from named fields and reads a :class:`Reply`, never a position. The two
parameters every write script ends with (``{ns}:revid`` in KEYS; the write id and the publish
command in ARGV, ``_commit.lua``) are appended by the store, which owns publishing. A refusal
(``{"ERR", CODE, ...}``) is decoded by :func:`promptreg.registry.redis.records.refusal`, from one table.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.rollouts import percent_of


@dataclass(frozen=True, slots=True)
class Reply:
    """An accepted write, decoded: the revision it made, and what the script reports beside it."""

    rev: int
    version: int | None = None
    """``add_version``: the new version's number; ``rollback_label``: the version the label moved to."""
    previous: int | None = None
    """Label writes: where the label pointed before (``None``: it did not exist)."""
    forced: bool = False
    """Label moves: the compatibility mode refused the move and ``force`` overrode it."""


def _int(raw: Any) -> int | None:
    return None if raw is None else int(raw)


def _text(value: str | None) -> str:
    return value or ""


def _expected(expected: int | None) -> int | str:
    return "" if expected is None else expected


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """A call of one write script (its name in :attr:`script`)."""

    script: ClassVar[str]

    def script_keys(self) -> list[str]:
        """KEYS, in the script's order (without the trailing ``{ns}:revid``)."""
        raise NotImplementedError

    def script_args(self) -> list[Any]:
        """ARGV, in the script's order (without the trailing write id and publish command)."""
        raise NotImplementedError

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        """The decoded ``{"OK", rev, ...}`` reply."""
        return Reply(int(result[1]))


@dataclass(frozen=True, slots=True)
class CreatePrompt(ScriptCall):
    """``create_prompt.lua``: a new prompt's hash, its name in the set, the index marker."""

    script: ClassVar[str] = "create_prompt"
    ks: Keyspace
    name: str
    description: str | None
    author: str | None
    created_at: str
    head: bytes
    compatibility: str

    def script_keys(self) -> list[str]:
        k = self.ks
        return [k.prompts, k.prompt(self.name), k.rev, k.log, k.history(self.name), k.index_format]

    def script_args(self) -> list[Any]:
        return [self.name, _text(self.description), _text(self.author), self.created_at, self.head,
                self.ks.channel, self.compatibility]  # fmt: skip


@dataclass(frozen=True, slots=True)
class AddVersion(ScriptCall):
    """``add_version.lua``: version ``number`` (the caller's guess of latest + 1; the script answers
    ``RETRY`` with the right one when another writer took it)."""

    script: ClassVar[str] = "add_version"
    ks: Keyspace
    name: str
    number: int
    prompt_text: str
    author: str | None
    created_at: str
    message: str | None
    metadata: bytes
    sha256: str
    head: bytes
    content: tuple[Any, ...]
    """inputs, messages, config, placeholders (:func:`promptreg.registry.redis.chat.content_args`)."""
    packed: bytes
    """The version's packed record (:func:`promptreg.registry.redis.packed.pack_fields`)."""

    def script_keys(self) -> list[str]:
        k = self.ks
        return [
            k.prompt(self.name),
            k.rev,
            k.log,
            k.history(self.name),
            k.index_latest,
            k.version(self.name, self.number),
            k.packed(self.name, self.number),
        ]

    def script_args(self) -> list[Any]:
        return [self.name, self.ks.version_prefix(self.name), self.prompt_text, _text(self.author), self.created_at,
                _text(self.message), self.metadata, self.sha256, self.head, self.ks.channel, *self.content,
                self.packed, self.ks.packed_prefix(self.name)]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), version=int(result[2]))

    def retried(self, result: list[Any]) -> AddVersion:
        """The same call with the number a ``RETRY`` reply named."""
        return dataclasses.replace(self, number=int(result[2]))


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """The approved move request a ``set_label`` applies (registry/redis/governance.py): its id, its
    record as read (the script's compare-and-set), the record to store, its creation time (ms)."""

    request_id: str
    seen: str
    stored: str
    score: int


@dataclass(frozen=True, slots=True)
class SetLabel(ScriptCall):
    """``set_label.lua``: point ``label`` at ``version``; ``current`` is the caller's guess of the
    version the label last pointed at, whose hash the compatibility check reads (``RETRY`` names it
    when the guess was wrong and a mode needs it)."""

    script: ClassVar[str] = "set_label"
    ks: Keyspace
    name: str
    label: str
    version: int
    expected: int | None
    at: str
    author: str | None
    reason: str | None
    head: bytes
    force: bool
    current: int
    request: RequestRecord | None = None
    """An approved request's move (the approver role): its keys are declared, the writer's are not."""

    def script_keys(self) -> list[str]:
        k, name, label = self.ks, self.name, self.label
        keys = [k.prompt(name), k.version(name, self.version), k.label(name, label), k.labels(name),
                k.previous(name, label), k.rev, k.log, k.history(name), k.index_label(label), k.index_labels,
                k.version(name, self.current), k.rollout(name, label)]  # fmt: skip
        if self.request is not None:
            request_id = self.request.request_id
            keys += [k.governed, k.request(request_id), k.decision(request_id), k.decisions]
        return keys

    def script_args(self) -> list[Any]:
        request = self.request
        governance = ["", "", "", ""] if request is None else [
            request.request_id, request.seen, request.stored, request.score
        ]  # fmt: skip
        return [self.name, self.label, self.version, _expected(self.expected), self.at, _text(self.author),
                _text(self.reason), self.head, self.ks.channel, self.ks.version_prefix(self.name),
                "1" if self.force else "", *governance]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), previous=_int(result[2]), forced=result[3] == b"1")

    def retried(self, result: list[Any]) -> SetLabel:
        """The same call with the label's last version a ``RETRY`` reply named."""
        return dataclasses.replace(self, current=int(result[2]))


@dataclass(frozen=True, slots=True)
class DeleteLabel(ScriptCall):
    """``delete_label.lua``: remove ``label`` (its last position stays the rollback target)."""

    script: ClassVar[str] = "delete_label"
    ks: Keyspace
    name: str
    label: str
    expected: int | None
    at: str
    author: str | None
    reason: str | None
    head: bytes

    def script_keys(self) -> list[str]:
        k, name, label = self.ks, self.name, self.label
        return [k.prompt(name), k.label(name, label), k.labels(name), k.previous(name, label), k.rev, k.log,
                k.history(name), k.index_label(label), k.index_labels, k.rollout(name, label)]  # fmt: skip

    def script_args(self) -> list[Any]:
        return [self.name, self.label, _expected(self.expected), self.at, _text(self.author), _text(self.reason),
                self.head, self.ks.channel]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), previous=_int(result[2]))


@dataclass(frozen=True, slots=True)
class RollbackLabel(ScriptCall):
    """``rollback_label.lua``: move ``label`` back to where it pointed before; ``target`` and
    ``current`` are the versions the caller read (``RETRY`` names both when they moved)."""

    script: ClassVar[str] = "rollback_label"
    ks: Keyspace
    name: str
    label: str
    at: str
    author: str | None
    reason: str | None
    head: bytes
    force: bool
    target: int
    current: int
    expected: int | None = None

    def script_keys(self) -> list[str]:
        k, name, label = self.ks, self.name, self.label
        return [k.prompt(name), k.label(name, label), k.labels(name), k.previous(name, label), k.rev, k.log,
                k.history(name), k.index_label(label), k.index_labels, k.version(name, self.target),
                k.version(name, self.current), k.rollout(name, label)]  # fmt: skip

    def script_args(self) -> list[Any]:
        return [self.name, self.label, self.ks.version_prefix(self.name), self.at, _text(self.author),
                _text(self.reason), self.head, self.ks.channel, "1" if self.force else "",
                "" if self.expected is None else str(self.expected)]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), version=_int(result[2]), previous=_int(result[3]), forced=result[4] == b"1")

    def retried(self, result: list[Any]) -> RollbackLabel:
        """The same call with the target and current versions a ``RETRY`` reply named."""
        return dataclasses.replace(self, target=int(result[2]), current=int(result[3]))


@dataclass(frozen=True, slots=True)
class RolloutCall(ScriptCall):
    """``rollout.lua``: ``op`` (``start_rollout``, ``set_rollout``, ``promote_rollout`` or
    ``abort_rollout``) on the rollout of ``label``; ``candidate`` and ``stable`` are the versions the
    caller read (``RETRY`` names both when they moved)."""

    script: ClassVar[str] = "rollout"
    ks: Keyspace
    op: str
    name: str
    label: str
    candidate: int
    stable: int
    points: int
    at: str
    author: str | None
    reason: str | None
    head: bytes
    force: bool = False

    def script_keys(self) -> list[str]:
        k, name, label = self.ks, self.name, self.label
        return [k.prompt(name), k.label(name, label), k.rollout(name, label), k.version(name, self.candidate),
                k.version(name, self.stable), k.rev, k.log, k.history(name), k.index_label(label), k.index_rollouts,
                k.previous(name, label)]  # fmt: skip

    def script_args(self) -> list[Any]:
        share = f"{percent_of(self.points):g}"
        return [self.op, self.name, self.label, self.candidate, self.stable, self.points, share, self.at,
                _text(self.author), _text(self.reason), self.head, self.ks.channel,
                self.ks.version_prefix(self.name), "1" if self.force else ""]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), version=_int(result[2]), previous=_int(result[3]), forced=result[4] == b"1")

    def retried(self, result: list[Any]) -> RolloutCall:
        """The same call with the stable and candidate versions a ``RETRY`` reply named."""
        candidate = self.candidate if self.op == "start_rollout" else int(result[3])
        return dataclasses.replace(self, stable=int(result[2]), candidate=candidate)


@dataclass(frozen=True, slots=True)
class SetCompatibility(ScriptCall):
    """``set_compatibility.lua``: the prompt's compatibility mode."""

    script: ClassVar[str] = "set_compatibility"
    ks: Keyspace
    name: str
    mode: str
    at: str
    author: str | None
    reason: str | None
    head: bytes

    def script_keys(self) -> list[str]:
        k = self.ks
        return [k.prompt(self.name), k.rev, k.log, k.history(self.name)]

    def script_args(self) -> list[Any]:
        return [self.name, self.mode, self.at, _text(self.author), _text(self.reason), self.head, self.ks.channel]


@dataclass(frozen=True, slots=True)
class IndexPrompts:
    """``index_prompts.lua`` (``promptreg migrate``): rebuild the index entries of a batch of prompts
    from their own keys. ``labels`` maps each prompt to the labels the caller read for it; the reply
    is the names whose label set changed meanwhile (:meth:`changed`). Not a write of the registry's
    history: it publishes nothing and takes no write id."""

    script: ClassVar[str] = "index_prompts"
    ks: Keyspace
    labels: dict[str, list[str]]
    index_labels: list[str]
    """Every label of the batch and every label the index already has."""

    def script_keys(self) -> list[str]:
        k = self.ks
        keys = [k.index_latest, k.index_labels]
        for name, labels in self.labels.items():
            keys += [k.prompt(name), k.labels(name), *(k.label(name, label) for label in labels)]
        return keys + [k.index_label(label) for label in self.index_labels]

    def script_args(self) -> list[Any]:
        args: list[Any] = [len(self.labels), len(self.index_labels), *self.index_labels]
        for name, labels in self.labels.items():
            args += [name, len(labels), *labels]
        return args

    @staticmethod
    def changed(result: list[Any] | None) -> list[str]:
        """The prompts to read again (empty: the batch is indexed)."""
        return [raw.decode("utf-8") for raw in result or []]


Placed = TypeVar("Placed", AddVersion, SetLabel, RollbackLabel, RolloutCall)
"""The calls whose KEYS include a key the caller guessed, which the script names again on ``RETRY``."""
