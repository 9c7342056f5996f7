"""Composition on Redis: the write-time checks of :mod:`promptreg.registry.composition`, made atomic
with the write by the revision they were read at.

A write script cannot read the graph itself (every key it touches must be in KEYS, and which
prompts a partial's move concerns is only known by reading), so Python reads and checks, and the
script verifies nothing changed since: ``graph_guard`` in ``lua/_commit.lua``. A write of a prompt
that no composition involves (not in ``{ns}:ix:graph``) is let through at once, without a read: a
registry that does not use partials pays two ``HEXISTS`` per label move and no round trip. A write
that does answers ``GRAPH``; Python reads the revision, checks on the state from there, and calls
again with that revision, which the script compares with ``{ns}:rev``. Any write in between has
moved it, so the script answers ``GRAPH`` again and the check is redone: the checks always judged
the very state the write applies to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

import msgpack

from promptreg.registry.composition import Source, WriteGraph
from promptreg.registry.errors import RegistryUnavailableError
from promptreg.registry.models import CompatibilityMode, Prompt
from promptreg.registry.redis.calls import Reply
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.packed import PACKED_FORMAT
from promptreg.registry.redis.records import text_field, version_from_hash

GRAPH_ATTEMPTS = 100
"""Checks redone because another write moved the revision meanwhile, before giving up."""

Guard = tuple[str, str]
"""The two ARGV ``graph_guard`` reads: the revision checked at (``!`` appended: forced), the new
version's partials."""

NO_GUARD: Guard = ("", "")

_T = TypeVar("_T")


class RedisPartials:
    """The composition reads and checks of :class:`~promptreg.RedisPromptRegistry` (a mixin)."""

    keys: Keyspace
    redis: Any

    if TYPE_CHECKING:

        def _translate(self) -> AbstractContextManager[None]: ...
        def _get_prompt(self, name: str) -> Prompt | None: ...

    def _dependents_index(self) -> dict[str, set[str]]:
        with self._translate():
            raw: dict[bytes, bytes] = self.redis.hgetall(self.keys.graph)
        return {
            field[2:].decode(): set(value.decode().split()) for field, value in raw.items() if field.startswith(b"b:")
        }

    def _graph(self) -> WriteGraph:
        return RedisGraph(self.redis, self.keys, self._translate)

    def _guarded(
        self,
        run: Callable[[Guard], _T],
        result_of: Callable[[_T], list[Any]],
        check: Callable[[WriteGraph], bool],
        partials: str = "",
    ) -> tuple[_T, bool]:
        """Run a write, checking the graph when the script asks (or first, for a version including
        ``partials``); returns what ``run`` returned and whether the graph check needed force."""
        forced = False
        guard: Guard = NO_GUARD
        if partials:
            guard, forced = self._checked(check, partials)
        for _attempt in range(GRAPH_ATTEMPTS):
            out = run(guard)
            result = result_of(out)
            if result[0] == b"OK" or result[1] != b"GRAPH":
                return out, forced
            guard, forced = self._checked(check, partials)
        raise RegistryUnavailableError(
            f"other writers kept changing the registry while a composition was checked; {GRAPH_ATTEMPTS} tries, "
            "nothing written"
        )

    def _checked(self, check: Callable[[WriteGraph], bool], partials: str) -> tuple[Guard, bool]:
        """Read the revision, then check on the state from there (raises the check's refusal)."""
        with self._translate():
            rev = int(self.redis.get(self.keys.rev) or 0)
        forced = check(self._graph())
        return (f"{rev}!" if forced else str(rev), partials), forced


def result_of(out: tuple[Any, list[Any]]) -> list[Any]:
    """The script's reply, of what ``_run_placed`` returns."""
    return out[1]


def forced_reply(reply: Reply, forced: bool) -> Reply:
    """``reply``, forced also when the graph check needed force (the script records it; its reply
    says only its own compatibility check's)."""
    return dataclasses.replace(reply, forced=True) if forced and not reply.forced else reply


def unforced(check: Callable[[WriteGraph], None]) -> Callable[[WriteGraph], bool]:
    """A check that refuses or passes (never needs force), as :meth:`RedisPartials._guarded` takes it."""

    def run(graph: WriteGraph) -> bool:
        check(graph)
        return False

    return run


