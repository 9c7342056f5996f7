"""The typed calls of the governance scripts (``lua/protect_label.lua``, ``lua/request_move.lua``,
``lua/decide_request.lua``): KEYS and ARGV by name, as :mod:`promptreg.registry.redis.calls` does
for the other writes. The approval that moves a label is :class:`~promptreg.registry.redis.calls.SetLabel`
with a :class:`~promptreg.registry.redis.calls.RequestRecord`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from promptreg.registry.redis.calls import Reply, ScriptCall, _int, _text
from promptreg.registry.redis.keys import Keyspace


@dataclass(frozen=True, slots=True)
class ProtectLabel(ScriptCall):
    """``protect_label.lua``: protect ``label`` (``approvals``) or remove its protection (``None``)."""

    script: ClassVar[str] = "protect_label"
    ks: Keyspace
    name: str
    label: str
    approvals: int | None
    at: str
    author: str | None
    reason: str | None
    head: bytes

    def script_keys(self) -> list[str]:
        k, name, label = self.ks, self.name, self.label
        return [k.prompt(name), k.protected, k.governed, k.label(name, label), k.index_label(label),
                k.rollout(name, label), k.rev, k.log, k.history(name), k.labels(name), k.index_labels]  # fmt: skip

    def script_args(self) -> list[Any]:
        approvals = "" if self.approvals is None else str(self.approvals)
        return [self.name, self.label, approvals, self.at, _text(self.author), _text(self.reason), self.head,
                self.ks.channel]  # fmt: skip

    @staticmethod
    def reply(result: list[Any]) -> Reply:
        return Reply(int(result[1]), version=_int(result[2]))


@dataclass(frozen=True, slots=True)
class RequestMove(ScriptCall):
    """``request_move.lua``: store a request (JSON ``record``) the caller built from its read of the
    protection (``required``) and of where the label points (``current``)."""

    script: ClassVar[str] = "request_move"
    ks: Keyspace
    name: str
    label: str
    version: int
    request_id: str
    record: str
    score: int
    at: str
    author: str
    reason: str
    head: bytes
    current: int | None
    required: int

    def script_keys(self) -> list[str]:
        k, name = self.ks, self.name
        return [k.prompt(name), k.version(name, self.version), k.request(self.request_id), k.requests, k.rev,
                k.log, k.history(name)]  # fmt: skip

    def script_args(self) -> list[Any]:
        return [self.name, self.label, self.version, self.request_id, self.record, self.score, self.at, self.author,
                self.reason, self.head, self.ks.channel, "" if self.current is None else str(self.current),
                str(self.required), self.ks.governed]  # fmt: skip


@dataclass(frozen=True, slots=True)
class DecideRequest(ScriptCall):
    """``decide_request.lua``: store a decision that moves nothing (an approval short of the count,
    or with ``apply=False``; a rejection), compare-and-set on the record ``seen``."""

    script: ClassVar[str] = "decide_request"
    ks: Keyspace
    name: str
    label: str
    request_id: str
    seen: str
    stored: str
    score: int
    action: str
    at: str
    author: str
    reason: str | None
    head: bytes
    version: int
    from_version: int | None

    def script_keys(self) -> list[str]:
        k = self.ks
        return [k.request(self.request_id), k.decision(self.request_id), k.decisions, k.rev, k.log,
                k.history(self.name)]  # fmt: skip

    def script_args(self) -> list[Any]:
        return [self.name, self.label, self.request_id, self.seen, self.stored, self.score, self.action, self.at,
                self.author, _text(self.reason), self.head, self.ks.channel, self.version,
                "" if self.from_version is None else str(self.from_version)]  # fmt: skip
