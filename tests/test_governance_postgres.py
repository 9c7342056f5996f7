"""Protected labels on PostgreSQL, enforced by the database against roles (beyond the contract of
tests/test_governance.py): the four roles made by ``role_sql`` (the block docs/postgres.md shows),
every route a writer could take around a protected label refused with nothing stored changed,
identities as author string and login role, the life cycle of a request across roles, a client on
the reader role following it, and migration 7 on a database at version 6 with roles made before.

Real PostgreSQL only (``tests/postgres_server.py``); each test makes its own roles and namespace.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import (
    ApprovalError,
    LabelConflictError,
    PostgresPromptRegistry,
    ProtectedLabelError,
    RegistryAuthError,
    RegistryUnavailableError,
    RequestState,
    RequestStateError,
)
from promptreg.registry.cli.local_server import wait_until
from promptreg.registry.postgres.governance_schema import APPLY_FUNCTION, DECIDE_FUNCTION, REQUEST_FUNCTION
from promptreg.registry.postgres.roles import TABLES, role_names, role_sql
from promptreg.registry.postgres.schema import LATEST_SCHEMA, MIGRATIONS, SCHEMA_TABLE
from promptreg.registry.postgres.webhook_schema import WEBHOOK_TABLES
from tests.postgres_server import PostgresServer, postgres_raw

pytestmark = pytest.mark.postgres

DOCS = Path(__file__).resolve().parent.parent / "docs" / "postgres.md"
GOVERNANCE = ("promptreg_protections", "promptreg_requests", "promptreg_approvals")
FUNCTIONS = (
    REQUEST_FUNCTION, DECIDE_FUNCTION, APPLY_FUNCTION, "promptreg_apply_move(promptreg_requests, text, timestamptz)",
    "promptreg_decidable(text, text, text, timestamptz, text[], boolean)",
)  # fmt: skip


@dataclass
class Roles:
    """A seeded namespace and the four roles of ``role_sql``: a registry per role, and the owner's."""

    server: PostgresServer
    namespace: str
    names: dict[str, str]
    owner: PostgresPromptRegistry
    regs: dict[str, PostgresPromptRegistry] = field(default_factory=dict)

    def url(self, role: str, *, namespace: bool = True) -> str:
        query = f"?namespace={self.namespace}" if namespace else ""
        return f"postgresql://{self.names[role]}@127.0.0.1:{self.server.port}/postgres{query}"

    def reg(self, role: str) -> PostgresPromptRegistry:
        if role not in self.regs:
            self.regs[role] = PostgresPromptRegistry(self.url(role), auto_migrate=False)
        return self.regs[role]

    def connect(self, role: str | None = None) -> psycopg.Connection[Any]:
        url = self.server.url() if role is None else self.url(role, namespace=False)
        return psycopg.connect(url, autocommit=True)

    def stored(self) -> dict[str, list[tuple[object, ...]]]:
        """Every row of the namespace in every table, the governance tables included."""
        rows = postgres_raw(self.server.url(), self.namespace)
        with self.connect() as conn:
            for table in GOVERNANCE:
                found = conn.execute(f"SELECT * FROM {table} WHERE namespace = %s", (self.namespace,)).fetchall()
                rows[table] = sorted(found, key=repr)
        return rows

    def label(self, label: str = "production") -> int | None:
        prompt = self.owner.get_prompt("p")
        assert prompt is not None
        return prompt.labels.get(label)


@pytest.fixture
def roles(postgres_server: PostgresServer, namespace: str) -> Iterator[Roles]:
    """Prompt ``p`` (versions 1-3, compatibility none): ``production`` -> 1 protected (1 approval),
    ``canary`` protected and unset, ``staging`` -> 2 unprotected; the roles made by ``role_sql``."""
    owner = PostgresPromptRegistry(postgres_server.url(namespace=namespace))
    owner.create_prompt("p")
    for text in ("one", "two", "three"):
        owner.add_version("p", text)
    owner.set_label("p", "production", 1)
    owner.set_label("p", "staging", 2)
    owner.protect_label("p", "production", author="root")
    owner.protect_label("p", "canary", author="root")
    prefix = "g" + namespace
    scene = Roles(postgres_server, namespace, role_names(prefix), owner)
    with scene.connect() as admin:
        admin.execute(role_sql("postgres", prefix).encode())
        try:
            yield scene
        finally:
            for reg in (*scene.regs.values(), owner):
                reg.close()
            for name in scene.names.values():
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (name,))
            for name in scene.names.values():
                admin.execute(f"DROP OWNED BY {name}")
                admin.execute(f"DROP ROLE {name}")


