"""``promptreg protect``, ``request``, ``approve``, ``reject``, ``apply``, ``requests`` and ``unprotect``,
and how ``label``, ``rollback``, ``rollout``, ``show`` and ``history`` treat a protected label: click's
runner on the JSON file, real Redis and real PostgreSQL (the ``run`` fixture).
"""

from __future__ import annotations

import re
import shlex
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from promptreg.registry.postgres.roles import role_sql
from tests.backends import Cli
from tests.postgres_server import PostgresServer
from tests.redis_server import RedisServer

NAME = "movie-critic"
REQUEST_ID = re.compile(r"^[0-9a-f]{16}$")


@pytest.fixture
def seeded(run: Cli) -> Cli:
    """movie-critic with three versions; production -> 1, protected (one approval)."""
    run.ok("create", NAME, "--author", "alice")
    for n in range(1, 4):
        run.ok("push", NAME, "--author", "alice", input=f"v{n}: review {{{{movie}}}}\n")
    run.ok("label", NAME, "production", "1")
    protected = run.ok("protect", NAME, "production", "--author", "root", "--reason", "prod is reviewed")
    assert protected.stdout == f"{NAME}: label production protected (each move needs 1 approval)\n"
    return run


def _request(run: Cli, version: str, author: str = "bob", *extra: str) -> str:
    made = run.ok("request", NAME, "production", version, "--reason", f"ship v{version}", "--author", author, *extra)
    request_id = made.stdout.strip()
    assert REQUEST_ID.fullmatch(request_id), made
    return request_id


def _production(run: Cli) -> int:
    version: int = run.ok("show", NAME, "--label", "production", "--json").json()["version"]
    return version


def _history(run: Cli) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = run.ok("history", NAME, "--json").json()
    return events


def test_request_then_another_identity_approves_and_the_label_moves(seeded: Cli) -> None:
    run = seeded
    request_id = _request(run, "2")
    assert _production(run) == 1  # a request moves nothing
    approved = run.ok("approve", request_id, "--author", "carol")
    assert approved.stdout == f"{NAME}: request {request_id} approved by carol: label production 1 -> 2\n"
    assert _production(run) == 2

    shown = run.ok("requests", "--id", request_id, "--json").json()
    assert (shown["state"], shown["from_version"], shown["version"], shown["decided_by"]) == ("applied", 1, 2, "carol")
    assert [a["author"] for a in shown["approvals"]] == ["carol"] and shown["author"] == "bob"
    # The audit trail: the protection, the request, and the move under the approver's name with the request id.
    events = _history(run)
    assert [(e["action"], e["author"]) for e in events[-3:]] == [
        ("protect_label", "root"), ("request_move", "bob"), ("set_label", "carol")
    ]  # fmt: skip
    move = events[-1]
    assert (move["request"], move["previous_version"], move["version"], move["reason"]) == (request_id, 1, 2, "ship v2")
    assert events[-2]["request"] == request_id and events[-3]["approvals"] == 1
    lines = run.ok("history", NAME).stdout.splitlines()
    assert lines[-3].endswith("root         protected production (1 approval)  (prod is reviewed)")
    assert lines[-2].endswith(f"bob          requested production 1 -> 2 (request {request_id})  (ship v2)")
    assert lines[-1].endswith(f"carol        set_label production 1 -> 2 (request {request_id})  (ship v2)")
    # show marks the protected label.
    assert run.ok("show", NAME, "--label", "production").stdout.splitlines()[0] == (
        f"{NAME} version 2  [production (protected)]"
    )


def test_a_direct_move_of_a_protected_label_is_refused_and_writes_nothing(seeded: Cli) -> None:
    run = seeded
    run.ok("label", NAME, "staging", "3")  # an unprotected label of the same prompt still moves
    before = run.state()
    refusal = (
        f"error: label 'production' of prompt '{NAME}' is protected: request the move (promptreg request) "
        "and have another identity approve it"
    )
    assert run.fails("label", NAME, "production", "2") == refusal
    assert run.fails("label", NAME, "production", "staging", "--force", "--author", "root") == refusal
    assert run.fails("label", NAME, "production", "--delete") == refusal
    assert run.fails("rollback", NAME, "production") == refusal
    assert run.fails("rollout", "start", NAME, "production", "2", "--percent", "10") == refusal
    assert run.fails("push", NAME, "--label", "production", input="v4\n") == refusal  # the version stays, no move
    after = run.state()
    assert after[0]["labels"] == before[0]["labels"] and len(after[0]["versions"]) == 4
    assert _production(run) == 1


