"""Content identity on PostgreSQL (DESIGN.md section 3, rule 2b).

A restore of saved rows (TRUNCATE + COPY in one transaction, as ``pg_restore`` does, with the audit
id sequence set back) brings revisions, audit row ids and version numbers back; new writes then
reuse them with other texts. A client connected through the restore and one cut off while it
happened must serve the new text within a second of the write, and never the lost one while
``live`` once it has taken anything from the restored registry, pinned ``get(version=3)`` included.
Real PostgreSQL only (the ``postgres`` marker), on a server of this test alone (the restore
truncates every table).
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import psycopg
import pytest
from psycopg import sql

from promptreg.client import ClientState, PromptClient
from promptreg.client.postgres.readback import read_changes
from promptreg.registry import PostgresPromptRegistry
from promptreg.registry.backup import apply_import, export_registry, plan_import
from tests.postgres_server import PostgresServer
from tests.redis_server import wait_until

pytestmark = pytest.mark.postgres

NAME = "greeting"
LABEL = "production"
TABLES = (
    "promptreg_namespaces", "promptreg_prompts", "promptreg_versions", "promptreg_labels",
    "promptreg_rollouts", "promptreg_audit", "promptreg_partials",
)  # fmt: skip
"""In the order their rows can be copied back (foreign keys)."""
SEQUENCE = "promptreg_audit_id_seq"
APPLIED_WITHIN = 1.0


class Watch:
    """Samples a client every 2 ms on a thread: the label and the pinned version 3. A sample is wrong
    when it is the lost text while ``live`` after the client took something from the restored
    registry (its revision or its resync count moved from where the lost history left it; before
    that it serves its last state like any client not yet told of a write)."""

    def __init__(self, prompts: PromptClient, lost: str) -> None:
        self.prompts, self.lost = prompts, lost
        status = prompts.status()
        self.at = (status.rev, status.resyncs)
        self.wrong: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        prompts = self.prompts
        while not self._stop.is_set():
            status = prompts.status()
            texts = (prompts.get(NAME, LABEL).prompt_text, prompts.get(NAME, version=3).prompt_text)
            moved = (status.rev, status.resyncs) != self.at
            live = status.state is ClientState.LIVE and prompts.status().state is ClientState.LIVE
            if self.lost in texts and moved and live:
                self.wrong.append(f"rev {status.rev}, resyncs {status.resyncs}: {texts}")
            self.samples += 1
            time.sleep(0.002)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        assert self.samples > 100
        return self.wrong


def save_rows(conn: psycopg.Connection[Any], namespace: str) -> tuple[dict[str, bytes], tuple[int, bool]]:
    """The namespace's rows of every promptreg table (``COPY ... TO STDOUT``) and the audit id sequence."""
    saved = {}
    for table in TABLES:
        query = sql.SQL("COPY (SELECT * FROM {} WHERE namespace = {}) TO STDOUT").format(
            sql.Identifier(table), sql.Literal(namespace)
        )
        with conn.cursor().copy(query) as copy:
            saved[table] = b"".join(bytes(chunk) for chunk in copy)
    row = conn.execute(f"SELECT last_value, is_called FROM {SEQUENCE}").fetchone()
    assert row is not None
    return saved, (row[0], row[1])


def restore_rows(conn: psycopg.Connection[Any], saved: dict[str, bytes], sequence: tuple[int, bool]) -> None:
    """What a data restore does, inside the caller's transaction: triggers off (``pg_restore
    --disable-triggers``; the versions' immutability trigger refuses TRUNCATE), TRUNCATE, COPY the
    rows back, the audit id sequence set back (``SEQUENCE SET``), triggers on."""
    for table in TABLES:
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    conn.execute(f"TRUNCATE {', '.join(reversed(TABLES))}")
    for table in TABLES:
        with conn.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            copy.write(saved[table])
    conn.execute("SELECT setval(%s, %s, %s)", (SEQUENCE, *sequence))
    for table in TABLES:
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def serves(prompts: PromptClient, text: str) -> bool:
    return (
        prompts.status().state is ClientState.LIVE
        and prompts.get(NAME, LABEL).prompt_text == text
        and prompts.get(NAME, version=3).prompt_text == text
    )


