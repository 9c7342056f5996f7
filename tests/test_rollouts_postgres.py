"""Rollouts on PostgreSQL beyond the cross-backend contract (tests/test_rollouts.py): schema migration
5 on a database at version 4, refusals that leave every table as it was, concurrent writers of one
label, the audit rows and notifications, and what the client's reads of the tables return.

Every test runs against the real PostgreSQL of ``tests/postgres_server.py`` (a fresh namespace, or a
fresh database where the schema itself is under test).
"""

from __future__ import annotations

import functools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.client.cache import Cache
from promptreg.client.postgres.readback import read_changes, read_state
from promptreg.client.subset import PromptSubset
from promptreg.registry import (
    IncompatibleVersionError,
    InvalidInputError,
    LabelNotFoundError,
    PostgresPromptRegistry,
    PromptNotFoundError,
    RegistryUnavailableError,
    RolloutActiveError,
    RolloutNotFoundError,
    VersionNotFoundError,
)
from promptreg.registry.cli.local_server import wait_until
from promptreg.registry.postgres.schema import LATEST_SCHEMA, MIGRATIONS, SCHEMA_TABLE, decode_payload
from tests.postgres_server import PostgresServer, owner
from tests.postgres_server import registry_rows as rows

pytestmark = pytest.mark.postgres


@pytest.fixture
def url(postgres_server: PostgresServer, namespace: str) -> str:
    return postgres_server.url(namespace=namespace)


@pytest.fixture
def reg(url: str) -> Iterator[PostgresPromptRegistry]:
    registry = PostgresPromptRegistry(url)
    yield registry
    registry.close()


def listener(reg: PostgresPromptRegistry) -> psycopg.Connection[Any]:
    conn = owner(reg)
    conn.execute(f'LISTEN "{reg.channel}"')
    return conn


def received(conn: psycopg.Connection[Any], timeout: float = 0.3) -> list[dict[str, Any]]:
    return [json.loads(n.payload) for n in conn.notifies(timeout=timeout)]


def seed(reg: PostgresPromptRegistry) -> None:
    """``p``: versions 1..4 (4 adds an input), ``production`` -> 1, ``staging`` -> 2 (rollback target 1)
    with a rollout of 3 at 10 %, ``old`` deleted; compatibility ``backward``."""
    reg.create_prompt("p", compatibility="backward")
    for text in ("Hello {{name}}.", "Hi {{name}}.", "Hey {{name}}!", "Hey {{name}} from {{city}}."):
        reg.add_version("p", text)
    reg.set_label("p", "production", 1)
    reg.set_label("p", "staging", 1)
    reg.set_label("p", "staging", 2)
    reg.set_label("p", "old", 1)
    reg.delete_label("p", "old")
    reg.start_rollout("p", "staging", 3, 10)


# -- schema migration 5 ------------------------------------------------------------------------------


def _schema_at_4(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY, description text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for migration in MIGRATIONS[:4]:
            conn.execute(migration.sql)
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                         (migration.version, migration.description))  # fmt: skip
        # What a registry of schema 4 wrote: a prompt, a version, a label, their audit rows.
        conn.execute("INSERT INTO promptreg_namespaces VALUES ('shop', 3)")
        conn.execute(
            "INSERT INTO promptreg_prompts (namespace, name, created_at, latest) VALUES ('shop', 'p', now(), 1)"
        )
        conn.execute("INSERT INTO promptreg_versions (namespace, name, version, prompt_text, metadata, sha256, "
                     "created_at) VALUES ('shop', 'p', 1, 'one', '{}', 'ab', now())")  # fmt: skip
        conn.execute("INSERT INTO promptreg_labels VALUES ('shop', 'p', 'production', 1, NULL)")
        for rev, action, label, version in ((1, "create_prompt", None, None), (2, "add_version", None, 1),
                                            (3, "set_label", "production", 1)):  # fmt: skip
            conn.execute("INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version, write_id) "
                         "VALUES ('shop', %s, now(), %s, 'p', %s, %s, %s)",
                         (rev, action, label, version, f"{rev:016x}"))  # fmt: skip