def test_self_approval_and_double_approval_are_refused(seeded: Cli) -> None:
    run = seeded
    run.ok("protect", NAME, "production", "--approvals", "2", "--author", "root")
    request_id = _request(run, "3")
    assert run.fails("approve", request_id, "--author", "bob") == (
        f"error: move request '{request_id}': 'bob' made this request: another identity must decide it"
    )
    assert run.fails("reject", request_id, "--author", "bob").startswith(f"error: move request '{request_id}': 'bob'")
    first = run.ok("approve", request_id, "--author", "carol")
    assert first.stdout == f"{NAME}: request {request_id} approved by carol (1/2 approvals)\n"
    assert run.fails("approve", request_id, "--author", "carol") == (
        f"error: move request '{request_id}': 'carol' approved this request already"
    )
    assert _production(run) == 1
    rows = run.ok("requests", "--json").json()
    assert [(r["id"], r["state"], r["approvals_required"], len(r["approvals"])) for r in rows] == [
        (request_id, "pending", 2, 1)
    ]
    second = run.ok("approve", request_id, "--author", "dave")
    assert second.stdout == f"{NAME}: request {request_id} approved by dave: label production 1 -> 3\n"
    assert _production(run) == 3


def test_reject_ends_a_request(seeded: Cli) -> None:
    run = seeded
    request_id = _request(run, "2")
    rejected = run.ok("reject", request_id, "--author", "carol", "--reason", "not before the launch")
    assert rejected.stdout == f"{NAME}: request {request_id} rejected by carol\n"
    assert run.fails("approve", request_id, "--author", "dave") == f"error: move request '{request_id}' is rejected"
    assert _production(run) == 1
    detail = run.ok("requests", "--id", request_id).stdout.splitlines()
    assert detail[0] == f"request {request_id}: {NAME} production 1 -> 2"
    assert detail[1] == "state: rejected (0/1 approvals)"
    assert re.fullmatch(r"requested: \S+ \S+ by bob: ship v2", detail[2])
    assert re.fullmatch(r"rejected: \S+ \S+ by carol: not before the launch", detail[-1])
    event = _history(run)[-1]
    assert (event["action"], event["author"], event["request"]) == ("reject_request", "carol", request_id)


def test_no_apply_then_apply(seeded: Cli) -> None:
    run = seeded
    request_id = _request(run, "3")
    held = run.ok("approve", request_id, "--no-apply", "--author", "carol")
    assert held.stdout == (
        f"{NAME}: request {request_id} approved by carol (1/1); move the label with: promptreg apply {request_id}\n"
    )
    assert _production(run) == 1
    assert run.ok("requests", "--id", request_id, "--json").json()["state"] == "approved"
    assert run.fails("apply", request_id) == (
        "error: --author (or PROMPTREG_AUTHOR) is required: approvals compare identities"
    )
    applied = run.ok("apply", request_id, "--author", "carol", "--json").json()
    assert (applied["state"], applied["decided_by"]) == ("applied", "carol") and applied["applied_rev"] > 0
    assert _production(run) == 3
    assert run.fails("apply", request_id, "--author", "carol") == f"error: move request '{request_id}' is applied"


def test_a_label_moved_since_the_request_refuses_the_approval(seeded: Cli) -> None:
    run = seeded
    to_two, to_three = _request(run, "2"), _request(run, "3", "erin")
    run.ok("approve", to_two, "--author", "carol")
    before = run.state()
    message = run.fails("approve", to_three, "--author", "carol")
    assert message == f"error: label 'production' of prompt '{NAME}' points at version 2, expected it at version 1"
    assert run.state() == before  # nothing recorded: no approval, no move
    assert run.ok("requests", "--id", to_three, "--json").json()["approvals"] == []


