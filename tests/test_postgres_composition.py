"""Composition on PostgreSQL beyond the cross-backend suite (tests/test_composition.py): the dependents
index ``promptreg_partials`` and schema migration 6 on a database at version 5 (backfill, grants,
reads before the migration), the checks inside each write's transaction against concurrent writers,
refusals that leave every table unchanged, and the round trips of a partial with 1,000 dependents.

Every test runs against the real PostgreSQL of ``tests/postgres_server.py`` (a fresh namespace, or a
fresh database where the schema itself is under test).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import psycopg
import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import (
    IncompatibleDependentError,
    IncompatibleVersionError,
    LabelNotFoundError,
    PartialCycleError,
    PartialNotFoundError,
    PartialTypeError,
    PostgresPromptRegistry,
    RegistryAuthError,
    RegistryUnavailableError,
)
from promptreg.registry.composition import Source, compose
from promptreg.registry.models import AuditEvent
from promptreg.registry.postgres.schema import LATEST_SCHEMA, MIGRATIONS, SCHEMA_TABLE
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


def index_rows(conn: psycopg.Connection[Any], namespace: str | None = None) -> set[tuple[str, ...]]:
    if namespace is None:
        found = conn.execute("SELECT namespace, partial, dependent FROM promptreg_partials").fetchall()
    else:
        found = conn.execute(
            "SELECT partial, dependent FROM promptreg_partials WHERE namespace = %s", (namespace,)
        ).fetchall()
    return {tuple(row) for row in found}


def prompt(reg: PostgresPromptRegistry, name: str, *texts: str, labels: Mapping[str, int] = {},
           mode: Any = "none") -> None:  # fmt: skip
    reg.create_prompt(name, compatibility=mode)
    for text in texts:
        reg.add_version(name, text)
    for label, version in labels.items():
        reg.set_label(name, label, version)


# -- the index ----------------------------------------------------------------------------------------


def test_each_version_records_the_partials_it_includes(reg: PostgresPromptRegistry) -> None:
    prompt(reg, "safety", "Be safe, {{user}}.", labels={"production": 1})
    prompt(reg, "style", "Write plainly.", labels={"production": 1})
    prompt(reg, "bot", "No partial.", "{{> safety}} {{> style@production}} {{> safety@1}}")
    reg.create_prompt("chat")
    reg.add_version("chat", messages=[{"role": "system", "content": "{{> style}}"}, {"placeholder": "history"}])
    prompt(reg, "plain", "{{> }} is no reference, {{ > nor}} this")
    with owner(reg) as conn:
        assert index_rows(conn, reg.namespace) == {("safety", "bot"), ("style", "bot"), ("style", "chat")}
        reg.add_version("bot", "{{> safety}} again")  # a pair already there: no second row
        assert index_rows(conn, reg.namespace) == {("safety", "bot"), ("style", "bot"), ("style", "chat")}
    assert reg._dependents_index() == {"safety": {"bot"}, "style": {"bot", "chat"}}
    reg.set_label("bot", "production", 2)
    reg.set_label("chat", "production", 1)
    assert reg.dependents("style") == {"bot": {"production": 2}, "chat": {"production": 1}}


def test_a_refused_write_leaves_every_table_unchanged(reg: PostgresPromptRegistry) -> None:
    prompt(reg, "safety", "Be safe, {{user}}.", "Be safe, {{user}}!", "Be safe, {{user}}, in {{language}}.",
           labels={"production": 1, "staging": 2})  # fmt: skip
    prompt(reg, "bot", "{{> safety}} {{question}}", labels={"production": 1}, mode="backward")
    reg.create_prompt("chatty")
    reg.add_version("chatty", messages=[{"role": "system", "content": "hi"}])
    prompt(reg, "user", "{{> safety@staging}}", labels={"staging": 1})
    before, rev = rows(reg), reg.revision()
    refusals: list[tuple[type[Exception], Callable[[], object]]] = [
        (PartialNotFoundError, lambda: reg.add_version("bot", "{{> nobody}}")),
        (PartialNotFoundError, lambda: reg.add_version("bot", "{{> safety@canary}}")),
        (PartialNotFoundError, lambda: reg.add_version("bot", "{{> safety@9}}")),
        (PartialCycleError, lambda: reg.add_version("safety", "{{> bot}}")),
        (PartialTypeError, lambda: reg.add_version("bot", "{{> chatty}}")),
        (IncompatibleDependentError, lambda: reg.set_label("safety", "production", 3)),
        (PartialNotFoundError, lambda: reg.delete_label("safety", "production")),
        (PartialNotFoundError, lambda: reg.delete_label("safety", "staging")),  # fixed label of "user"
        (PartialTypeError, lambda: reg.start_rollout("safety", "production", 2, 10)),  # bot follows it
        (PartialTypeError, lambda: reg.start_rollout("safety", "staging", 1, 10)),  # user includes it, fixed
    ]
    for error, call in refusals:
        with pytest.raises(error):
            call()
        assert rows(reg) == before, error
        assert reg.revision() == rev
    # Forced, a delete goes through and is recorded as forced (the index is not touched by moves).
    event = reg.delete_label("safety", "production", force=True)
    assert event.forced and reg.history("safety")[-1].forced
    after = rows(reg)
    assert after["promptreg_partials"] == before["promptreg_partials"]


# -- schema migration 6 ---------------------------------------------------------------------------------


def _schema_at_5(db: str) -> None:
    with psycopg.connect(db, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY, description text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for migration in MIGRATIONS[:5]:
            conn.execute(migration.sql)
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                         (migration.version, migration.description))  # fmt: skip
        # What a registry of schema 5 wrote (its texts happen to hold references): two namespaces.
        conn.execute("INSERT INTO promptreg_namespaces VALUES ('shop', 0), ('other', 0)")
        versions: list[tuple[str, str, int, str, str | None]] = [
            ("shop", "safety", 1, "Be safe, {{user}}.", None),
            ("shop", "bot", 1, "{{> safety}} {{question}}", None),
            ("shop", "bot", 2, "No partial, {{question}}.", None),
            # A chat message whose content is written with JSON escapes: \u007b is "{".
            ("shop", "chat", 1, "", r'[{"role": "system", "content": "\u007b\u007b> safety@production}}"},'
                                    r' {"placeholder": "history"}]'),
            ("shop", "plain", 1, "{{> }} is no reference", None),
            ("other", "x", 1, "{{>y@3}} and {{> z}}", None),
        ]  # fmt: skip
        for namespace, name, number, text, messages in versions:
            conn.execute("INSERT INTO promptreg_prompts (namespace, name, created_at, latest) VALUES (%s, %s, now(), "
                         "%s) ON CONFLICT (namespace, name) DO UPDATE SET latest = EXCLUDED.latest",
                         (namespace, name, number))  # fmt: skip
            conn.execute("INSERT INTO promptreg_versions (namespace, name, version, prompt_text, metadata, sha256, "
                         "created_at, messages) VALUES (%s, %s, %s, %s, '{}', 'ab', now(), %s)",
                         (namespace, name, number, text, messages))  # fmt: skip
        for name in ("safety", "bot", "chat"):
            conn.execute("INSERT INTO promptreg_labels VALUES ('shop', %s, 'production', 1, NULL)", (name,))


def _roles(admin: psycopg.Connection[Any]) -> tuple[str, str]:
    """A reader and a writer with the grants docs/postgres.md gives them on a schema-5 database."""
    suffix = uuid.uuid4().hex[:8]
    reader, writer = f"reader_{suffix}", f"writer_{suffix}"
    for role in (reader, writer):
        admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"GRANT SELECT ON {SCHEMA_TABLE}, promptreg_namespaces, promptreg_prompts, promptreg_versions, "
                  f"promptreg_labels, promptreg_rollouts, promptreg_audit TO {reader}, {writer}")  # fmt: skip
    admin.execute(f"GRANT INSERT, UPDATE ON promptreg_namespaces, promptreg_prompts, promptreg_labels TO {writer}")
    admin.execute(f"GRANT INSERT, UPDATE, DELETE ON promptreg_rollouts TO {writer}")
    admin.execute(f"GRANT INSERT ON promptreg_versions, promptreg_audit TO {writer}")
    return reader, writer


def _as(db: str, role: str) -> str:
    return db.replace("postgresql://postgres@", f"postgresql://{role}@") + "?namespace=shop"


def test_migration_6_upgrades_a_database_at_version_5(fresh_db: str) -> None:
    _schema_at_5(fresh_db)
    admin = psycopg.connect(fresh_db, autocommit=True)
    reader, writer = _roles(admin)
    try:
        # Before the migration, a registry that may not migrate reads: the index from the versions.
        with PostgresPromptRegistry(_as(fresh_db, reader), auto_migrate=False) as old:
            assert old.get_version("bot", label="production", resolve=True).prompt_text == (
                "Be safe, {{user}}. {{question}}"
            )
            assert old.dependents("safety") == {"bot": {"production": 1}, "chat": {"production": 1}}
            assert old._dependents_index() == {"safety": {"bot", "chat"}}
            assert [r.dependent for r in old.check_dependents("safety", "production", None)] == ["bot", "chat"]
        with PromptClient(_as(fresh_db, reader), start_timeout=10) as client:  # a client keeps working
            assert client.status().state is ClientState.LIVE
            assert client.get("bot", version=2).prompt_text == "No partial, {{question}}."
        # ... and refuses to write, saying why; nothing is written.
        before = admin.execute("SELECT rev FROM promptreg_namespaces WHERE namespace = 'shop'").fetchone()
        with PostgresPromptRegistry(_as(fresh_db, "postgres"), auto_migrate=False) as old:
            for write in (lambda: old.add_version("bot", "three"), lambda: old.set_label("bot", "production", 2)):
                refusal = rf"version 5.*need version {LATEST_SCHEMA} \(migration 6: partials.*migrate`"
                with pytest.raises(RegistryUnavailableError, match=refusal):
                    write()
            assert admin.execute("SELECT rev FROM promptreg_namespaces WHERE namespace = 'shop'").fetchone() == before
            assert admin.execute("SELECT to_regclass('promptreg_partials')").fetchone() == (None,)
            result = old.migrate()  # the same registry writes once migrated
            assert result.changed and "applied schema migration(s) 6 (partials" in result.message
            assert not old.migrate().changed
            old.add_version("bot", "{{> safety}} three {{question}}")
        applied = [r[0] for r in admin.execute(f"SELECT version FROM {SCHEMA_TABLE} ORDER BY version")]
        assert applied == list(range(1, LATEST_SCHEMA + 1)) and applied[:6] == [1, 2, 3, 4, 5, 6]
        # Backfilled from every namespace's versions by the rule the writes use.
        assert index_rows(admin) == {
            ("shop", "safety", "bot"), ("shop", "safety", "chat"), ("other", "y", "x"), ("other", "z", "x"),
        }  # fmt: skip
        # The roles made before the migration got the grants they have on promptreg_versions.
        privileges = {
            (role, privilege): admin.execute("SELECT has_table_privilege(%s, 'promptreg_partials', %s)",
                                             (role, privilege)).fetchone() == (True,)
            for role in (reader, writer) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
        }  # fmt: skip
        assert privileges == {
            (reader, "SELECT"): True, (reader, "INSERT"): False, (reader, "UPDATE"): False, (reader, "DELETE"): False,
            (writer, "SELECT"): True, (writer, "INSERT"): True, (writer, "UPDATE"): False, (writer, "DELETE"): False,
        }  # fmt: skip
        # The writer adds to the index and its moves read it.
        with PostgresPromptRegistry(_as(fresh_db, writer), auto_migrate=False) as reg:
            prompt(reg, "tone", "Kindly.", labels={"production": 1})
            reg.add_version("bot", "{{> tone}} {{> safety}} {{question}}")
            reg.set_label("bot", "production", 4)
            with pytest.raises(PartialNotFoundError):
                reg.delete_label("tone", "production")
            reg.add_version("safety", "Be very safe, {{user}}.")
            reg.set_label("safety", "production", 2)
        assert ("shop", "tone", "bot") in index_rows(admin)
        with PostgresPromptRegistry(_as(fresh_db, reader), auto_migrate=False) as reg:
            assert reg.dependents("tone") == {"bot": {"production": 4}}
            assert reg.get_version("chat", label="production", resolve=True).partials == {"safety": 2}
            with pytest.raises(RegistryAuthError):
                reg.add_version("bot", "forged")
        with (
            psycopg.connect(_as(fresh_db, reader).split("?")[0], autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("INSERT INTO promptreg_partials VALUES ('shop', 'a', 'b')")
    finally:
        for role in (reader, writer):
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
        admin.close()


# -- concurrent writers ---------------------------------------------------------------------------------

SAFETY = ("Be safe, {{user}}.", "Be safe, {{user}}, in {{language}}.")  # v2 needs a new variable
BOT = ("{{> safety}} {{question}}", "{{user}} {{question}}")  # v1 follows safety, v2 has its interface


def _seed(reg: PostgresPromptRegistry) -> None:
    prompt(reg, "safety", *SAFETY, labels={"production": 1, "staging": 1})
    prompt(reg, "bot", *BOT, labels={"production": 2, "staging": 2}, mode="backward")


@pytest.mark.parametrize("first", ["partial", "dependent"])
def test_a_write_racing_another_is_checked_against_it(url: str, first: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each move alone is accepted; together they would serve bot a variable its callers never pass.
    The first write is held between its checks and its commit: the second waits for it (the
    namespace's revision row), then its checks see it and refuse."""
    a, b = PostgresPromptRegistry(url), PostgresPromptRegistry(url)
    _seed(a)
    moves: dict[str, Callable[[PostgresPromptRegistry], AuditEvent]] = {
        "partial": lambda reg: reg.set_label("safety", "production", 2),
        "dependent": lambda reg: reg.set_label("bot", "production", 1),
    }
    second = "dependent" if first == "partial" else "partial"
    checked = threading.Event()
    check = a._check_graph

    def held(*args: Any) -> bool:
        forced = check(*args)
        checked.set()
        time.sleep(0.5)
        return forced

    monkeypatch.setattr(a, "_check_graph", held)
    thread = threading.Thread(target=moves[first], args=(a,))
    thread.start()
    try:
        assert checked.wait(10)
        started = time.monotonic()
        with pytest.raises(IncompatibleVersionError) as caught:
            moves[second](b)
        assert time.monotonic() - started > 0.3  # it waited for the first write's commit
    finally:
        thread.join(10)
    assert isinstance(caught.value, IncompatibleDependentError) == (second == "partial")
    assert b.get_version("bot", label="production", resolve=True).variables == {"user", "question"}
    labels = {name: dict(b.get_prompt(name).labels) for name in ("safety", "bot")}  # type: ignore[union-attr]
    assert (labels["safety"]["production"], labels["bot"]["production"]) == ((2, 2) if first == "partial" else (1, 1))
    a.close()
    b.close()


