"""The rollout writes and reads of :class:`~promptreg.RedisPromptRegistry` (a base class of it): each
write is one call of ``rollout.lua``, atomic and audited like a label move, which publishes its
change message (:mod:`promptreg.registry.rollouts`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from promptreg.registry.composition import WriteGraph
from promptreg.registry.composition_checks import check_rollout
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.models import AuditEvent, Rollout
from promptreg.registry.redis.calls import Placed, Reply, RolloutCall
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.partials import NO_GUARD, Guard, result_of, unforced
from promptreg.registry.redis.records import text_field
from promptreg.registry.redis.replication import durable
from promptreg.registry.rollouts import percent_of
from promptreg.registry.wire import pack_static_part

_T = TypeVar("_T")

if TYPE_CHECKING:
    from promptreg.registry.redis.topology import RedisClient


class RedisRollouts:
    """``_start_rollout``, ``_set_rollout``, ``_end_rollout`` and ``_list_rollouts`` on Redis."""

    keys: Keyspace
    redis: RedisClient

    if TYPE_CHECKING:

        def _translate(self) -> AbstractContextManager[None]: ...
        def _pipeline(self, *, transaction: bool) -> Any: ...
        def _run_placed(self, call: Placed, guard: Guard = NO_GUARD) -> tuple[Placed, list[Any]]: ...
        def _guarded(
            self,
            run: Callable[[Guard], _T],
            result_of: Callable[[_T], list[Any]],
            check: Callable[[WriteGraph], bool],
            partials: str = "",
        ) -> tuple[_T, bool]: ...
        def _fail(
            self, name: str, label: str | None, result: list[Any], expected: int | None = None, version: int = 0
        ) -> NoReturn: ...

    @durable
    def _start_rollout(
        self, name: str, label: str, version: int, points: int, author: str | None, reason: str | None,
        at: datetime, *, force: bool,
    ) -> AuditEvent:  # fmt: skip
        with self._translate():
            raw: Any = self.redis.get(self.keys.label(name, label))
        stable = int(raw or 0)
        return self._rollout("start_rollout", name, label, version, stable, points, author, reason, at, force)

    @durable
    def _set_rollout(
        self, name: str, label: str, points: int, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        candidate, stable = self._read_rollout(name, label)
        return self._rollout("set_rollout", name, label, candidate, stable, points, author, reason, at)

    @durable
    def _end_rollout(
        self, name: str, label: str, promote: bool, author: str | None, reason: str | None, at: datetime
    ) -> AuditEvent:
        candidate, stable = self._read_rollout(name, label)
        op = "promote_rollout" if promote else "abort_rollout"
        return self._rollout(op, name, label, candidate, stable, 0, author, reason, at)

    def _read_rollout(self, name: str, label: str) -> tuple[int, int]:
        # The script must be given both versions' keys; it answers RETRY with them when they moved.
        with self._translate():
            candidate, stable = (
                self._pipeline(transaction=True)
                .hget(self.keys.rollout(name, label), "candidate")
                .get(self.keys.label(name, label))
                .execute()
            )
        return int(candidate or 0), int(stable or 0)

    def _rollout(
        self, op: str, name: str, label: str, candidate: int, stable: int, points: int, author: str | None,
        reason: str | None, at: datetime, force: bool = False,
    ) -> AuditEvent:  # fmt: skip
        percent = percent_of(points) if points else None
        head = pack_static_part(op, name, label, author, at.timestamp(), percent)
        call = RolloutCall(self.keys, op, name, label, candidate, stable, points, at.isoformat(), author, reason, head,
                           force)  # fmt: skip
        if op == "start_rollout":  # a rollout cannot split a composition (composition_checks.check_rollout)
            (call, result), _ = self._guarded(
                lambda guard: self._run_placed(call, guard), result_of,
                unforced(lambda graph: check_rollout(graph, name, label, candidate)),
            )  # fmt: skip
        else:
            call, result = self._run_placed(call)
        if result[0] != b"OK":
            self._fail(name, label, result, version=candidate)
        reply: Reply = call.reply(result)
        return AuditEvent(
            rev=reply.rev, at=at, action=op, prompt=name, label=label, version=reply.version,  # type: ignore[arg-type]
            previous_version=reply.previous, author=author, reason=reason, forced=reply.forced, percent=percent,
        )  # fmt: skip

    # -- reads ------------------------------------------------------------------------------------

    def _rollouts_of(self, name: str, labels: list[str]) -> dict[str, Rollout]:
        """The rollouts running on ``labels`` of ``name`` (one round trip)."""
        if not labels:
            return {}
        with self._translate():
            pipe = self._pipeline(transaction=False)
            for label in labels:
                pipe.hgetall(self.keys.rollout(name, label))
            found = pipe.execute()
        return {label: _rollout(name, label, fields) for label, fields in zip(labels, found, strict=True) if fields}

    def _list_rollouts(self) -> dict[str, dict[str, Rollout]]:
        with self._translate():
            entries: dict[bytes, bytes] = self.redis.hgetall(self.keys.index_rollouts)  # type: ignore[assignment]
        by_name: dict[str, list[str]] = {}
        for raw in entries:
            name, _, label = raw.decode("utf-8").rpartition(":")
            by_name.setdefault(name, []).append(label)
        found = {name: self._rollouts_of(name, sorted(labels)) for name, labels in by_name.items()}
        return {name: rollouts for name, rollouts in found.items() if rollouts}


def _rollout(name: str, label: str, fields: dict[bytes, bytes]) -> Rollout:
    try:
        return Rollout(
            version=int(fields[b"candidate"]),
            percent=percent_of(int(fields[b"points"])),
            started_at=datetime.fromisoformat(fields[b"started_at"].decode("ascii")),
            author=text_field(fields.get(b"author")) or None,
        )
    except (KeyError, ValueError) as exc:
        raise RegistryCorruptError(f"the rollout of {name!r} {label!r} is not readable: {exc!r}") from exc


def parse_rollout_index(entries: dict[bytes, bytes]) -> Iterator[tuple[str, str, int, int]]:
    """``(name, label, candidate, points)`` of each entry of ``{ns}:ix:rollouts`` (what clients read)."""
    for field, value in entries.items():
        name, _, label = field.decode("utf-8").rpartition(":")
        candidate, _, points = value.partition(b":")
        yield name, label, int(candidate), int(points)