def sql_refused(scene: Roles, role: str, *statements: str, params: dict[str, Any]) -> None:
    """Each statement, run alone as ``role``, is refused as a permission (SQLSTATE 42501)."""
    with scene.connect(role) as conn:
        for statement in statements:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement.encode(), params if "%(" in statement else None)


def function_refuses(scene: Roles, role: str, sqlstate: str, request_id: str) -> psycopg.Error:
    """``role`` approving ``request_id`` by calling the function itself, as ``bo``: refused with ``sqlstate``."""
    with scene.connect(role) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute("SELECT promptreg_decide_request(%s, %s, 'bo', now(), true, true, NULL)",
                     (scene.namespace, request_id))  # fmt: skip
    assert caught.value.sqlstate == sqlstate, caught.value
    return caught.value


# -- the roles -------------------------------------------------------------------------------------


def test_the_docs_show_role_sql_and_each_role_has_exactly_its_grants(roles: Roles) -> None:
    section = DOCS.read_text("utf-8").split("\n## Roles\n", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```sql\n(.*?)```", section, re.S) == [role_sql()]
    writes = {("promptreg_namespaces", p) for p in ("INSERT", "UPDATE")} | {
        ("promptreg_prompts", "INSERT"), ("promptreg_prompts", "UPDATE"), ("promptreg_labels", "INSERT"),
        ("promptreg_labels", "UPDATE"), ("promptreg_rollouts", "INSERT"), ("promptreg_rollouts", "UPDATE"),
        ("promptreg_rollouts", "DELETE"), ("promptreg_versions", "INSERT"), ("promptreg_audit", "INSERT"),
        ("promptreg_partials", "INSERT"),
    }  # fmt: skip
    reads = {(table, "SELECT") for table in TABLES}
    writes |= {(table, p) for table in WEBHOOK_TABLES for p in ("SELECT", "INSERT", "UPDATE", "DELETE")}
    protects = {("promptreg_protections", p) for p in ("INSERT", "UPDATE", "DELETE")}
    expected = {
        "reader": (reads, set()),
        "writer": (reads | writes, {REQUEST_FUNCTION}),
        "approver": (reads | writes, {REQUEST_FUNCTION, DECIDE_FUNCTION, APPLY_FUNCTION}),
        "admin": (reads | writes | protects, {REQUEST_FUNCTION, DECIDE_FUNCTION, APPLY_FUNCTION}),
    }
    with roles.connect() as conn:
        for role, (tables, functions) in expected.items():
            name = roles.names[role]
            held = {
                (table, privilege)
                for table in (*TABLES, *WEBHOOK_TABLES)
                for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
                if conn.execute("SELECT has_table_privilege(%s, %s, %s)", (name, table, privilege)).fetchone()
                == (True,)
            }
            assert held == tables, role
            executes = {f for f in FUNCTIONS if conn.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')",
                                                             (name, f)).fetchone() == (True,)}  # fmt: skip
            assert executes == functions, role
        # Run again (after a later migration): nothing fails, nothing changes.
        conn.execute(role_sql("postgres", "g" + roles.namespace).encode())


# -- a writer: every route refused ----------------------------------------------------------------