def test_restore_of_saved_rows_then_writes_reusing_numbers(private_postgres_server: PostgresServer) -> None:
    server = private_postgres_server
    namespace = "identity"
    registry = PostgresPromptRegistry(server.url(namespace=namespace))
    registry.create_prompt(NAME)
    registry.add_version(NAME, "one")
    registry.add_version(NAME, "two")
    registry.set_label(NAME, LABEL, 2)  # rev 4: the backup
    owner = psycopg.connect(server.url(), autocommit=True)
    for role in ("reader", "late"):  # the documented reader's grants: SELECT on the tables
        owner.execute(f"CREATE ROLE {role} LOGIN")
        owner.execute(f"GRANT SELECT ON promptreg_schema_version, {', '.join(TABLES)} TO {role}")
    base = f"127.0.0.1:{server.port}/postgres?namespace={namespace}"
    with (
        PromptClient(f"postgresql://reader@{base}", default_label=LABEL, poll_interval=2.0) as connected,
        PromptClient(f"postgresql://late@{base}", default_label=LABEL, poll_interval=2.0) as cut_off,
    ):
        assert wait_until(lambda: all(c.get(NAME).prompt_text == "two" for c in (connected, cut_off)), 10)
        saved, sequence = save_rows(owner, namespace)
        export = export_registry(registry)
        registry.add_version(NAME, "lost")
        registry.set_label(NAME, LABEL, 3)  # rev 6: the lost history's end
        assert wait_until(lambda: serves(connected, "lost") and serves(cut_off, "lost"), 5)

        # Cut off until after the new writes: NOLOGIN committed first, or the client could log in again
        # while the restore's transaction is open and rightly serve "lost", still the committed state.
        owner.execute("ALTER ROLE late NOLOGIN")
        owner.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'late'")
        assert wait_until(lambda: cut_off.status().state is not ClientState.LIVE, 5)
        with owner.transaction():
            watches = [Watch(connected, "lost"), Watch(cut_off, "lost")]
            restore_rows(owner, saved, sequence)

        # A different version 3, production and staging on it: one transaction (an import, as CI
        # makes it), revs 5-7, audit ids 5-7 again: the lost rows had ids 5 and 6.
        prompt = export["prompts"][0]
        prompt["versions"].append({**prompt["versions"][-1], "version": 3, "prompt_text": "new"})
        prompt["labels"] = {LABEL: 3, "staging": 3}
        apply_import(registry, plan_import(registry, export))
        written = time.monotonic()
        owner.execute("ALTER ROLE late LOGIN")
        assert wait_until(lambda: serves(connected, "new"), APPLIED_WITHIN), connected.get(NAME).prompt_text
        assert wait_until(lambda: serves(cut_off, "new"), written + APPLIED_WITHIN - time.monotonic()), cut_off.get(
            NAME
        ).prompt_text
        assert time.monotonic() - written < APPLIED_WITHIN + 0.2
        # Quiet afterwards: the safety polls (every 2 s) must not bring the lost text back either.
        time.sleep(2.5)
        assert [watch.stop() for watch in watches] == [[], []]
        for prompts in (connected, cut_off):
            assert serves(prompts, "new")
            assert prompts.get(NAME, "staging").prompt_text == "new"
            assert prompts.status().rev == 7
    with owner.cursor() as cur:
        rows = cur.execute("SELECT id, rev, write_id FROM promptreg_audit ORDER BY rev").fetchall()
    assert [row[0] for row in rows] == list(range(1, 8))  # the ids came back and were used again
    assert all(len(row[2]) == 16 for row in rows)
    assert len({row[2] for row in rows}) == 7
    owner.close()
    registry.close()


def test_the_read_back_carries_write_ids_and_the_version_sha(postgres_server: PostgresServer, namespace: str) -> None:
    """Each audit row read back names its write, the write before it and the sha of its version."""
    registry = PostgresPromptRegistry(postgres_server.url(namespace=namespace))
    registry.create_prompt(NAME)
    registry.add_version(NAME, "one")
    registry.set_label(NAME, LABEL, 1)
    registry.delete_label(NAME, LABEL)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        read = read_changes(conn, namespace, 0, 10, True)
        ids = [row[0] for row in conn.execute(
            "SELECT write_id FROM promptreg_audit WHERE namespace = %s ORDER BY rev", (namespace,)
        )]  # fmt: skip
        after = read_changes(conn, namespace, 2, 10, True)
    registry.close()
    sha = hashlib.sha256(b"one").hexdigest()[:16]
    changes = [change for _, change in read.changes]
    assert [c.op for c in changes] == ["create_prompt", "add_version", "set_label", "delete_label"]
    assert [c.write_id for c in changes] == ids and len(set(ids)) == 4
    assert [c.previous_write_id for c in changes] == ["", *ids[:3]]
    assert [c.sha for c in changes] == [None, sha, sha, None]
    assert read.base is None and read.server_rev == 4
    assert set(read.texts) == {(NAME, 1)}  # only the version a row adds comes with its text
    assert after.base is not None and after.base[1:] == (2, ids[1])
    assert [c.previous_write_id for _, c in after.changes] == ids[1:3]