def test_requests_lists_and_filters(seeded: Cli) -> None:
    run = seeded
    assert run.ok("requests").stdout == "no requests\n"
    assert run.ok("requests", "--json").json() == []
    run.ok("label", NAME, "staging", "1")
    run.ok("protect", NAME, "staging", "--author", "root")
    old = _request(run, "2")
    staging = run.ok("request", NAME, "staging", "production", "--reason", "promote", "--author", "bob").stdout.strip()
    newest = _request(run, "3", "erin", "--expires-in", "600")
    run.ok("reject", old, "--author", "carol")

    listed = run.ok("requests", "--json").json()
    assert [r["id"] for r in listed] == [newest, staging, old]  # newest first
    assert listed[1]["version"] == 1 and listed[1]["label"] == "staging"  # VERSION given as a label
    assert [r["id"] for r in run.ok("requests", "--pending", "--json").json()] == [newest, staging]
    assert [r["id"] for r in run.ok("requests", "--label", "staging", "--json").json()] == [staging]
    filtered = run.ok("requests", "--prompt", NAME, "--pending", "--label", "production", "--json").json()
    assert [r["id"] for r in filtered] == [newest]
    assert run.ok("requests", "--prompt", NAME, "--limit", "1", "--json").json()[0]["id"] == newest
    table = run.ok("requests").stdout.splitlines()
    assert table[0].split() == ["ID", "PROMPT", "LABEL", "MOVE", "STATE", "APPROVALS", "REQUESTED", "BY", "REASON"]
    cells = [line.split() for line in table[1:]]
    assert [(c[0], c[2], " ".join(c[3:6]), c[6], c[7], c[-1]) for c in cells] == [
        (newest, "production", "1 -> 3", "pending", "0/1", "v3"),
        (staging, "staging", "1 -> 1", "pending", "0/1", "promote"),
        (old, "production", "1 -> 2", "rejected", "0/1", "v2"),
    ]
    assert run.ok("requests", "--pending", "--prompt", "nobody").stdout == "no pending requests\n"
    assert run.fails("requests", "--id", "0123456789abcdef") == "error: no move request '0123456789abcdef'"
    assert run.fails("requests", "--id", "nope").startswith("error: invalid request id 'nope'")
    assert "--id takes no other filter" in run.fails("requests", "--id", old, "--pending", code=2)


def test_refusals_of_the_governance_commands(seeded: Cli) -> None:
    run = seeded
    run.ok("label", NAME, "staging", "1")
    assert run.fails("request", NAME, "staging", "2", "--reason", "r", "--author", "bob") == (
        f"error: label 'staging' of prompt '{NAME}' is not protected"
    )
    assert run.fails("request", NAME, "production", "2", "--reason", "r") == (
        "error: --author (or PROMPTREG_AUTHOR) is required: approvals compare identities"
    )
    for command in ("approve", "reject"):
        assert "--author (or PROMPTREG_AUTHOR) is required" in run.fails(command, "0123456789abcdef")
    assert "Missing option '--reason'" in run.fails("request", NAME, "production", "2", "--author", "bob", code=2)
    assert run.fails("request", NAME, "production", "9", "--reason", "r", "--author", "bob").startswith(
        f"error: prompt '{NAME}' has no version 9"
    )
    assert run.fails("request", "nobody", "production", "1", "--reason", "r", "--author", "bob").startswith(
        "error: prompt 'nobody' not found"
    )
    assert run.fails("approve", "0123456789abcdef", "--author", "carol") == "error: no move request '0123456789abcdef'"
    assert "--approvals" in run.fails("protect", NAME, "production", "--approvals", "11", code=2)
    assert run.fails("unprotect", NAME, "staging") == f"error: label 'staging' of prompt '{NAME}' is not protected"
    # PROMPTREG_AUTHOR is the identity too.
    run.env = {**run.env, "PROMPTREG_AUTHOR": "bob"}
    request_id = run.ok("request", NAME, "production", "2", "--reason", "r").stdout.strip()
    assert run.ok("requests", "--id", request_id, "--json").json()["author"] == "bob"
    assert "'bob' made this request" in run.fails("approve", request_id)


def test_unprotect_lets_direct_moves_through_again(seeded: Cli) -> None:
    run = seeded
    done = run.ok("unprotect", NAME, "production", "--author", "root", "--json").json()
    assert (done["action"], done["label"], done["author"]) == ("unprotect_label", "production", "root")
    assert run.ok("label", NAME, "production", "2").stdout == f"{NAME}: label production 1 -> 2\n"
    assert run.ok("show", NAME, "--label", "production").stdout.splitlines()[0] == f"{NAME} version 2  [production]"
    assert "unprotected production" in run.ok("history", NAME).stdout.splitlines()[-2]


# -- the roles `promptreg acl` prints, used by the CLI ------------------------------------------------


def test_acl_prints_four_roles_and_the_postgres_sql() -> None:
    cli = Cli({}, Path("."))
    lines = [line for line in cli.ok("acl").stdout.splitlines() if line.startswith("ACL SETUSER ")]
    assert [line.split()[2] for line in lines] == [
        "promptreg-reader", "promptreg-writer", "promptreg-approver", "promptreg-admin"
    ]  # fmt: skip
    roles = cli.ok("acl", "--json").json()["roles"]
    assert list(roles) == ["reader", "writer", "approver", "admin"]
    assert "'~{promptreg}:gov:*'" in lines[2] and "gov:" not in lines[1] and "adm:" not in lines[1]
    assert cli.ok("acl", "--postgres", "--database", "shop", "--prefix", "shop").stdout == (
        role_sql("shop", "shop") + ("" if role_sql("shop", "shop").endswith("\n") else "\n")
    )
    shown = cli.ok("acl", "--postgres", "--json").json()
    assert shown["sql"] == role_sql() and shown["roles"]["approver"] == "promptreg_approver"
    assert "lower-case SQL identifier" in cli.fails("acl", "--postgres", "--prefix", "x; DROP TABLE y")
    refused = cli.fails("acl", "--postgres", "--redis-version", "7.2", code=2)
    assert "--postgres takes --database and --prefix" in refused
    assert "--database and --prefix go with --postgres" in cli.fails("acl", "--prefix", "shop", code=2)