class _Replay:
    """The graph of ``safety`` and ``bot`` at one point of their history (for the invariant)."""

    def __init__(self, texts: dict[str, dict[int, Source]], labels: dict[str, dict[str, int]]) -> None:
        self.texts, self.current = texts, labels

    def labels(self, name: str) -> Mapping[str, int] | None:
        return {**self.current[name], "latest": 2}

    def version(self, name: str, number: int) -> Source | None:
        return self.texts[name].get(number)

    def has_rollout(self, name: str, label: str) -> bool:
        return False


def test_concurrent_moves_of_a_partial_and_a_dependent_never_break_a_composition(url: str) -> None:
    """Two writers on two connections: one moves the partial (and deletes and restores its staging
    label), the other moves the dependent. Every refusal is typed, and at every revision of the
    history the dependent composes at every label with the interface its callers had."""
    seeder = PostgresPromptRegistry(url)
    _seed(seeder)
    start = seeder.revision()
    outcomes: dict[str, list[str]] = {"partial": [], "dependent": []}
    unexpected: list[BaseException] = []
    barrier = threading.Barrier(2)

    def run(role: str, seed: int) -> None:
        rng = random.Random(seed)
        reg = PostgresPromptRegistry(url)
        barrier.wait()
        try:
            for _ in range(80):
                try:
                    if role == "partial" and rng.random() < 0.5:
                        reg.set_label("safety", "production", rng.choice((1, 2)))
                    elif role == "partial" and rng.random() < 0.5:
                        reg.delete_label("safety", "staging")
                    elif role == "partial":
                        reg.set_label("safety", "staging", 1)
                    else:
                        reg.set_label("bot", rng.choice(("production", "staging")), rng.choice((1, 2)))
                    outcomes[role].append("ok")
                except (IncompatibleVersionError, PartialNotFoundError, LabelNotFoundError) as exc:
                    outcomes[role].append(type(exc).__name__)
        except BaseException as exc:  # reported below
            unexpected.append(exc)
        finally:
            reg.close()

    threads = [threading.Thread(target=run, args=(role, n)) for n, role in enumerate(outcomes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not unexpected, unexpected
    assert "ok" in outcomes["partial"] and "ok" in outcomes["dependent"]
    refusals = {kind for found in outcomes.values() for kind in found} - {"ok"}
    assert refusals & {"IncompatibleDependentError", "IncompatibleVersionError", "PartialNotFoundError"}, outcomes
    # Replay both prompts' label moves in revision order: every state the registry went through.
    texts: dict[str, dict[int, Source]] = {
        name: {v.version: v for v in seeder.get_prompt(name).versions}  # type: ignore[union-attr]
        for name in ("safety", "bot")
    }
    labels = {"safety": {"production": 1, "staging": 1}, "bot": {"production": 2, "staging": 2}}
    events = sorted((e for name in ("safety", "bot") for e in seeder.history(name) if e.rev > start),
                    key=lambda e: e.rev)  # fmt: skip
    assert [e.rev for e in events] == list(range(start + 1, seeder.revision() + 1))
    assert not any(e.forced for e in events)
    for event in events:
        assert event.label is not None
        if event.version is None:
            del labels[event.prompt][event.label]
        else:
            labels[event.prompt][event.label] = event.version
        graph = _Replay(texts, labels)
        for label, number in labels["bot"].items():
            composed = compose(graph, "bot", label, texts["bot"][number])  # raises if it does not compose
            assert composed.interface.variables == {"user", "question"}, (event, labels)
    # The public reads agree: every label of the dependent resolves, with that interface.
    for label in labels["bot"]:
        assert seeder.get_version("bot", label=label, resolve=True).variables == {"user", "question"}
    seeder.close()


# -- round trips ------------------------------------------------------------------------------------------


class _Counting:
    """A connection that counts the statements run through it."""

    def __init__(self, conn: Any) -> None:
        self._conn, self.statements = conn, 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.statements += 1
        return self._conn.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_a_partial_with_a_thousand_dependents_is_a_few_round_trips(
    url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = PostgresPromptRegistry(url)
    prompt(reg, "safety", "Be safe, {{user}}.", "Be safe, {{user}}!", labels={"production": 1})
    with owner(reg) as conn, conn.transaction():  # 1,000 dependents, written as the registry writes them
        series = "FROM generate_series(1, 1000) i"
        conn.execute("INSERT INTO promptreg_prompts (namespace, name, created_at, latest, compatibility) "
                     f"SELECT %s, 'bot-' || i, now(), 1, 'full' {series}", (namespace,))  # fmt: skip
        conn.execute("INSERT INTO promptreg_versions (namespace, name, version, prompt_text, metadata, sha256, "
                     f"created_at) SELECT %s, 'bot-' || i, 1, '{{{{> safety}}}} {{{{question}}}}', '{{}}', 'ab', "
                     f"now() {series}", (namespace,))  # fmt: skip
        conn.execute(f"INSERT INTO promptreg_labels SELECT %s, 'bot-' || i, 'production', 1, NULL {series}",
                     (namespace,))  # fmt: skip
        conn.execute(f"INSERT INTO promptreg_partials SELECT %s, 'safety', 'bot-' || i {series}", (namespace,))
    reg.close()
    counting: list[_Counting] = []
    fresh = PostgresPromptRegistry(url)
    real_connect = fresh.connect

    def connect() -> _Counting:
        counting.append(_Counting(real_connect()))
        return counting[-1]

    monkeypatch.setattr(fresh, "connect", connect)
    fresh.revision()  # connected, schema checked
    calls: list[tuple[str, Callable[[], object], int]] = [
        ("set_label", lambda: fresh.set_label("safety", "production", 2), 25),
        ("dependents", lambda: fresh.dependents("safety"), 10),
        ("check_dependents", lambda: fresh.check_dependents("safety", "production", 1), 10),
        ("resolve", lambda: fresh.get_version("bot-7", label="production", resolve=True), 10),
    ]
    for what, call, most in calls:
        before, started = counting[-1].statements, time.monotonic()
        result = call()
        statements, elapsed = counting[-1].statements - before, time.monotonic() - started
        assert statements <= most, (what, statements)
        assert elapsed < 2.0, (what, elapsed)
        if what == "dependents":
            assert isinstance(result, dict) and len(result) == 1000
            assert result["bot-1"] == {"production": 1}
    fresh.add_version("safety", "Be safe, {{user}}, {{name}}.")
    with pytest.raises(IncompatibleDependentError):  # each is checked (full: no new variable)
        fresh.set_label("safety", "production", 3)
    assert len(counting) == 1
    fresh.close()