def test_a_writer_cannot_move_a_protected_label_by_any_route(roles: Roles) -> None:
    writer, ns = roles.reg("writer"), roles.namespace
    pending = writer.request_label_move("p", "production", 3, author="ana", reason="r")  # requesting is allowed
    ready = writer.request_label_move("p", "production", 2, author="ana", reason="r")
    roles.reg("approver").approve(ready.id, author="bo", apply=False)
    rev, before = roles.owner.revision(), roles.stored()

    api: list[tuple[type[Exception], Callable[[], object]]] = [
        (ProtectedLabelError, lambda: writer.set_label("p", "production", 2)),
        (ProtectedLabelError, lambda: writer.set_label("p", "production", 2, force=True)),
        (ProtectedLabelError, lambda: writer.set_label("p", "canary", 1)),
        (ProtectedLabelError, lambda: writer.rollback("p", "production")),
        (ProtectedLabelError, lambda: writer.delete_label("p", "production")),
        (ProtectedLabelError, lambda: writer.start_rollout("p", "production", 2, 10)),
        (RegistryAuthError, lambda: writer.protect_label("p", "staging")),
        (RegistryAuthError, lambda: writer.protect_label("p", "production", approvals=2)),
        (RegistryAuthError, lambda: writer.unprotect_label("p", "production")),
        (RegistryAuthError, lambda: writer.approve(pending.id, author="bo")),
        (RegistryAuthError, lambda: writer.approve(pending.id, author="bo", apply=False)),
        (RegistryAuthError, lambda: writer.reject(pending.id, author="bo")),
        (RegistryAuthError, lambda: writer.apply_request(ready.id, author="bo")),
    ]
    for error, call in api:
        with pytest.raises(error):
            call()

    key = "namespace = %(ns)s AND name = 'p' AND label = 'production'"
    sql_refused(
        roles, "writer",
        f"UPDATE promptreg_labels SET version = 2 WHERE {key}",
        f"UPDATE promptreg_labels SET previous = 3 WHERE {key}",  # what rollback returns to
        f"DELETE FROM promptreg_labels WHERE {key}",
        "INSERT INTO promptreg_labels VALUES (%(ns)s, 'p', 'canary', 2, NULL)",  # protected, not set yet
        "UPDATE promptreg_labels SET label = 'canary' WHERE namespace = %(ns)s AND label = 'staging'",  # renamed in
        "INSERT INTO promptreg_labels VALUES (%(ns)s, 'p', 'production', 3, 1) ON CONFLICT (namespace, name, label) "
        "DO UPDATE SET version = EXCLUDED.version",
        "INSERT INTO promptreg_rollouts VALUES (%(ns)s, 'p', 'production', 2, 5000, now(), 'w')",
        # An audit row a client would apply, with or without a request id that was not applied.
        "INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version, previous_version) "
        "VALUES (%(ns)s, %(rev)s, now(), 'set_label', 'p', 'production', 3, 1)",
        "INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version, previous_version, request) "
        "VALUES (%(ns)s, %(rev)s, now(), 'set_label', 'p', 'production', 3, 1, %(pending)s)",
        "INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version) "
        "VALUES (%(ns)s, %(rev)s, now(), 'start_rollout', 'p', 'production', 3)",
        "INSERT INTO promptreg_protections VALUES (%(ns)s, 'p', 'staging', 1)",
        "UPDATE promptreg_protections SET label = 'nothing' WHERE namespace = %(ns)s",
        "DELETE FROM promptreg_protections WHERE namespace = %(ns)s",
        "INSERT INTO promptreg_requests (namespace, id, name, label, version, author, login, reason, created_at, "
        "expires_at, state, approvals_required) VALUES (%(ns)s, '00000000000000aa', 'p', 'production', 3, 'x', 'x', "
        "'x', now(), now() + interval '1 hour', 'approved', 1)",
        "UPDATE promptreg_requests SET state = 'approved' WHERE namespace = %(ns)s AND id = %(pending)s",
        "UPDATE promptreg_requests SET approvals_required = 1, author = 'nobody' WHERE namespace = %(ns)s",
        "DELETE FROM promptreg_requests WHERE namespace = %(ns)s",
        "INSERT INTO promptreg_approvals VALUES (%(ns)s, %(pending)s, 'bo', 'bo', now())",
        "DELETE FROM promptreg_approvals WHERE namespace = %(ns)s",
        "SELECT promptreg_decide_request(%(ns)s, %(pending)s, 'bo', now(), true, true, NULL)",
        "SELECT promptreg_decide_request(%(ns)s, %(pending)s, 'bo', now(), false, false, NULL)",
        "SELECT promptreg_apply_request(%(ns)s, %(ready)s, 'bo', now())",
        "SELECT promptreg_apply_move(r, 'bo', now()) FROM promptreg_requests r WHERE namespace = %(ns)s",
        "TRUNCATE promptreg_labels", "TRUNCATE promptreg_protections",
        "ALTER TABLE promptreg_labels DISABLE TRIGGER USER",
        "DROP TRIGGER promptreg_labels_protected ON promptreg_labels",
        "SET session_replication_role = replica",  # would skip the triggers
        f"SET ROLE {roles.names['approver']}",
        params={"ns": ns, "rev": rev + 1, "pending": pending.id, "ready": ready.id},
    )  # fmt: skip
    # A temporary table named like the protections cannot stand in for them: the trigger's search_path.
    with roles.connect("writer") as conn, conn.transaction():
        conn.execute("CREATE TEMP TABLE promptreg_protections (namespace text, name text, label text, approvals int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"UPDATE promptreg_labels SET version = 2 WHERE {key}".encode(), {"ns": ns})
    # Even with DELETE granted (drop_namespace's), the row of a protected label stays: the trigger.
    with roles.connect() as owner:
        owner.execute(f"GRANT DELETE ON promptreg_labels TO {roles.names['writer']}")
    with roles.connect("writer") as conn, pytest.raises(psycopg.errors.InsufficientPrivilege, match="is protected"):
        conn.execute(f"DELETE FROM promptreg_labels WHERE {key}".encode(), {"ns": ns})
    assert roles.stored() == before and roles.owner.revision() == rev
    assert roles.label() == 1 and roles.label("canary") is None
    # Unprotected labels move as before.
    writer.set_label("p", "staging", 3)
    assert roles.label("staging") == 3


# -- identities ------------------------------------------------------------------------------------


def test_an_approver_cannot_approve_its_own_request_by_author_or_login(roles: Roles) -> None:
    approver, admin = roles.reg("approver"), roles.reg("admin")
    mine = approver.request_label_move("p", "production", 2, author="ana", reason="r")
    before = roles.stored()
    calls: list[Callable[[], object]] = [
        lambda: approver.approve(mine.id, author="bo"),  # another author, the same login role
        lambda: approver.reject(mine.id, author="bo"),
        lambda: admin.approve(mine.id, author="ana"),  # another login role, the same author
    ]
    for call in calls:
        with pytest.raises(ApprovalError):
            call()
    function_refuses(roles, "approver", "PRA01", mine.id)  # around the API
    assert roles.stored() == before
    done = admin.approve(mine.id, author="bo")
    assert done.state is RequestState.APPLIED and roles.label() == 2

    # Each identity once: a second approval by the same login role under another author is refused.
    roles.owner.protect_label("p", "production", approvals=2, author="root")
    twice = roles.reg("writer").request_label_move("p", "production", 3, author="ana", reason="r")
    assert approver.approve(twice.id, author="bo").state is RequestState.PENDING
    before = roles.stored()
    with pytest.raises(ApprovalError):
        approver.approve(twice.id, author="cy")
    assert roles.stored() == before
    assert admin.approve(twice.id, author="cy").state is RequestState.APPLIED and roles.label() == 3
    with roles.connect() as conn:
        logins = conn.execute(
            "SELECT author, login FROM promptreg_approvals WHERE namespace = %s AND request = %s ORDER BY at",
            (roles.namespace, twice.id),
        ).fetchall()
    assert logins == [("bo", roles.names["approver"]), ("cy", roles.names["admin"])]


# -- the life cycle across roles ---------------------------------------------------------------------


def test_request_by_a_writer_approved_by_an_approver_moves_the_label(roles: Roles) -> None:
    writer, approver = roles.reg("writer"), roles.reg("approver")
    rev = roles.owner.revision()
    request = writer.request_label_move("p", "production", 2, author="ana", reason="kinder")
    assert (request.from_version, request.approvals_required, roles.owner.revision()) == (1, 1, rev + 1)
    applied = approver.approve(request.id, author="bo")
    assert (applied.state, applied.decided_by, applied.applied_rev) == (RequestState.APPLIED, "bo", rev + 2)
    assert roles.label() == 2 and roles.owner.revision() == rev + 2
    events = [e for e in roles.owner.history("p") if e.rev > rev]
    assert [(e.action, e.request, e.author, e.version, e.previous_version) for e in events] == [
        ("request_move", request.id, "ana", 2, 1), ("set_label", request.id, "bo", 2, 1),
    ]  # fmt: skip
    with roles.connect() as conn:
        row = conn.execute(
            "SELECT login, decided_login, state FROM promptreg_requests WHERE namespace = %s AND id = %s",
            (roles.namespace, request.id),
        ).fetchone()
    assert row == (roles.names["writer"], roles.names["approver"], "applied")

    rejected = writer.request_label_move("p", "production", 3, author="ana", reason="r")
    done = approver.reject(rejected.id, author="bo", reason="no")
    assert (done.state, done.decision_reason) == (RequestState.REJECTED, "no")
    assert roles.owner.history("p")[-1].action == "reject_request" and roles.label() == 2


def test_approve_without_apply_then_apply_as_another_role(roles: Roles) -> None:
    request = roles.reg("writer").request_label_move("p", "production", 3, author="ana", reason="r")
    approved = roles.reg("approver").approve(request.id, author="bo", apply=False)
    assert approved.state is RequestState.APPROVED and roles.label() == 1
    with pytest.raises(RegistryAuthError):
        roles.reg("writer").apply_request(request.id, author="ana")
    applied = roles.reg("admin").apply_request(request.id, author="cy")
    assert (applied.state, applied.decided_by) == (RequestState.APPLIED, "cy") and roles.label() == 3
    event = roles.owner.history("p")[-1]
    assert (event.action, event.request, event.author) == ("set_label", request.id, "cy")


def test_an_expired_request_cannot_be_decided_even_around_the_api(roles: Roles) -> None:
    request = roles.reg("writer").request_label_move("p", "production", 2, author="ana", reason="r", expires_in=1)
    assert wait_until(lambda: roles.owner.get_request(request.id).state is RequestState.EXPIRED, 5)
    before = roles.stored()
    with pytest.raises(RequestStateError) as caught:
        roles.reg("approver").approve(request.id, author="bo")
    assert caught.value.state == "expired"
    assert function_refuses(roles, "approver", "PRS01", request.id).diag.message_detail == "expired"
    assert roles.stored() == before and roles.label() == 1


def test_a_label_moved_since_the_request_refuses_the_approval_and_records_none(roles: Roles) -> None:
    writer, approver = roles.reg("writer"), roles.reg("approver")
    stale = writer.request_label_move("p", "production", 2, author="ana", reason="r")
    other = writer.request_label_move("p", "production", 3, author="ana", reason="r")
    approver.approve(other.id, author="bo")
    before = roles.stored()
    with pytest.raises(LabelConflictError) as caught:
        approver.approve(stale.id, author="bo")
    assert (caught.value.expected, caught.value.actual) == (1, 3)
    function_refuses(roles, "approver", "PRC01", stale.id)
    assert roles.stored() == before
    assert roles.owner.get_request(stale.id).approvals == () and roles.label() == 3


# -- a client on the reader role ------------------------------------------------------------------


def test_a_reader_client_follows_requests_and_the_approved_move(roles: Roles) -> None:
    writer, approver = roles.reg("writer"), roles.reg("approver")
    with PromptClient(roles.url("reader"), start_timeout=10) as client:
        assert client.get("p").version == 1
        request = writer.request_label_move("p", "production", 2, author="ana", reason="r")
        assert wait_until(lambda: client.status().rev == roles.owner.revision(), 5)  # a request moves nothing
        assert client.get("p").version == 1
        approver.approve(request.id, author="bo")
        assert wait_until(lambda: client.get("p").version == 2, 5)
        other = writer.request_label_move("p", "production", 3, author="ana", reason="r")
        approver.reject(other.id, author="bo")
        assert wait_until(lambda: client.status().rev == roles.owner.revision(), 5)
        status = client.status()
        assert (status.state, status.resyncs, client.get("p").version) == (ClientState.LIVE, 1, 2)


# -- migration 7 -------------------------------------------------------------------------------------


def test_migration_7_upgrades_a_database_at_version_6_and_its_roles_keep_working(fresh_db: str) -> None:
    admin = psycopg.connect(fresh_db, autocommit=True)
    suffix = uuid.uuid4().hex[:8]
    reader, writer = f"reader_{suffix}", f"writer_{suffix}"

    def as_role(role: str) -> str:
        return fresh_db.replace("postgresql://postgres@", f"postgresql://{role}@") + "?namespace=shop"

    try:
        with admin.transaction():
            admin.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY, description text NOT NULL, "
                          "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
            for migration in MIGRATIONS[:6]:
                admin.execute(migration.sql)
                admin.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                              (migration.version, migration.description))  # fmt: skip
            for role in (reader, writer):  # the grants the docs gave before migration 7
                admin.execute(f"CREATE ROLE {role} LOGIN")
            admin.execute(f"GRANT SELECT ON {SCHEMA_TABLE}, promptreg_namespaces, promptreg_prompts, "
                          "promptreg_versions, promptreg_labels, promptreg_rollouts, promptreg_audit, "
                          f"promptreg_partials TO {reader}, {writer}")  # fmt: skip
            admin.execute(f"GRANT INSERT, UPDATE ON promptreg_namespaces, promptreg_prompts, promptreg_labels "
                          f"TO {writer}")  # fmt: skip
            admin.execute(f"GRANT INSERT, UPDATE, DELETE ON promptreg_rollouts TO {writer}")
            admin.execute(f"GRANT INSERT ON promptreg_versions, promptreg_audit, promptreg_partials TO {writer}")
        old = PostgresPromptRegistry(as_role(writer), auto_migrate=False)
        missing = rf"need version {LATEST_SCHEMA} \(migration 7: protected labels"
        with old, pytest.raises(RegistryUnavailableError, match=missing):
            old.create_prompt("p")
        with PostgresPromptRegistry(fresh_db + "?namespace=shop", auto_migrate=False) as owner:
            result = owner.migrate()
            assert result.changed and "applied schema migration(s) 7 (protected labels" in result.message
            owner.create_prompt("p")
            owner.add_version("p", "one")
            owner.add_version("p", "two")
            owner.set_label("p", "production", 1)
            owner.set_label("p", "staging", 1)
            owner.protect_label("p", "production", author="root")
        held = {
            (role, table): admin.execute("SELECT has_table_privilege(%s, %s, 'SELECT'), has_table_privilege(%s, %s, "
                                         "'INSERT')", (role, table, role, table)).fetchone()
            for role in (reader, writer) for table in GOVERNANCE
        }  # fmt: skip
        assert set(held.values()) == {(True, False)}
        requests = [
            admin.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (role, f)).fetchone() == (True,)
            for role in (reader, writer) for f in (REQUEST_FUNCTION, DECIDE_FUNCTION, APPLY_FUNCTION)
        ]  # fmt: skip
        assert requests == [False, False, False, True, False, False]
        with PostgresPromptRegistry(as_role(writer), auto_migrate=False) as reg:  # the writer keeps working
            reg.set_label("p", "staging", 2)
            with pytest.raises(ProtectedLabelError):
                reg.set_label("p", "production", 2)
            request = reg.request_label_move("p", "production", 2, author="ana", reason="r")
            with pytest.raises(RegistryAuthError):
                reg.approve(request.id, author="bo")  # approving needs the approver's grants
        with PostgresPromptRegistry(as_role(reader), auto_migrate=False) as reg:
            assert [p.label for p in reg.protected_labels()] == ["production"]
            assert reg.get_request(request.id).state is RequestState.PENDING
        with PromptClient(as_role(reader), start_timeout=10) as client:
            assert client.status().state is ClientState.LIVE and client.get("p", "staging").version == 2
    finally:
        for role in (reader, writer):
            admin.execute(f"DROP OWNED BY {role}")
            admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_a_schema_6_database_reads_as_no_protected_labels(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn, conn.transaction():
        conn.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY, description text NOT NULL, "
                     "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
        for migration in MIGRATIONS[:6]:
            conn.execute(migration.sql)
            conn.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                         (migration.version, migration.description))  # fmt: skip
        conn.execute("INSERT INTO promptreg_namespaces VALUES ('shop', 2)")
        conn.execute("INSERT INTO promptreg_prompts (namespace, name, created_at, latest) "
                     "VALUES ('shop', 'p', now(), 1)")  # fmt: skip
        conn.execute("INSERT INTO promptreg_versions (namespace, name, version, prompt_text, metadata, sha256, "
                     "created_at) VALUES ('shop', 'p', 1, 'one', '{}', 'ab', now())")  # fmt: skip
        conn.execute("INSERT INTO promptreg_audit (namespace, rev, at, action, prompt) VALUES "
                     "('shop', 1, now(), 'create_prompt', 'p'), ('shop', 2, now(), 'add_version', 'p')")  # fmt: skip
    with PostgresPromptRegistry(fresh_db + "?namespace=shop", auto_migrate=False) as old:
        assert old.protected_labels() == [] and old.list_requests() == []
        assert [(e.action, e.request, e.approvals) for e in old.history("p")] == [
            ("create_prompt", None, None), ("add_version", None, None),
        ]  # fmt: skip