def _walkthrough(roles: dict[str, Cli]) -> None:
    """The governance workflow with one CLI per store role: what each role may and may not do."""
    admin, writer, approver = roles["admin"], roles["writer"], roles["approver"]
    admin.ok("create", NAME)
    admin.ok("push", NAME, "--label", "production", input="v1 {{movie}}\n")
    admin.ok("push", NAME, input="v2 {{movie}}\n")
    before = admin.state()
    # The writer: no protecting, no direct move, no deciding; every refusal one line, exit 1.
    assert "permission denied" in writer.fails("protect", NAME, "production", "--author", "bob")
    assert admin.state() == before
    admin.ok("protect", NAME, "production", "--author", "root")
    assert "is protected" in writer.fails("label", NAME, "production", "2", "--author", "bob")
    request_id = writer.ok("request", NAME, "production", "2", "--reason", "ship", "--author", "bob").stdout.strip()
    refused = writer.fails("approve", request_id, "--author", "mallory")  # the store refuses the role
    assert "permission denied" in refused, refused
    assert writer.ok("requests", "--id", request_id, "--json").json()["state"] == "pending"
    assert writer.ok("show", NAME, "--label", "production", "--json").json()["version"] == 1
    # The approver decides another identity's request; the label moves.
    assert "'bob' made this request" in approver.fails("approve", request_id, "--author", "bob")
    moved = approver.ok("approve", request_id, "--author", "carol")
    assert moved.stdout == f"{NAME}: request {request_id} approved by carol: label production 1 -> 2\n"
    assert writer.ok("show", NAME, "--label", "production", "--json").json()["version"] == 2


@pytest.mark.redis
def test_the_redis_roles_of_promptreg_acl(redis_server: RedisServer, namespace: str, tmp_path: Path) -> None:
    root = redis_server.client()
    printed = Cli({}, tmp_path).ok("acl", "--namespace", namespace).stdout
    secrets: dict[str, str] = {}
    try:
        for line in (line for line in printed.splitlines() if line.startswith("ACL SETUSER ")):
            secret = uuid.uuid4().hex
            args = shlex.split(line.replace("<password>", secret))
            secrets[args[2].removeprefix(f"{namespace}-")] = secret
            assert root.execute_command(*args) in (b"OK", "OK", True)  # type: ignore[no-untyped-call]
        assert list(secrets) == ["reader", "writer", "approver", "admin"]

        def cli(role: str) -> Cli:
            url = f"redis://{namespace}-{role}:{secrets[role]}@127.0.0.1:{redis_server.port}/0"
            return Cli({"PROMPTREG_URL": url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)

        admin = Cli({"PROMPTREG_URL": redis_server.url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)
        admin.ok("migrate")  # the functions library the users call (loaded by the server's default user)
        _walkthrough({"admin": cli("admin"), "writer": cli("writer"), "approver": cli("approver")})
    finally:
        for role in secrets:
            root.execute_command("ACL", "DELUSER", f"{namespace}-{role}")  # type: ignore[no-untyped-call]
        root.close()


@pytest.mark.postgres
def test_the_postgres_roles_of_promptreg_acl(postgres_server: PostgresServer, namespace: str, tmp_path: Path) -> None:
    owner = Cli({"PROMPTREG_URL": postgres_server.url(), "PROMPTREG_NAMESPACE": namespace}, tmp_path)
    owner.ok("migrate")
    prefix = "c" + namespace
    sql = owner.ok("acl", "--postgres", "--database", "postgres", "--prefix", prefix).stdout
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(sql.encode())
        try:

            def cli(role: str) -> Cli:
                url = f"postgresql://{prefix}_{role}@127.0.0.1:{postgres_server.port}/postgres"
                return Cli({"PROMPTREG_URL": url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)

            _walkthrough({"admin": cli("admin"), "writer": cli("writer"), "approver": cli("approver")})
        finally:
            for role in ("reader", "writer", "approver", "admin"):
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                             (f"{prefix}_{role}",))  # fmt: skip
                conn.execute(f"DROP OWNED BY {prefix}_{role}")
                conn.execute(f"DROP ROLE {prefix}_{role}")
