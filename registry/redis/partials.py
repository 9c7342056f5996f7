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
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from promptreg.registry.composition import PromptsGraph, WriteGraph
from promptreg.registry.errors import RegistryUnavailableError
from promptreg.registry.models import Prompt
from promptreg.registry.redis.calls import Reply

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from promptreg.registry.redis.keys import Keyspace

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
        return PromptsGraph(self._get_prompt, self._dependents_index)

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
