"""Signed webhooks on a real PostgreSQL: delivery from the audit trail, the lease (on the server's
clock) fencing cursor writes, removal, and schema migration 8 on a database at version 7 whose
roles keep working (the writer delivers; the reader gets no grant on the endpoints' URLs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest

from promptreg.registry import PostgresPromptRegistry, RegistryAuthError
from promptreg.registry.postgres.schema import MIGRATIONS, SCHEMA_TABLE
from promptreg.registry.postgres.webhook_schema import WEBHOOK_TABLES
from promptreg.registry.webhooks import (
    Cursor,
    DeliverySettings,
    LeaseLostError,
    WebhookNotFoundError,
    WebhookWorker,
    add_webhook,
    new_endpoint,
    webhook_store,
)
from tests.postgres_server import PostgresServer
from tests.redis_server import wait_until
from tests.webhook_receiver import SECRET, Receiver, verify

pytestmark = pytest.mark.postgres

FAST = DeliverySettings(poll_interval=0.05, backoff_base=0.01, backoff_max=0.05, lease_ttl=1.0, fleet_timeout=1.0)
ENV = {"WH_SECRET": SECRET}


@pytest.fixture
def registry(postgres_server: PostgresServer, namespace: str) -> Iterator[PostgresPromptRegistry]:
    reg = PostgresPromptRegistry(postgres_server.url(), namespace=namespace)
    yield reg
    reg.close()


def test_the_audit_trail_arrives_signed_and_in_order(registry: PostgresPromptRegistry) -> None:
    with Receiver(lambda request, index: 500 if index == 1 else 204) as receiver:
        endpoint = new_endpoint(receiver.url, "WH_SECRET", events=["audit.*", "label.moved"])
        add_webhook(registry, webhook_store(registry), endpoint)
        registry.create_prompt("greeting")
        registry.add_version("greeting", "hi")
        registry.set_label("greeting", "production", 1)
        registry.delete_label("greeting", "production")
        worker = WebhookWorker(registry, settings=FAST, environ=ENV)
        assert worker.run(once=True) == 4
        got = receiver.delivered()
        assert receiver.requests[1].id == receiver.requests[2].id  # the retry of the failed message
    assert [(r.type, r.rev) for r in got] == [("audit.create_prompt", 1), ("audit.add_version", 2),
                                             ("label.moved", 3), ("label.moved", 4)]  # fmt: skip
    assert all(verify(SECRET, r.headers, r.body) for r in got)
    assert got[-1].json["data"]["version"] is None  # a deleted label
    cursor = worker.store.cursor(endpoint.id)
    assert cursor is not None and (cursor.rev, cursor.pending) == (4, None)
    worker.store.close()


def test_the_lease_fences_cursor_writes(registry: PostgresPromptRegistry, namespace: str) -> None:
    store = webhook_store(registry)
    second = PostgresPromptRegistry(registry.url, namespace=namespace)
    other = webhook_store(second)
    endpoint = new_endpoint("http://127.0.0.1:9/x", "WH_SECRET")
    add_webhook(registry, store, endpoint)
    try:
        assert store.acquire_lease("a", 0.5) and store.acquire_lease("a", 0.5)  # taken, then renewed
        assert not other.acquire_lease("b", 5)
        lease = other.lease()
        assert lease is not None and lease.holder == "a"
        store.save_cursor(endpoint.id, Cursor(rev=3), "a")
        with pytest.raises(LeaseLostError):
            other.save_cursor(endpoint.id, Cursor(rev=9), "b")
        assert wait_until(lambda: store.lease() is None, 5)  # it expires on the server's clock
        with pytest.raises(LeaseLostError):
            store.save_cursor(endpoint.id, Cursor(rev=4), "a")
        assert other.acquire_lease("b", 5)
        other.save_cursor(endpoint.id, Cursor(rev=5), "b")
        assert store.cursor(endpoint.id) == Cursor(rev=5)
        store.remove_endpoint(endpoint.id)
        with pytest.raises(WebhookNotFoundError):
            other.save_cursor(endpoint.id, Cursor(rev=6), "b")
        with pytest.raises(WebhookNotFoundError):
            store.remove_endpoint(endpoint.id)
        other.release_lease("b")
        assert store.lease() is None
    finally:
        store.close()
        other.close()
        second.close()


def test_migration_8_gives_the_tables_to_the_roles_that_move_labels(fresh_db: str) -> None:
    suffix = uuid.uuid4().hex[:8]
    reader, writer = f"reader_{suffix}", f"writer_{suffix}"

    def as_role(role: str) -> str:
        return fresh_db.replace("postgresql://postgres@", f"postgresql://{role}@") + "?namespace=shop"

    with psycopg.connect(fresh_db, autocommit=True) as admin:
        try:
            with admin.transaction():  # a database at version 7, with the roles its docs made
                admin.execute(f"CREATE TABLE {SCHEMA_TABLE} (version integer PRIMARY KEY, description text NOT NULL, "
                              "applied_at timestamptz NOT NULL DEFAULT now())")  # fmt: skip
                for migration in MIGRATIONS[:7]:
                    admin.execute(migration.sql)
                    admin.execute(f"INSERT INTO {SCHEMA_TABLE} (version, description) VALUES (%s, %s)",
                                  (migration.version, migration.description))  # fmt: skip
                for role in (reader, writer):
                    admin.execute(f"CREATE ROLE {role} LOGIN")
                    admin.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {role}")
                admin.execute(f"GRANT INSERT, UPDATE ON promptreg_namespaces, promptreg_prompts, promptreg_labels "
                              f"TO {writer}")  # fmt: skip
                admin.execute(f"GRANT INSERT ON promptreg_versions, promptreg_audit, promptreg_partials TO {writer}")
            with PostgresPromptRegistry(fresh_db + "?namespace=shop", auto_migrate=False) as owner:
                assert "applied schema migration(s) 8 (webhooks" in owner.migrate().message
            held = {
                (role, privilege): all(
                    admin.execute("SELECT has_table_privilege(%s, %s, %s)", (role, table, privilege)).fetchone()
                    == (True,)
                    for table in WEBHOOK_TABLES
                )
                for role in (reader, writer) for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE")
            }  # fmt: skip
            assert held == {(writer, p): True for p in ("SELECT", "INSERT", "UPDATE", "DELETE")} | {
                (reader, p): False for p in ("SELECT", "INSERT", "UPDATE", "DELETE")
            }
            with PostgresPromptRegistry(as_role(writer)) as as_writer, Receiver() as receiver:
                add_webhook(as_writer, webhook_store(as_writer), new_endpoint(receiver.url, "WH_SECRET"))
                as_writer.create_prompt("p")
                worker = WebhookWorker(as_writer, settings=FAST, environ=ENV)
                assert worker.run(once=True) == 1
                worker.store.close()
            with PostgresPromptRegistry(as_role(reader)) as as_reader, pytest.raises(RegistryAuthError):
                webhook_store(as_reader).endpoints()
        finally:
            admin.execute(f"DROP OWNED BY {reader}, {writer}")
            admin.execute(f"DROP ROLE {reader}, {writer}")