def test_migration_5_upgrades_a_database_at_version_4(fresh_db: str) -> None:
    _schema_at_4(fresh_db)
    suffix = uuid.uuid4().hex[:8]
    reader, writer = f"reader_{suffix}", f"writer_{suffix}"
    admin = psycopg.connect(fresh_db, autocommit=True)
    try:
        admin.execute(f"CREATE ROLE {reader} LOGIN")
        admin.execute(f"CREATE ROLE {writer} LOGIN")
        admin.execute(f"GRANT SELECT ON promptreg_labels, promptreg_audit TO {reader}, {writer}")
        admin.execute(f"GRANT INSERT, UPDATE ON promptreg_labels TO {writer}")
        # A client of this version reads a schema-4 database: no rollouts, no error, the state is there.
        cache = Cache("production")
        state = read_state(admin, "shop", cache, None)
        assert state.rev == 3 and dict(state.pointers) == {"p": {"latest": 1, "production": 1}}
        assert state.pointers.rollouts == {}
        changes = read_changes(admin, "shop", 0, 10, True)
        assert [(c.op, c.percent) for _, c in changes.changes] == [
            ("create_prompt", None), ("add_version", None), ("set_label", None),
        ]  # fmt: skip
        with pytest.raises(RegistryUnavailableError, match="run `promptreg migrate`"):
            PostgresPromptRegistry(fresh_db, namespace="shop", auto_migrate=False).get_prompt("p")
        with PostgresPromptRegistry(fresh_db, namespace="shop", auto_migrate=False) as reg:
            result = reg.migrate()
            assert result.changed and "applied schema migration(s) 5 (rollouts" in result.message
            assert not reg.migrate().changed
            assert [e.percent for e in reg.history("p")] == [None, None, None]  # rows from before: no share
            reg.add_version("p", "two")
            reg.start_rollout("p", "production", 2, 12.5)
            prompt = reg.get_prompt("p")
            assert prompt is not None and prompt.rollouts["production"].percent == 12.5
        applied = [r[0] for r in admin.execute(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version")]
        assert applied == list(range(1, LATEST_SCHEMA + 1)) and applied[:5] == [1, 2, 3, 4, 5]
        # The roles made before the migration got the new table's grants from promptreg_labels'.
        privileges = {
            (role, privilege): admin.execute("SELECT has_table_privilege(%s, 'promptreg_rollouts', %s)",
                                             (role, privilege)).fetchone() == (True,)
            for role in (reader, writer) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
        }  # fmt: skip
        assert privileges == {
            (reader, "SELECT"): True, (reader, "INSERT"): False, (reader, "UPDATE"): False, (reader, "DELETE"): False,
            (writer, "SELECT"): True, (writer, "INSERT"): True, (writer, "UPDATE"): True, (writer, "DELETE"): True,
        }  # fmt: skip
    finally:
        for role in (reader, writer):
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_the_constraints_hold_a_rollout_to_its_label_and_candidate(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    with owner(reg) as conn:
        statements = (
            "INSERT INTO promptreg_rollouts VALUES (%s, 'p', 'production', 9, 100, now(), NULL)",  # no version 9
            "INSERT INTO promptreg_rollouts VALUES (%s, 'p', 'nowhere', 2, 100, now(), NULL)",  # no such label
            "INSERT INTO promptreg_rollouts VALUES (%s, 'p', 'production', 2, 10000, now(), NULL)",  # 100 %
            "INSERT INTO promptreg_rollouts VALUES (%s, 'p', 'production', 2, 0, now(), NULL)",
        )
        for statement in statements:
            with pytest.raises(psycopg.IntegrityError):
                conn.execute(statement, (reg.namespace,))


# -- refusals: nothing written, nothing notified ------------------------------------------------------


def test_every_refusal_leaves_every_table_unchanged(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    before = rows(reg)
    assert len(before["promptreg_rollouts"]) == 1
    conn = listener(reg)
    refusals: list[tuple[type[Exception], Callable[[], object]]] = [
        (PromptNotFoundError, lambda: reg.start_rollout("nope", "production", 2, 5)),
        (LabelNotFoundError, lambda: reg.start_rollout("p", "canary", 2, 5)),
        (LabelNotFoundError, lambda: reg.start_rollout("p", "old", 2, 5)),  # deleted
        (RolloutActiveError, lambda: reg.start_rollout("p", "staging", 1, 5)),
        (VersionNotFoundError, lambda: reg.start_rollout("p", "production", 9, 5)),
        (InvalidInputError, lambda: reg.start_rollout("p", "production", 1, 5)),  # the stable version
        (IncompatibleVersionError, lambda: reg.start_rollout("p", "production", 4, 5)),  # adds {{city}}
        (RolloutNotFoundError, lambda: reg.set_rollout("p", "production", 20)),
        (RolloutNotFoundError, lambda: reg.promote_rollout("p", "production")),
        (RolloutNotFoundError, lambda: reg.abort_rollout("p", "production")),
        (RolloutNotFoundError, lambda: reg.abort_rollout("p", "old")),
        (PromptNotFoundError, lambda: reg.abort_rollout("nope", "staging")),
        (RolloutActiveError, lambda: reg.set_label("p", "staging", 1)),
        (RolloutActiveError, lambda: reg.set_label("p", "staging", 3, expected_version=2)),
        (RolloutActiveError, lambda: reg.delete_label("p", "staging")),
        (RolloutActiveError, lambda: reg.rollback("p", "staging")),
    ]
    for error, call in refusals:
        with pytest.raises(error) as caught:
            call()
        if isinstance(caught.value, RolloutActiveError):
            assert caught.value.candidate == 3
        assert rows(reg) == before, error
    assert received(conn) == []
    conn.close()
    event = reg.set_rollout("p", "staging", 20)  # the next write gets the next revision: nothing used up
    (namespace_row,) = before["promptreg_namespaces"]
    assert event.rev == int(str(namespace_row[1])) + 1


def test_force_starts_an_incompatible_candidate_and_records_it(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    event = reg.start_rollout("p", "production", 4, 5, force=True, reason="needs city")
    assert event.forced and event.percent == 5
    assert reg.history("p")[-1] == event
    with owner(reg) as conn:
        row = conn.execute("SELECT forced, points FROM promptreg_audit WHERE namespace = %s AND rev = %s",
                           (reg.namespace, event.rev)).fetchone()  # fmt: skip
    assert row == (True, 500)


# -- concurrent writers of one label ------------------------------------------------------------------


def _race(reg: PostgresPromptRegistry, calls: list[Callable[[PostgresPromptRegistry], object]]) -> list[object]:
    """Run each call on its own registry (its own connection) while the namespace's revision row is
    held, until every one of them waits for it; then let them go. Returns each result or exception."""
    registries = [PostgresPromptRegistry(reg.url) for _ in calls]
    for each in registries:
        each.list_prompts()  # connected before the race
    pids = [each._conn.info.backend_pid for each in registries]
    results: list[object] = [None] * len(calls)

    def run(index: int) -> None:
        try:
            results[index] = calls[index](registries[index])
        except Exception as exc:
            results[index] = exc

    holder = owner(reg)
    try:
        with holder.transaction():
            holder.execute("SELECT rev FROM promptreg_namespaces WHERE namespace = %s FOR UPDATE", (reg.namespace,))
            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                (waiting,) = holder.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND pid = ANY(%s)", (pids,)
                ).fetchone() or (0,)
                if waiting >= len(calls):
                    break
                time.sleep(0.01)
            assert waiting >= len(calls), "the writers did not all reach the lock"
        for thread in threads:
            thread.join(10)
    finally:
        holder.close()
        for each in registries:
            each.close()
    return results


def test_concurrent_start_rollout_one_wins_the_other_is_refused(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    results = _race(reg, [lambda r: r.start_rollout("p", "production", 2, 10, author="a"),
                          lambda r: r.start_rollout("p", "production", 3, 20, author="b")])  # fmt: skip
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], RolloutActiveError)
    winner = reg.list_rollouts()["p"]["production"]
    assert lost[0].candidate == winner.version
    assert [e.action for e in reg.history("p")].count("start_rollout") == 2  # seed's staging, and this one


def test_set_label_racing_start_rollout_leaves_one_consistent_outcome(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    set_first, start_first = 0, 0
    for _ in range(3):
        results = _race(reg, [lambda r: r.set_label("p", "production", 3),
                              lambda r: r.start_rollout("p", "production", 3, 50)])  # fmt: skip
        moved, started = results
        prompt = reg.get_prompt("p")
        assert prompt is not None
        if isinstance(moved, Exception):  # the rollout came first: the plain move was refused
            assert isinstance(moved, RolloutActiveError) and not isinstance(started, Exception)
            assert prompt.labels["production"] == 1 and prompt.rollouts["production"].version == 3
            start_first += 1
            reg.abort_rollout("p", "production")
        else:  # the move came first: the candidate is now the stable version
            assert isinstance(started, InvalidInputError)
            assert prompt.labels["production"] == 3 and "production" not in prompt.rollouts
            set_first += 1
            reg.set_label("p", "production", 1)
    assert set_first + start_first == 3


# -- audit rows, history, notifications -----------------------------------------------------------------


def test_history_audit_rows_and_notifications_of_a_rollout(reg: PostgresPromptRegistry) -> None:
    reg.create_prompt("p")
    for text in ("one", "two", "three"):
        reg.add_version("p", text)
    reg.set_label("p", "production", 1)
    reg.set_label("p", "staging", 1)
    conn = listener(reg)
    start = reg.start_rollout("p", "production", 3, 10.25, author="ann", reason="try three")
    widen = reg.set_rollout("p", "production", 50, author="bob")
    promote = reg.promote_rollout("p", "production")
    reg.start_rollout("p", "staging", 2, 1)
    abort = reg.abort_rollout("p", "staging", reason="no")
    messages = received(conn)
    conn.close()
    events = reg.history("p")[-5:]
    assert [(e.action, e.label, e.version, e.previous_version, e.percent) for e in events] == [
        ("start_rollout", "production", 3, 1, 10.25),
        ("set_rollout", "production", 3, 1, 50.0),
        ("promote_rollout", "production", 3, 1, None),
        ("start_rollout", "staging", 2, 1, 1.0),
        ("abort_rollout", "staging", 1, 2, None),
    ]
    assert events[0] == start and events[1] == widen and events[2] == promote and events[4] == abort
    assert start.author == "ann" and start.reason == "try three" and not start.forced
    assert reg.changes_since(start.rev - 1) == events
    with owner(reg) as db:
        points = [r[0] for r in db.execute("SELECT points FROM promptreg_audit WHERE namespace = %s AND rev >= %s "
                                           "ORDER BY rev", (reg.namespace, start.rev))]  # fmt: skip
        assert points == [1025, 5000, None, 100, None]
        assert db.execute("SELECT count(*) FROM promptreg_rollouts WHERE namespace = %s",
                          (reg.namespace,)).fetchone() == (0,)  # fmt: skip
    assert [(m["op"], m["version"], m["prev"], m["pct"]) for m in messages] == [
        ("start_rollout", 3, 1, 10.25), ("set_rollout", 3, 1, 50.0), ("promote_rollout", 3, 1, None),
        ("start_rollout", 2, 1, 1.0), ("abort_rollout", 1, 2, None),
    ]  # fmt: skip
    assert decode_payload(json.dumps(messages[0])).percent == 10.25
    # Promote is a label move: the stable version is the rollback target.
    prompt = reg.get_prompt("p")
    assert prompt is not None and prompt.labels == {"production": 3, "staging": 1} and prompt.rollouts == {}
    assert reg.rollback("p", "production").version == 1


def test_get_prompt_and_list_rollouts_read_the_rollouts(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    reg.start_rollout("p", "production", 2, 0.01, author="ann")
    prompt = reg.get_prompt("p")
    assert prompt is not None
    assert {label: (r.version, r.percent, r.author) for label, r in prompt.rollouts.items()} == {
        "production": (2, 0.01, "ann"), "staging": (3, 10.0, None),
    }  # fmt: skip
    assert reg.list_rollouts() == {"p": prompt.rollouts}
    assert prompt.rollouts["production"].started_at.tzinfo is not None


def test_drop_namespace_removes_the_rollouts(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    reg.drop_namespace()
    assert all(found == [] for found in rows(reg).values())


# -- the client's reads ---------------------------------------------------------------------------------


def test_the_clients_state_read_carries_the_rollouts_and_their_candidates(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    reg.add_version("p", "Yo {{name}}.")  # 5: latest, pointed at by nothing else
    reg.start_rollout("p", "production", 3, 33.33)
    with owner(reg) as conn:
        for subset in (None, frozenset({"p"})):
            cache = Cache("production") if subset is None else Cache("production", subset=_subset(subset))
            state = read_state(conn, reg.namespace, cache, None)
            assert dict(state.pointers) == {"p": {"latest": 5, "production": 1, "staging": 2}}
            assert state.pointers.rollouts == {"p": {"production": (3, 3333), "staging": (3, 1000)}}
            assert sorted(state.versions) == [("p", 1), ("p", 2), ("p", 3), ("p", 5)]  # the candidate too
            assert state.versions["p", 3].text_once() == "Hey {{name}}!"
        # A client that serves other prompts only reads none of these rollouts.
        state = read_state(conn, reg.namespace, Cache("production", subset=_subset(frozenset({"q"}))), None)
        assert state.pointers.rollouts == {} and state.versions == {}


def _subset(names: frozenset[str]) -> PromptSubset:
    return PromptSubset(names)


def test_the_clients_change_read_carries_the_share_and_the_candidates_identity(reg: PostgresPromptRegistry) -> None:
    seed(reg)
    after = reg.history("p")[-1].rev
    reg.set_rollout("p", "staging", 40)
    reg.promote_rollout("p", "staging")
    reg.start_rollout("p", "production", 2, 5)
    reg.abort_rollout("p", "production")
    with owner(reg) as conn:
        read = read_changes(conn, reg.namespace, after, 10, True)
        shas = dict(conn.execute("SELECT version, left(sha256, 16) FROM promptreg_versions WHERE namespace = %s",
                                 (reg.namespace,)).fetchall())  # fmt: skip
    got = [(c.op, c.label, c.version, c.previous_version, c.percent, c.sha) for _, c in read.changes]
    assert got == [
        ("set_rollout", "staging", 3, 2, 40.0, shas[3]),
        ("promote_rollout", "staging", 3, 2, None, shas[3]),
        ("start_rollout", "production", 2, 1, 5.0, shas[2]),
        ("abort_rollout", "production", 1, 2, None, shas[1]),
    ]
    assert all(c.write_id and c.previous_write_id for _, c in read.changes)
    assert set(read.texts) == {("p", 2)}  # a start brings its candidate's text


def _serves_share(prompts: PromptClient, percent: float) -> bool:
    return prompts.rollouts() == {"p": {"production": (2, percent)}}


def test_a_client_started_during_a_rollout_serves_its_split(reg: PostgresPromptRegistry) -> None:
    """The candidate is neither a label's version nor the latest: only the state read brings it."""
    seed(reg)
    reg.add_version("p", "Yo {{name}}.")  # 5: latest
    reg.abort_rollout("p", "staging")
    reg.start_rollout("p", "production", 2, 50)
    for subset in (None, ["p"]):
        with PromptClient(reg.url, prompts=subset, start_timeout=10) as prompts:
            assert prompts.status().state is ClientState.LIVE
            assert prompts.rollouts() == {"p": {"production": (2, 50.0)}}
            versions = {prompts.get("p", "production", key=f"user-{i}").version for i in range(200)}
            assert versions == {1, 2}
            reg.set_rollout("p", "production", 75)  # and a change read back from the audit row
            assert wait_until(functools.partial(_serves_share, prompts, 75.0), 10)
            reg.set_rollout("p", "production", 50)
