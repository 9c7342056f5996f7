"""PostgreSQL: a NOTIFY is only a doorbell (DESIGN.md 3, note 2b).

PostgreSQL has no privilege for ``NOTIFY``: any role that can connect may notify on the registry's
channel. These tests forge notifications (copies of a real payload with another revision, label,
version or operation, and garbage), as the services' own SELECT-only role and as a role with no
grant on promptreg, and check that a client keeps serving exactly what the tables hold, stays
``live`` without a single full reload, pays one small read per batch of notifications, and still
applies a real write at once. The roles are made by the SQL block of docs/postgres.md, run as written.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.client.cache import ChangeEvent
from promptreg.client.postgres import feed as postgres_feed
from promptreg.registry import (
    LabelNotFoundError,
    PostgresPromptRegistry,
    PromptNotFoundError,
    RegistryAuthError,
)
from tests.postgres_server import PostgresServer
from tests.redis_server import wait_until

pytestmark = pytest.mark.postgres

DOCS = Path(__file__).resolve().parent.parent / "docs" / "postgres.md"
TABLES = (
    "promptreg_schema_version", "promptreg_namespaces", "promptreg_prompts", "promptreg_versions",
    "promptreg_labels", "promptreg_rollouts", "promptreg_audit", "promptreg_partials",
)  # fmt: skip
LABELS = ("production", "staging", "latest", "canary")
FORGING_SECONDS = 1.5
"""How long each sender forges (bounded; today's client was wrong at the first forged move)."""
APPLIED_WITHIN = 1.0
"""Seconds a real write may take to reach the client (it takes milliseconds; the machine is shared)."""


def documented_grants() -> str:
    """The ```sql block of docs/postgres.md's "Roles" section."""
    section = DOCS.read_text("utf-8").split("\n## Roles\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "docs/postgres.md: the Roles section has one ```sql block"
    return str(blocks[0])


@dataclass
class Scene:
    """A seeded registry, its roles (made by the documented SQL) and a real payload of its channel."""

    server: PostgresServer
    namespace: str
    reg: PostgresPromptRegistry
    reader: str
    writer: str
    stranger: str
    real: dict[str, Any]

    def url(self, role: str) -> str:
        return f"postgresql://{role}@127.0.0.1:{self.server.port}/postgres?namespace={self.namespace}"

    def connect(self, role: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(f"postgresql://{role}@127.0.0.1:{self.server.port}/postgres", autocommit=True)

    def truth(self) -> Truth:
        """What the registry holds, read as the owner."""
        prompt = self.reg.get_prompt("p")
        assert prompt is not None
        labels = dict(prompt.labels)
        labels["latest"] = prompt.versions[-1].version
        texts = {v.version: v.prompt_text for v in prompt.versions}
        with self.connect() as owner:
            row = owner.execute("SELECT rev FROM promptreg_namespaces WHERE namespace = %s", (self.namespace,))
            (rev,) = row.fetchone() or (0,)
        return Truth(rev, labels, texts)


@dataclass(frozen=True)
class Truth:
    rev: int
    labels: dict[str, int]
    texts: dict[int, str]


def _drop_roles(admin: psycopg.Connection[Any], roles: tuple[str, ...]) -> None:
    for role in roles:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
    for role in roles:
        admin.execute(f"DROP OWNED BY {role}")  # revokes its grants (database and tables included)
        admin.execute(f"DROP ROLE {role}")


@pytest.fixture
def scene(postgres_server: PostgresServer, namespace: str) -> Iterator[Scene]:
    reg = PostgresPromptRegistry(postgres_server.url(namespace=namespace))
    reg.create_prompt("p")
    for text in ("one", "two", "three"):
        reg.add_version("p", text)
    reg.set_label("p", "production", 1)
    reader, writer, stranger = f"reader_{namespace}", f"writer_{namespace}", f"stranger_{namespace}"
    approver, admin_role = f"approver_{namespace}", f"admin_{namespace}"
    sql = documented_grants().replace("promptreg_reader", reader).replace("promptreg_writer", writer)
    sql = sql.replace("promptreg_approver", approver).replace("promptreg_admin", admin_role)
    sql = sql.replace("DATABASE prompts", "DATABASE postgres")
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(sql.encode())  # the documented block, as written (bytes: a query psycopg runs as is)
        admin.execute(f"CREATE ROLE {stranger} LOGIN")  # no grant at all: it can connect, as PUBLIC may
        admin.execute(f'LISTEN "{reg.channel}"')
        reg.set_label("p", "staging", 2)  # the real payload every forgery copies
        real = json.loads(next(admin.notifies(timeout=5, stop_after=1)).payload)
        admin.execute("UNLISTEN *")  # a session that listens and never reads would hold the queue back
        try:
            yield Scene(postgres_server, namespace, reg, reader, writer, stranger, real)
        finally:
            reg.close()
            _drop_roles(admin, (reader, writer, approver, admin_role, stranger))


def forgeries(real: dict[str, Any], rev: int) -> list[str]:
    """Payloads no write sent, for a registry at ``rev`` whose prompt ``p`` has versions 1..3,
    ``production`` -> 1 and ``staging`` -> 2: the real payload's format with other fields, then garbage."""
    nxt = rev + 1
    forged = [
        {**real, "rev": nxt, "label": "production", "version": 3, "prev": 1},  # a move that did not happen
        {**real, "rev": nxt, "op": "delete_label", "label": "production", "version": None, "prev": 1},
        {**real, "rev": nxt, "op": "rollback", "label": "staging", "version": 1, "prev": 2},
        {**real, "rev": nxt, "label": "canary", "version": 3, "prev": None},  # a label that does not exist
        {**real, "rev": nxt, "op": "add_version", "label": None, "version": 4, "prev": None},  # nor does v4
        {**real, "rev": nxt, "op": "create_prompt", "prompt": "ghost", "label": None, "version": None, "prev": None},
        {**real, "rev": rev, "label": "production", "version": 2},  # the revision the client holds
        {**real, "rev": 1, "label": "production", "version": 2},  # an old revision
        {**real, "rev": rev + 2, "label": "production", "version": 3},  # a gap
        {**real, "rev": rev + 10**6, "op": "delete_label", "label": "production", "version": None},
    ]
    return [json.dumps(payload) for payload in forged] + GARBAGE


GARBAGE = [
    "garbage", "", "{}", "[1, 2]", '{"rev": "x", "op": "set_label"}', '{"rev": 9, "op": "drop_table", "prompt": "p"}',
    "x" * 7000,
]  # fmt: skip


def deviations(client: PromptClient, truth: Truth, *, check_rev: bool = True) -> list[str]:
    """How what ``client`` serves and reports differs from ``truth`` (empty: not at all)."""
    wrong = []
    for label in LABELS:
        expected = truth.labels.get(label)
        try:
            got = client.get("p", label)
        except LabelNotFoundError:
            if expected is not None:
                wrong.append(f"{label}: not served, registry has v{expected}")
            continue
        if got.version != expected or got.prompt_text != truth.texts[got.version]:
            wrong.append(f"{label}: served v{got.version} {got.prompt_text!r}, registry has v{expected}")
    try:
        client.get("ghost")
        wrong.append("ghost: served, the registry has no such prompt")
    except PromptNotFoundError:
        pass
    except LabelNotFoundError:
        wrong.append("ghost: the client believes the prompt exists")
    status = client.status()
    if status.state is not ClientState.LIVE:
        wrong.append(f"state {status.state}: {status.last_error}")
    if check_rev and status.rev != truth.rev:
        wrong.append(f"reports rev {status.rev}, the registry is at rev {truth.rev}")
    return wrong


def serving(client: PromptClient, version: int) -> Callable[[], bool]:
    """Whether ``client`` serves ``version`` of ``p`` as production (for :func:`wait_until`)."""
    return lambda: client.get("p").version == version


def matching(client: PromptClient, truth: Truth) -> Callable[[], bool]:
    """Whether ``client`` serves and reports exactly ``truth`` (for :func:`wait_until`)."""
    return lambda: deviations(client, truth) == []


def notify(conn: psycopg.Connection[Any], channel: str, payload: str) -> None:
    conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))


@pytest.mark.parametrize("sender", ["reader", "stranger"])
def test_forged_notifications_change_nothing_and_a_real_write_still_applies(scene: Scene, sender: str) -> None:
    reg = scene.reg
    role = scene.reader if sender == "reader" else scene.stranger
    with PromptClient(scene.url(scene.reader), start_timeout=10) as client, scene.connect(role) as forger:
        truth = scene.truth()
        assert deviations(client, truth) == []
        events: list[ChangeEvent] = []
        client.on_change(events.append)
        payloads = forgeries(scene.real, truth.rev)
        wrong: list[str] = []
        lookups = rounds = 0
        deadline = time.monotonic() + FORGING_SECONDS
        while time.monotonic() < deadline:
            for payload in payloads:
                notify(forger, reg.channel, payload)
                time.sleep(0.002)  # time enough for a client that applies payloads to apply this one
                wrong += deviations(client, truth)
                lookups += 1
            rounds += 1
        assert wrong == [], f"{len(wrong)} of {lookups} checks wrong while forging, first: {wrong[:3]}"

        # A real write is applied at once, after every forgery before it (notifications are in order).
        started = time.monotonic()
        reg.set_label("p", "production", 2)
        assert wait_until(lambda: client.get("p").version == 2, APPLIED_WITHIN, interval=0.001)
        took = time.monotonic() - started
        assert deviations(client, scene.truth()) == []
        assert [(e.name, e.label, e.version, e.previous_version) for e in events] == [("p", "production", 2, 1)]
        status = client.status()
        assert status.resyncs == 1, "a forged notification cost a full reload"
        assert status.malformed_messages == rounds * len(GARBAGE)  # counted, not applied
        assert took < APPLIED_WITHIN


def test_a_forger_answering_every_real_write_is_never_served(scene: Scene) -> None:
    """The attack of the issue: a role LISTENs and answers each real write at once with forged next
    revisions, while real writes go on; lookups must only ever see the registry's versions."""
    reg = scene.reg
    stop = threading.Event()
    wrong: list[str] = []
    failures: list[BaseException] = []
    forged = [0]
    truth = scene.truth()

    def forge() -> None:
        try:
            with scene.connect(scene.stranger) as ear, scene.connect(scene.stranger) as mouth:
                ear.execute(f'LISTEN "{reg.channel}"')
                rev = truth.rev
                while not stop.is_set():
                    for heard in ear.notifies(timeout=0.005):
                        if heard.pid != mouth.info.backend_pid:  # a real write: forge its successors
                            rev = max(rev, json.loads(heard.payload)["rev"])
                    for payload in forgeries(scene.real, rev):
                        notify(mouth, reg.channel, payload)
                        forged[0] += 1
        except BaseException as exc:  # reported by the test
            failures.append(exc)

    with PromptClient(scene.url(scene.reader), start_timeout=10) as client:

        def sample() -> None:
            try:
                while not stop.is_set():
                    # production moves between 1 and 2 here; anything else (3, deleted) is a forgery.
                    for problem in deviations(client, truth, check_rev=False):
                        if not problem.startswith(("production: served v1 ", "production: served v2 ")):
                            wrong.append(problem)
            except BaseException as exc:  # reported by the test
                failures.append(exc)

        threads = [threading.Thread(target=forge), threading.Thread(target=sample)]
        for thread in threads:
            thread.start()
        try:
            for i in range(20):
                target = 2 if i % 2 == 0 else 1
                reg.set_label("p", "production", target)
                served = wait_until(serving(client, target), APPLIED_WITHIN, interval=0.001)
                assert served, f"move {i} to v{target} not applied within {APPLIED_WITHIN} s under forgery"
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        assert failures == []
        assert forged[0] > 100
        assert wrong == [], f"{len(wrong)} wrong lookups, first: {wrong[:3]}"
        assert deviations(client, scene.truth()) == []
        assert client.status().resyncs == 1


def _behind_the_back(scene: Scene, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """Change the tables as the owner in one transaction, notifying nothing."""
    with scene.connect() as owner, owner.transaction():
        for sql, params in statements:
            owner.execute(sql.encode(), params)


def test_any_notification_brings_the_client_to_the_tables(scene: Scene) -> None:
    """A notification only makes the client read: even garbage from a stranger brings it to what the
    tables hold, with the gap rules (no safety poll runs within the test)."""
    ns = scene.namespace
    with (
        PromptClient(scene.url(scene.reader), start_timeout=10, poll_interval=30) as client,
        scene.connect(scene.stranger) as stranger,
    ):

        def ring_and_expect(what: str) -> None:
            resyncs = client.status().resyncs
            notify(stranger, scene.reg.channel, "ring")
            truth = scene.truth()
            assert wait_until(lambda: deviations(client, truth) == [], 2.0), (what, deviations(client, truth))
            assert client.status().resyncs == resyncs + 1, what

        # A revision without its audit row: the audit ends before the revision (a gap).
        _behind_the_back(
            scene,
            ("UPDATE promptreg_labels SET version = 3 WHERE namespace = %s AND label = 'production'", (ns,)),
            ("UPDATE promptreg_namespaces SET rev = rev + 1 WHERE namespace = %s", (ns,)),
        )
        ring_and_expect("a revision without an audit row")

        # The registry went back (as a restore would): revision and label as two writes ago.
        scene.reg.set_label("p", "production", 1)
        assert wait_until(lambda: client.get("p").version == 1, APPLIED_WITHIN)
        _behind_the_back(
            scene,
            ("DELETE FROM promptreg_audit WHERE namespace = %s AND rev >= "
             "(SELECT rev - 1 FROM promptreg_namespaces WHERE namespace = %s)", (ns, ns)),
            ("UPDATE promptreg_labels SET version = 2 WHERE namespace = %s AND label = 'production'", (ns,)),
            ("UPDATE promptreg_namespaces SET rev = rev - 2 WHERE namespace = %s", (ns,)),
        )  # fmt: skip
        ring_and_expect("the registry went back")

        # Another history at the same revision: the audit row the client was built from is replaced.
        scene.reg.set_label("p", "production", 1)
        assert wait_until(lambda: client.get("p").version == 1, APPLIED_WITHIN)
        _behind_the_back(
            scene,
            ("DELETE FROM promptreg_audit WHERE namespace = %s AND rev = "
             "(SELECT rev FROM promptreg_namespaces WHERE namespace = %s)", (ns, ns)),
            ("INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version) "
             "SELECT namespace, rev, now(), 'set_label', 'p', 'production', 3 FROM promptreg_namespaces "
             "WHERE namespace = %s", (ns,)),
            ("UPDATE promptreg_labels SET version = 3 WHERE namespace = %s AND label = 'production'", (ns,)),
        )  # fmt: skip
        ring_and_expect("another history at the same revision")


def _doorbell_reads(log: Path, offset: int) -> int:
    """How many doorbell reads the server logged after ``offset`` (log_statement = all for the reader)."""
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    return text.count("UNION ALL")


def _statements(log: Path, offset: int) -> int:
    text = log.read_bytes()[offset:].decode("utf-8", "replace")
    return len(re.findall(r"LOG:  (?:statement|execute [^:]*):", text))


def test_notifications_that_arrive_together_cost_one_small_read(scene: Scene) -> None:
    """Counted in the server's log (log_statement = all for the reader role alone): one read per
    batch of notifications, and one statement per real write (its version's text comes with it)."""
    log = scene.server.log_path
    with scene.connect() as owner:
        owner.execute(f"ALTER ROLE {scene.reader} SET log_statement = 'all'")
    reg = scene.reg
    with (
        PromptClient(scene.url(scene.reader), start_timeout=10, poll_interval=30) as client,
        scene.connect(scene.stranger) as stranger,
    ):
        truth = scene.truth()
        offset = log.stat().st_size
        with stranger.transaction():  # delivered together, at commit
            for i in range(200):
                notify(stranger, reg.channel, json.dumps({**scene.real, "rev": truth.rev + 1, "at": i}))
        time.sleep(0.5)
        reads = _doorbell_reads(log, offset)
        assert 1 <= reads <= 5, f"{reads} reads for 200 notifications delivered together"
        assert deviations(client, truth) == []

        for write in (lambda: reg.set_label("p", "production", 2), lambda: reg.add_version("p", "four")):
            offset = log.stat().st_size
            resyncs = client.status().resyncs
            write()
            truth = scene.truth()
            assert wait_until(matching(client, truth), APPLIED_WITHIN)
            time.sleep(0.2)  # nothing else follows
            assert _statements(log, offset) == 1, log.read_bytes()[offset:].decode("utf-8", "replace")
            assert client.status().resyncs == resyncs


def test_the_documented_roles_write_and_read_exactly_as_documented(scene: Scene) -> None:
    writer = PostgresPromptRegistry(scene.url(scene.writer))
    try:  # the writer makes every kind of write
        writer.create_prompt("w")
        writer.add_version("w", "Hello {{name}}.")
        writer.add_version("w", "Hi {{name}}.")
        writer.set_label("w", "production", 1)
        writer.set_label("w", "production", 2)
        writer.rollback("w", "production")
        writer.delete_label("w", "production")
        writer.set_compatibility("w", "backward")
        assert [e.action for e in writer.history("w")][-4:] == [
            "set_label", "rollback", "delete_label", "set_compatibility",
        ]  # fmt: skip
    finally:
        writer.close()
    reader = PostgresPromptRegistry(scene.url(scene.reader))
    try:
        with pytest.raises(RegistryAuthError):
            reader.set_label("p", "production", 3)
        with pytest.raises(RegistryAuthError):
            reader.add_version("p", "forged")
    finally:
        reader.close()
    with PromptClient(scene.url(scene.reader), start_timeout=10) as client:
        assert client.status().state is ClientState.LIVE
        assert deviations(client, scene.truth()) == []
    refused = []
    with scene.connect(scene.reader) as conn:
        for table in TABLES:
            for statement in (
                f"INSERT INTO {table} DEFAULT VALUES",
                f"UPDATE {table} SET namespace = namespace" if table != "promptreg_schema_version" else
                f"UPDATE {table} SET version = version",
                f"DELETE FROM {table}",
                f"TRUNCATE {table}",
            ):  # fmt: skip
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(statement)
                refused.append(statement)
    assert len(refused) == 4 * len(TABLES)
    with scene.connect(scene.writer) as conn:  # the audit trail is append-only for the writer
        for statement in ("UPDATE promptreg_audit SET reason = 'x'", "DELETE FROM promptreg_audit"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_a_client_far_behind_catches_up_in_several_reads(scene: Scene, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ten writes land at once (made by hand as promptreg makes them: label, audit row, revision, in
    one transaction, notified nowhere); one ring reads them, three rows per read here, in order."""
    monkeypatch.setattr(postgres_feed, "CHANGES_PER_READ", 3)
    ns = scene.namespace
    with (
        PromptClient(scene.url(scene.reader), start_timeout=10, poll_interval=30) as client,
        scene.connect(scene.stranger) as stranger,
    ):
        events: list[ChangeEvent] = []
        client.on_change(events.append)
        start = scene.truth().rev

        moves: list[tuple[str, tuple[Any, ...]]] = []
        for i in range(10):
            version, previous = (2, 1) if i % 2 == 0 else (1, 2)
            moves.append((
                "UPDATE promptreg_labels SET version = %s, previous = %s WHERE namespace = %s AND name = 'p' "
                "AND label = 'production'", (version, previous, ns),
            ))  # fmt: skip
            moves.append((
                "INSERT INTO promptreg_audit (namespace, rev, at, action, prompt, label, version, previous_version) "
                "VALUES (%s, %s, now(), 'set_label', 'p', 'production', %s, %s)",
                (ns, start + i + 1, version, previous),
            ))  # fmt: skip
        moves.append(("UPDATE promptreg_namespaces SET rev = %s WHERE namespace = %s", (start + 10, ns)))
        _behind_the_back(scene, *moves)
        notify(stranger, scene.reg.channel, "ring")
        truth = scene.truth()
        assert wait_until(lambda: deviations(client, truth) == [], APPLIED_WITHIN)
        assert [(e.version, e.rev) for e in events] == [(2 if i % 2 == 0 else 1, start + i + 1) for i in range(10)]
        assert client.status().resyncs == 1
