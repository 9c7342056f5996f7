"""Composition on PostgreSQL (:mod:`promptreg.registry.composition`): the dependents index, the graph
the checks read, and the checks inside each write's transaction.

``promptreg_partials`` (schema migration 6) holds one row ``(namespace, partial, dependent)`` per
prompt that has a version including ``partial`` (``{{> partial}}``, at any label or version): rows
are inserted with the version that includes the partial, in its transaction, and never change.

:class:`PostgresGraph` reads the registry as composition does, in batches: asked for the dependents
of a prompt it reads the whole closure (the dependents of the dependents, ...) in one recursive
query, then the prompts of the closure and the partials they include, their labels, rollouts and the
versions their labels point at in three more, whatever their number (a partial with 1,000 dependents
is a handful of round trips, not thousands). Other versions (a ``{{> name@3}}``) are read when asked.

Every write reads the graph on its own connection, after the namespace's revision row is locked
(:meth:`~promptreg.registry.postgres.store.PostgresPromptRegistry._write`): writers of a namespace
take turns, and each statement of a ``READ COMMITTED`` transaction sees every write committed before
it, so the checks run on the state the write changes and no concurrent write slips past them. A
refusal raises inside the transaction: nothing is written.

On a database at schema 5 (a registry with ``auto_migrate=False`` before ``promptreg migrate``)
the reads work without the table: the index is read from the versions (those holding ``{{>``).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from promptreg.registry.composition import Source, WriteGraph, composes, uses
from promptreg.registry.composition_checks import DependentReport, check_move, check_new_version, check_rollout
from promptreg.registry.models import CompatibilityMode, PromptVersion
from promptreg.registry.partials import PartialReads
from promptreg.registry.postgres.schema import MAY_INCLUDE, PARTIALS_SCHEMA

Connect = Callable[[], AbstractContextManager[Any]]
"""What a graph reads through: a connection in a transaction, for one batch of queries."""

_CLOSURE = """
    WITH RECURSIVE closure(name) AS (
        SELECT %(name)s::text
        UNION
        SELECT p.dependent FROM promptreg_partials p JOIN closure c ON p.partial = c.name
        WHERE p.namespace = %(ns)s
    )
    SELECT partial, dependent FROM promptreg_partials
    WHERE namespace = %(ns)s AND (partial IN (SELECT name FROM closure) OR dependent IN (SELECT name FROM closure))