class RedisGraph:
    """The registry on Redis as composition reads it (a :class:`~promptreg.registry.composition.WriteGraph`):
    the graph hash once, and the prompts a check concerns in three pipelined round trips
    (:meth:`prefetch`: each prompt's hash and label set, its label pointers, the versions they point
    at), whatever their number. Reads are not one snapshot; the write script's revision check makes
    the result one (module docstring)."""

    def __init__(self, redis: Any, keys: Keyspace, translate: Callable[[], AbstractContextManager[None]]) -> None:
        self._redis, self._keys, self._translate = redis, keys, translate
        self._labels: dict[str, dict[str, int] | None] = {}
        self._modes: dict[str, CompatibilityMode] = {}
        self._versions: dict[tuple[str, int], Source | None] = {}
        self._edges: dict[str, list[str]] | None = None
        self._rollouts: set[str] | None = None

    def prefetch(self, names: Iterable[str]) -> None:
        todo = [name for name in dict.fromkeys(names) if name not in self._labels]
        if not todo:
            return
        k = self._keys
        with self._translate():
            pipe = self._redis.pipeline(transaction=False)
            pipe.exists(k.index_format)
            pipe.smembers(k.index_labels)
            pipe.hmget(k.index_latest, todo)
            for name in todo:
                pipe.hmget(k.prompt(name), "compatibility", "created_at")
            indexed, label_names, latest, *metas = pipe.execute()
            if not indexed:  # a registry from before the index (promptreg migrate builds it)
                self._prefetch_unindexed(todo)
                return
            # Every label of these prompts from the per-label index hashes: one HMGET per label name.
            labels = sorted(raw.decode() for raw in label_names)
            pipe = self._redis.pipeline(transaction=False)
            for label in labels:
                pipe.hmget(k.index_label(label), todo)
            pointed = pipe.execute() if labels else []
        for i, name in enumerate(todo):
            mode, created = metas[i]
            if created is None:
                self._labels[name] = None
                continue
            self._modes[name] = text_field(mode) or "none"  # type: ignore[assignment]  # the script checks it
            found = {"latest": int(latest[i])} if latest[i] else {}
            for label, targets in zip(labels, pointed, strict=True):
                if targets[i] is not None:
                    found[label] = int(targets[i])
            self._labels[name] = found
        self._read_versions(sorted({(n, v) for n in todo for v in (self._labels[n] or {}).values()}))

    def _prefetch_unindexed(self, todo: list[str]) -> None:
        k = self._keys
        with self._translate():
            pipe = self._redis.pipeline(transaction=False)
            for name in todo:
                pipe.hmget(k.prompt(name), "latest", "compatibility", "created_at")
                pipe.smembers(k.labels(name))
            found = pipe.execute()
            pipe = self._redis.pipeline(transaction=False)
            asked: list[tuple[str, str]] = []
            for i, name in enumerate(todo):
                for raw in sorted(found[2 * i + 1]):
                    asked.append((name, raw.decode()))
                    pipe.get(k.label(name, raw.decode()))
            targets = pipe.execute() if asked else []
        for i, name in enumerate(todo):
            latest, mode, created = found[2 * i]
            if created is None:
                self._labels[name] = None
                continue
            self._modes[name] = text_field(mode) or "none"  # type: ignore[assignment]  # the script checks it
            self._labels[name] = {"latest": int(latest)} if latest and int(latest) else {}
        for (name, label), target in zip(asked, targets, strict=True):
            labels = self._labels.get(name)
            if target is not None and labels is not None:
                labels[label] = int(target)
        self._read_versions(sorted({(n, v) for n in todo for v in (self._labels[n] or {}).values()}))

    def _read_versions(self, pairs: list[tuple[str, int]]) -> None:
        """Versions by their packed records (one ``MGET``), by their hashes where a record is missing."""
        pairs = [pair for pair in pairs if pair not in self._versions]
        if not pairs:
            return
        with self._translate():
            records = self._redis.mget(self._keys.packed_keys(pairs))
        unpacked: list[tuple[str, int]] = []
        for pair, record in zip(pairs, records, strict=True):
            source = None if record is None else _unpacked(record)
            if source is None:
                unpacked.append(pair)
            else:
                self._versions[pair] = source
        if not unpacked:
            return
        with self._translate():
            pipe = self._redis.pipeline(transaction=False)
            for name, number in unpacked:
                pipe.hgetall(self._keys.version(name, number))
            hashes = pipe.execute()
        for (name, number), fields in zip(unpacked, hashes, strict=True):
            self._versions[name, number] = version_from_hash(name, number, fields) if fields else None

    def labels(self, name: str) -> Mapping[str, int] | None:
        if name not in self._labels:
            self.prefetch([name])
        return self._labels[name]

    def version(self, name: str, number: int) -> Source | None:
        if (name, number) not in self._versions:
            self._read_versions([(name, number)])
        return self._versions[name, number]

    def has_rollout(self, name: str, label: str) -> bool:
        if self._rollouts is None:
            with self._translate():
                raw: dict[bytes, bytes] = self._redis.hgetall(self._keys.index_rollouts)
            self._rollouts = {field.decode() for field in raw}
        return f"{name}:{label}" in self._rollouts

    def mode(self, name: str) -> CompatibilityMode:
        self.labels(name)
        return self._modes.get(name, "none")

    def dependents(self, name: str) -> Iterable[str]:
        if self._edges is None:
            with self._translate():
                raw: dict[bytes, bytes] = self._redis.hgetall(self._keys.graph)
            self._edges = {f[2:].decode(): v.decode().split() for f, v in raw.items() if f.startswith(b"b:")}
        return self._edges.get(name, ())


class _Text:
    """What composition reads of a version decoded from its packed record."""

    __slots__ = ("messages", "prompt_text")

    def __init__(self, prompt_text: str, messages: tuple[dict[str, str], ...] | None) -> None:
        self.prompt_text = prompt_text
        self.messages = messages


def _unpacked(record: bytes) -> _Text | None:
    """A packed record's text and messages (``None``: not a record this release reads)."""
    try:
        fields = msgpack.unpackb(record, timestamp=3)
    except (ValueError, msgpack.ExtraData):
        return None
    if not isinstance(fields, list) or len(fields) != 8 or fields[0] != PACKED_FORMAT:
        return None
    text, messages = fields[1], fields[6]
    return _Text(text, None if messages is None else tuple(messages))
