"""PostgresPromptRegistry beyond the contract suite: schema, transactions, notifications, concurrency.

Every test runs against the real PostgreSQL of ``tests/postgres_server.py`` (a fresh namespace, or a
fresh database where the schema itself is under test).
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import fakeredis
import psycopg
import pytest
from click.testing import CliRunner

from promptreg.registry import (
    ConfigurationError,
    InvalidInputError,
    JsonFilePromptRegistry,
    LabelConflictError,
    PostgresPromptRegistry,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistry,
    PromptRegistryFactory,
    RedisPromptRegistry,
    RegistryUnavailableError,
    RollbackUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.backup import apply_import, export_registry, plan_import
from promptreg.registry.cli import cli
from promptreg.registry.postgres import conn as postgres_conn
from promptreg.registry.postgres.schema import LATEST_SCHEMA, channel_for, decode_payload
from tests.postgres_server import PostgresServer, postgres_raw

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
    conn = psycopg.connect(reg._conninfo, autocommit=True)
    conn.execute(f'LISTEN "{reg.channel}"')
    return conn


def received(conn: psycopg.Connection[Any], timeout: float = 0.3) -> list[dict[str, Any]]:
    return [json.loads(n.payload) for n in conn.notifies(timeout=timeout)]


# -- schema and migrations -------------------------------------------------------------------------


def test_schema_is_created_on_first_use_and_migrate_is_idempotent(fresh_db: str) -> None:
    with PostgresPromptRegistry(fresh_db) as reg:
        assert reg.list_prompts() == []  # first use created the schema
        result = reg.migrate()
        assert not result.changed and "up to date" in result.message
    with psycopg.connect(fresh_db) as conn:
        rows = conn.execute("SELECT version FROM promptreg_schema_version ORDER BY version").fetchall()
    assert [r[0] for r in rows] == list(range(1, LATEST_SCHEMA + 1))


def test_promptreg_migrate_runs_the_migrations(fresh_db: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--json"], env={"PROMPTREG_URL": fresh_db}, catch_exceptions=False)
    assert first.exit_code == 0, first.output
    assert json.loads(first.output)["changed"] is True
    again = runner.invoke(cli, ["migrate"], env={"PROMPTREG_URL": fresh_db}, catch_exceptions=False)
    assert again.exit_code == 0 and "up to date" in again.output


def _first_use(url: str) -> None:
    with PostgresPromptRegistry(url, namespace=f"n{uuid.uuid4().hex[:6]}") as reg:
        reg.create_prompt("p")


def test_concurrent_first_use_applies_each_migration_once(fresh_db: str) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_first_use, args=(fresh_db,)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM promptreg_schema_version").fetchone() == (LATEST_SCHEMA,)


def test_without_auto_migrate_a_missing_schema_says_run_migrate(fresh_db: str) -> None:
    with pytest.raises(RegistryUnavailableError, match="promptreg migrate"):
        PostgresPromptRegistry(fresh_db, auto_migrate=False).list_prompts()


def test_versions_are_immutable_in_the_database(reg: PostgresPromptRegistry) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "text")
    with psycopg.connect(reg._conninfo, autocommit=True) as conn:
        for statement in (
            "UPDATE promptreg_versions SET prompt_text = 'forged' WHERE namespace = %s",
            "DELETE FROM promptreg_versions WHERE namespace = %s",
        ):
            with pytest.raises(psycopg.errors.RestrictViolation, match="immutable"):
                conn.execute(statement, (reg.namespace,))
        with pytest.raises(psycopg.errors.RestrictViolation):
            conn.execute("TRUNCATE promptreg_versions CASCADE")
    assert reg.get_version("p", version=1).prompt_text == "text"


def test_drop_namespace_removes_only_its_own_rows(reg: PostgresPromptRegistry, url: str) -> None:
    other = PostgresPromptRegistry(url.partition("?")[0], namespace="other" + uuid.uuid4().hex[:6])
    for r in (reg, other):
        r.create_prompt("p")
        r.add_version("p", "x")
        r.set_label("p", "production", 1)
    assert reg.drop_namespace() == 7  # label, version, prompt, 3 audit rows, the namespace row
    assert reg.list_prompts() == [] and other.list_prompts() == ["p"]
    other.drop_namespace()
    other.close()


# -- one transaction per write: notifications ------------------------------------------------------


def test_each_write_notifies_the_change_message_fields(reg: PostgresPromptRegistry) -> None:
    conn = listener(reg)
    reg.create_prompt("p", author="alice")
    reg.add_version("p", "one", author="bob")
    reg.add_version("p", "two")
    reg.set_label("p", "production", 1)
    reg.set_label("p", "production", 2, expected_version=1)
    reg.rollback("p", "production")
    reg.delete_label("p", "production")
    messages = received(conn)
    conn.close()
    assert [(m["rev"], m["op"], m["label"], m["version"], m["prev"]) for m in messages] == [
        (1, "create_prompt", None, None, None),
        (2, "add_version", None, 1, None),
        (3, "add_version", None, 2, None),
        (4, "set_label", "production", 1, None),
        (5, "set_label", "production", 2, 1),
        (6, "rollback", "production", 1, 2),
        (7, "delete_label", "production", None, 1),
    ]
    assert messages[0]["author"] == "alice" and messages[1]["author"] == "bob"
    assert set(messages[0]) == {"rev", "op", "prompt", "label", "version", "prev", "author", "at"}
    assert decode_payload(json.dumps(messages[4])).previous_version == 1


def test_refused_writes_change_nothing_and_notify_nothing(reg: PostgresPromptRegistry, url: str) -> None:
    reg.create_prompt("p")
    reg.add_version("p", "one")
    reg.set_label("p", "production", 1)
    before = postgres_raw(url.partition("?")[0], reg.namespace)
    conn = listener(reg)
    refusals: list[tuple[type[Exception], Any]] = [
        (PromptExistsError, lambda: reg.create_prompt("p")),
        (PromptNotFoundError, lambda: reg.add_version("nope", "x")),
        (VersionNotFoundError, lambda: reg.set_label("p", "production", 9)),
        (LabelConflictError, lambda: reg.set_label("p", "production", 1, expected_version=0)),
        (LabelConflictError, lambda: reg.delete_label("p", "production", expected_version=2)),
        (RollbackUnavailableError, lambda: reg.rollback("p", "production")),
        (InvalidInputError, lambda: reg.add_version("p", "nul \x00 byte")),
    ]
    for error, call in refusals:
        with pytest.raises(error):
            call()
    assert received(conn) == []
    assert postgres_raw(url.partition("?")[0], reg.namespace) == before
    reg.add_version("p", "two")  # the next write gets the next revision: nothing was used up
    assert [m["rev"] for m in received(conn)] == [4]
    conn.close()


def test_a_huge_author_is_left_out_of_the_payload_not_the_audit(reg: PostgresPromptRegistry) -> None:
    conn = listener(reg)
    author = "\u00e9" * 4096  # 8 KiB of UTF-8: over NOTIFY's limit
    reg.create_prompt("p", author=author)
    (message,) = received(conn)
    conn.close()
    assert message["author"] is None and message["op"] == "create_prompt"
    assert reg.history("p")[0].author == author


def test_long_namespaces_get_a_short_channel() -> None:
    assert channel_for("ns") == "promptreg.ns"
    long = channel_for("n" * 64)
    assert len(long) <= 63 and long != channel_for("m" * 64)


# -- concurrency -----------------------------------------------------------------------------------


def _add_versions(url: str, count: int) -> None:
    with PostgresPromptRegistry(url) as reg:
        for i in range(count):
            reg.add_version("p", f"text {i}")


def _move_label(url: str, count: int, queue: Any) -> None:
    wins = 0
    with PostgresPromptRegistry(url) as reg:
        for _ in range(count):
            current = reg.get_version("p", label="production").version
            try:
                reg.set_label("p", "production", current % 3 + 1, expected_version=current)
                wins += 1
            except LabelConflictError:
                pass
    queue.put(wins)


def test_four_processes_adding_versions_get_contiguous_numbers(reg: PostgresPromptRegistry, url: str) -> None:
    reg.create_prompt("p")
    conn = listener(reg)
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add_versions, args=(url, 25)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0] * 4
    prompt = reg.get_prompt("p")
    assert prompt is not None
    assert [v.version for v in prompt.versions] == list(range(1, 101))  # none lost, no gap
    assert sorted(v.prompt_text for v in prompt.versions) == sorted(f"text {i}" for i in range(25) for _ in range(4))
    revs = [m["rev"] for m in received(conn, 1.0)]
    conn.close()
    assert revs == list(range(2, 102))  # notified in revision order, one per write


def test_compare_and_set_under_four_processes_loses_no_write(reg: PostgresPromptRegistry, url: str) -> None:
    reg.create_prompt("p")
    for text in ("a", "b", "c"):
        reg.add_version("p", text)
    reg.set_label("p", "production", 1)
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_move_label, args=(url, 20, queue)) for _ in range(4)]
    for p in procs:
        p.start()
    wins = sum(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(10)
    moves = [e for e in reg.history("p") if e.action == "set_label"]
    assert len(moves) == wins + 1  # every acknowledged CAS is in the history, and nothing else
    for before, after in itertools.pairwise(moves):
        assert after.previous_version == before.version  # each move started where the last one ended
        assert after.rev > before.rev


# -- URLs, factory, errors -------------------------------------------------------------------------


def test_factory_and_namespace_from_url_or_environment(postgres_server: PostgresServer) -> None:
    reg = PromptRegistryFactory.from_url(postgres_server.url(namespace="fromurl"))
    assert isinstance(reg, PostgresPromptRegistry) and reg.namespace == "fromurl"
    env = {"PROMPTREG_URL": postgres_server.url().replace("postgresql://", "postgres://"), "PROMPTREG_NAMESPACE": "env"}
    reg2 = PromptRegistryFactory.create_from_config(env)
    assert isinstance(reg2, PostgresPromptRegistry) and reg2.namespace == "env"
    with pytest.raises(InvalidInputError):
        PostgresPromptRegistry(postgres_server.url(namespace="bad:ns"))


def test_unreachable_server_is_a_typed_error_without_the_password() -> None:
    from promptreg.registry.cli.local_server import free_port

    reg = PostgresPromptRegistry(f"postgresql://u:s3cret-pw@127.0.0.1:{free_port()}/x", connect_timeout=2)
    with pytest.raises(RegistryUnavailableError) as caught:
        reg.list_prompts()
    assert "s3cret-pw" not in str(caught.value) and "s3cret-pw" not in repr(reg)


def test_missing_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_conn, "_psycopg", None)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` now fails, as without the extra
    with pytest.raises(ConfigurationError, match=r"psycopg\[binary\].*the \[postgres\] extra"):
        PostgresPromptRegistry("postgresql://localhost/x")


def test_psycopg_is_imported_only_when_postgresql_is_used() -> None:
    # A Redis-only service does not pay for psycopg (about 9 MB).
    code = "import sys, registry, client; print('psycopg' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "False"


# -- export / import between backends --------------------------------------------------------------


def _populate(reg: PromptRegistry) -> None:
    reg.create_prompt("critic", description="reviews", author="alice")
    reg.add_version("critic", "Review {{movie}}", author="alice", metadata={"model": "gpt", "t": 0.25,
                    "nested": {"k": [1, "two", None, True]}, "unicode": "h\u00e9 \u2603"}, message="first")  # fmt: skip
    reg.add_version("critic", "Review {{movie}} briefly", metadata={"big": 2**62})
    reg.set_label("critic", "production", 1)
    reg.set_label("critic", "staging", 2)
    reg.create_prompt("empty")


def _content(reg: PromptRegistry) -> dict[str, Any]:
    out = {}
    for name in reg.list_prompts():
        prompt = reg.get_prompt(name)
        assert prompt is not None
        out[name] = (
            prompt.description,
            prompt.labels,
            [(v.version, v.prompt_text, v.author, v.message, v.metadata) for v in prompt.versions],
        )
    return out


def _copy(source: PromptRegistry, target: PromptRegistry) -> None:
    data = json.loads(json.dumps(export_registry(source)))
    apply_import(target, plan_import(target, data))


def test_export_import_round_trip_redis_postgres_file(url: str, tmp_path: Any, namespace: str) -> None:
    redis_reg = RedisPromptRegistry(fakeredis.FakeRedis(), namespace=namespace)
    _populate(redis_reg)
    expected = _content(redis_reg)
    pg = PostgresPromptRegistry(url)
    _copy(redis_reg, pg)
    assert _content(pg) == expected
    file_reg = JsonFilePromptRegistry(tmp_path / "r.json")
    _copy(pg, file_reg)
    assert _content(file_reg) == expected
    pg2 = PostgresPromptRegistry(url.partition("?")[0], namespace=namespace + "b")
    _copy(file_reg, pg2)
    back = RedisPromptRegistry(fakeredis.FakeRedis(), namespace=namespace + "c")
    _copy(pg2, back)
    assert _content(pg2) == expected and _content(back) == expected
    assert plan_import(pg, export_registry(file_reg)).steps == ()  # importing again changes nothing
    pg.close()
    pg2.close()