"""
"""Every index row about the closure of ``name`` (``UNION`` ends the recursion on a cycle, which the
index over every version may hold): the rows naming a member as the partial (its dependents) and
as the dependent (the partials it includes)."""


@dataclass(frozen=True, slots=True)
class _Source:
    prompt_text: str
    messages: tuple[dict[str, str], ...] | None


@dataclass(slots=True)
class _Head:
    mode: CompatibilityMode
    labels: dict[str, int] = field(default_factory=dict)
    rollouts: set[str] = field(default_factory=set)


class PostgresGraph:
    """A :class:`~promptreg.registry.composition.WriteGraph` read through ``connect`` (the write's
    own connection, or a read transaction), each prompt read once. ``indexed``: whether the
    database has ``promptreg_partials`` (schema 6); else the index is read from the versions."""

    def __init__(self, connect: Connect, namespace: str, *, indexed: bool = True) -> None:
        self._connect = connect
        self._ns = namespace
        self._indexed = indexed
        self._heads: dict[str, _Head | None] = {}
        self._versions: dict[tuple[str, int], Source | None] = {}
        self._dependents: dict[str, tuple[str, ...]] = {}
        self._scanned: list[tuple[str, str]] | None = None

    # -- Graph ------------------------------------------------------------------------------------

    def labels(self, name: str) -> Mapping[str, int] | None:
        head = self._head(name)
        return None if head is None else head.labels

    def version(self, name: str, number: int) -> Source | None:
        key = (name, number)
        if key not in self._versions:
            with self._connect() as conn:
                row = conn.execute(
                    "SELECT prompt_text, messages FROM promptreg_versions WHERE namespace = %s AND name = %s "
                    "AND version = %s",
                    (self._ns, name, number),
                ).fetchone()
            self._versions[key] = None if row is None else _source(*row)
        return self._versions[key]

    def has_rollout(self, name: str, label: str) -> bool:
        head = self._head(name)
        return head is not None and label in head.rollouts

    def mode(self, name: str) -> CompatibilityMode:
        head = self._head(name)
        return "none" if head is None else head.mode

    def dependents(self, name: str) -> Iterable[str]:
        if name not in self._dependents:
            self._closure(name)
        return self._dependents[name]

    def prefetch(self, names: Iterable[str]) -> None:
        """Read the prompts ``names`` not read yet, together (those of a closure already are)."""
        self._fetch(names)

    # -- reading ----------------------------------------------------------------------------------

    def _head(self, name: str) -> _Head | None:
        if name not in self._heads:
            self._fetch([name])
        return self._heads[name]

    def _closure(self, name: str) -> None:
        """Read the index rows of ``name``'s closure, note every member's dependents, and read the
        members and the partials they include in one batch."""
        if self._indexed:
            with self._connect() as conn:
                rows = conn.execute(_CLOSURE, {"name": name, "ns": self._ns}).fetchall()
        else:
            rows = self._scan()
        edges: dict[str, set[str]] = {}
        for partial, dependent in rows:
            edges.setdefault(partial, set()).add(dependent)
        members, todo = {name}, [name]
        while todo:
            for dependent in edges.get(todo.pop(), ()):
                if dependent not in members:
                    members.add(dependent)
                    todo.append(dependent)
        for member in members:
            self._dependents.setdefault(member, tuple(sorted(edges.get(member, ()))))
        if len(members) > 1:  # dependents to check: they, and what they include, are read next
            self._fetch(members | {partial for partial, dependent in rows if dependent in members})

    def _scan(self) -> list[tuple[str, str]]:
        """The index read from the versions (a database without ``promptreg_partials``)."""
        if self._scanned is None:
            found: set[tuple[str, str]] = set()
            with self._connect() as conn:
                for name, text, messages in conn.execute(
                    "SELECT name, prompt_text, messages FROM promptreg_versions "
                    f"WHERE namespace = %s AND {MAY_INCLUDE}",
                    (self._ns,),
                ):
                    found.update((partial, name) for partial in uses(text, messages))
            self._scanned = sorted(found)
        return self._scanned

    def _fetch(self, names: Iterable[str]) -> None:
        """Read the prompts ``names`` not read yet: mode, labels (and ``latest``), rollouts, and the
        versions their labels point at (three queries, whatever their number)."""
        wanted = sorted(set(names) - self._heads.keys())
        if not wanted:
            return
        heads: dict[str, _Head] = {}
        latest: dict[str, int] = {}
        with self._connect() as conn:
            for name, mode, newest, label, number in conn.execute(
                "SELECT p.name, p.compatibility, p.latest, l.label, l.version FROM promptreg_prompts p "
                "LEFT JOIN promptreg_labels l ON l.namespace = p.namespace AND l.name = p.name "
                "AND l.version IS NOT NULL WHERE p.namespace = %s AND p.name = ANY(%s)",
                (self._ns, wanted),
            ):
                head = heads.setdefault(name, _Head(mode))
                if label is not None:
                    head.labels[label] = number
                if newest:
                    latest[name] = newest
            for name, label in conn.execute(
                "SELECT name, label FROM promptreg_rollouts WHERE namespace = %s AND name = ANY(%s)", (self._ns, wanted)
            ):
                heads[name].rollouts.add(label)
            for name, number, text, messages in conn.execute(
                "SELECT name, version, prompt_text, messages FROM promptreg_versions WHERE namespace = %s "
                "AND (name, version) IN (SELECT name, version FROM promptreg_labels WHERE namespace = %s "
                "AND name = ANY(%s) AND version IS NOT NULL UNION SELECT name, latest FROM promptreg_prompts "
                "WHERE namespace = %s AND name = ANY(%s))",
                (self._ns, self._ns, wanted, self._ns, wanted),
            ):
                self._versions[name, number] = _source(text, messages)
        for name, number in latest.items():
            heads[name].labels["latest"] = number
        for name in wanted:
            self._heads[name] = heads.get(name)


def _source(text: str, messages: list[dict[str, str]] | None) -> Source:
    return _Source(text, None if messages is None else tuple(messages))


class PostgresPartials(PartialReads):
    """Composition on the PostgreSQL store: the write-time checks (called by each write, on its
    connection) and the reads, each in one ``REPEATABLE READ`` snapshot. Mixed into
    :class:`~promptreg.registry.postgres.store.PostgresPromptRegistry`, which supplies the rest."""

    namespace: str
    _schema: int
    """The schema version of the database (read when the store first connects)."""

    @abstractmethod
    def _read(self) -> AbstractContextManager[Any]: ...

    # -- inside a write's transaction -------------------------------------------------------------

    def _write_graph(self, conn: Any) -> WriteGraph:
        """The graph of the write's transaction (its own connection: it sees the rows it wrote)."""
        return PostgresGraph(lambda: nullcontext(conn), self.namespace)

    def _add_partials(self, conn: Any, name: str, version: PromptVersion) -> None:
        """Check a version about to be added (``check_new_version``) and record the partials it
        includes in the index; call before inserting it (the checks read the graph without it)."""
        used = uses(version.prompt_text, version.messages)
        if not used:
            return
        check_new_version(self._write_graph(conn), name, version.version, version)
        conn.execute(
            "INSERT INTO promptreg_partials (namespace, partial, dependent) SELECT %s, partial, %s "
            "FROM unnest(%s::text[]) AS partial ON CONFLICT DO NOTHING",
            (self.namespace, name, sorted(used)),
        )

    def _check_graph(self, conn: Any, name: str, label: str, target: int | None, force: bool) -> bool:
        """``check_move`` of ``label`` of ``name`` to ``target`` (``None``: deleted) on the write's
        graph; whether the move goes through only by ``force``."""
        return check_move(self._write_graph(conn), name, label, target, force=force)

    def _check_rollout(self, conn: Any, name: str, label: str, candidate: int) -> None:
        """``check_rollout`` on the write's graph: no rollout of a composition or of a partial's label."""
        check_rollout(self._write_graph(conn), name, label, candidate)

    # -- reads ------------------------------------------------------------------------------------

    def _graph(self) -> WriteGraph:
        """The graph of plain reads (``_read`` transactions; the public reads below hold one)."""
        return PostgresGraph(self._read, self.namespace, indexed=self._schema >= PARTIALS_SCHEMA)

    def _dependents_index(self) -> Mapping[str, Iterable[str]]:
        index: dict[str, set[str]] = {}
        with self._read() as conn:
            if self._schema >= PARTIALS_SCHEMA:
                rows = conn.execute(
                    "SELECT partial, dependent FROM promptreg_partials WHERE namespace = %s", (self.namespace,)
                ).fetchall()
            else:
                rows = PostgresGraph(lambda: nullcontext(conn), self.namespace, indexed=False)._scan()
        for partial, dependent in rows:
            index.setdefault(partial, set()).add(dependent)
        return index

    def dependents(self, name: str, label: str | None = None) -> dict[str, dict[str, int]]:
        with self._read():  # one snapshot: every read of the graph runs in this transaction
            return super().dependents(name, label)

    def check_dependents(self, name: str, label: str, version: int | None) -> list[DependentReport]:
        with self._read():
            return super().check_dependents(name, label, version)

    def _resolved(self, name: str, label: str, version: PromptVersion) -> PromptVersion:
        if not composes(version):  # served as it is: no transaction
            return version
        with self._read():
            return super()._resolved(name, label, version)
