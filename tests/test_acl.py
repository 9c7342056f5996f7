"""The ACL roles of :mod:`promptreg.registry.redis.acl`, proven on a real redis-server, and ``promptreg acl``'s output.

The three users are created from ``acl_setuser_args`` (the same source ``promptreg acl`` prints), then:
the client goes live as ``reader``, reports its fleet presence, and the server logs no refusal for it;
``reader`` can write its presence keys and nothing else, cannot run a script, PUBLISH or read another
namespace; the CLI's whole workflow runs as ``writer`` once ``admin`` loaded the functions library
(``promptreg migrate``); ``writer`` cannot load or run code of its own (EVAL, EVALSHA, SCRIPT LOAD,
FUNCTION LOAD: ``tests/test_functions.py`` has the rest), touch another namespace nor run the
namespace wipe; ``admin`` can wipe. Every refusal
is checked to have left the stored data unchanged (every key of both namespaces, byte for byte).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from benchmarks._harness import drop_namespace
from promptreg.client import PromptClient
from promptreg.registry import InvalidInputError, InvalidNameError, PromptRegistryError, RedisPromptRegistry
from promptreg.registry.cli import cli
from promptreg.registry.fleet import FleetMember
from promptreg.registry.models import utcnow
from promptreg.registry.redis.acl import (
    ADMIN_COMMANDS,
    PASSWORD_PLACEHOLDER,
    PRESENCE_COMMANDS,
    READER_COMMANDS,
    WRITER_COMMANDS,
    Role,
    acl_rules,
    acl_setuser_args,
    parse_server_version,
    role_rules,
    writer_key_rules,
)
from promptreg.registry.redis.fleet import read_fleet, remove, report
from promptreg.registry.redis.keys import Keyspace
from tests.conftest import need_binaries
from tests.redis_server import RedisServer, free_port, wait_until

LUA_DIR = Path(__file__).resolve().parent.parent / "registry" / "redis" / "lua"
REFUSED = re.compile(r"(?i)noperm|permission|not allowed")


# -- on a real server ---------------------------------------------------------------------------


@dataclass
class Users:
    """The three users of one test's namespace on the shared server, plus a superuser connection."""

    server: RedisServer
    namespace: str
    other: str
    """A second namespace, seeded by the superuser, that no role of ``namespace`` may touch."""
    password: str
    root: redis.Redis

    def user(self, role: Role) -> str:
        return f"{self.namespace}-{role.value}"

    def url(self, role: Role) -> str:
        return f"redis://{self.user(role)}:{self.password}@127.0.0.1:{self.server.port}"

    def conn(self, role: Role) -> redis.Redis:
        return redis.Redis(
            host="127.0.0.1", port=self.server.port, username=self.user(role), password=self.password, socket_timeout=5
        )

    def registry(self, role: Role, namespace: str | None = None) -> RedisPromptRegistry:
        return RedisPromptRegistry.from_url(self.url(role), namespace=namespace or self.namespace)

    def stored(self) -> dict[bytes, Any]:
        """Every key of both namespaces with its type and value (read as the superuser)."""
        out: dict[bytes, Any] = {}
        for namespace in (self.namespace, self.other):
            for key in self.root.scan_iter(match=Keyspace(namespace).prefix + ":*"):
                kind = self.root.type(key)
                readers: dict[bytes, Callable[[bytes], Any]] = {
                    b"string": self.root.get,
                    b"hash": self.root.hgetall,
                    b"set": self.root.smembers,
                    b"stream": self.root.xrange,
                    b"zset": lambda k: self.root.zrange(k, 0, -1, withscores=True),
                }
                out[key] = (kind, readers[kind if isinstance(kind, bytes) else kind.encode()](key))
        return out

    def denials(self, role: Role) -> list[dict[str, Any]]:
        """The server's ACL LOG entries for this role's user."""
        entries: list[dict[str, Any]] = self.root.acl_log()
        return [entry for entry in entries if entry.get("username") == self.user(role)]

    def last_commands(self, role: Role) -> set[str]:
        """The last command of each connection of this role's user (``CLIENT LIST``)."""
        clients: list[dict[str, Any]] = self.root.client_list()
        return {str(c.get("cmd")) for c in clients if c.get("user") == self.user(role)}

    def refused(self, call: Callable[[], object], error: type[Exception] = redis.ResponseError) -> Exception:
        """Run ``call``: it must be refused for lack of permission and change nothing stored."""
        before = self.stored()
        with pytest.raises(error) as caught:
            call()
        assert REFUSED.search(str(caught.value)), caught.value
        assert self.stored() == before
        return caught.value


def _seed(registry: RedisPromptRegistry) -> None:
    registry.create_prompt("critic", description="reviews movies", author="alice")
    registry.add_version("critic", "As a movie critic, do you like {{movie}}?", author="alice")
    registry.add_version("critic", "As a {{level}} movie critic, do you like {{movie}}?", author="bob")
    registry.set_label("critic", "production", 1, author="alice")


@pytest.fixture
def users(redis_server: RedisServer, namespace: str) -> Iterator[Users]:
    root = redis_server.client()
    version = parse_server_version(str(root.info("server")["redis_version"]))
    password = uuid.uuid4().hex
    made = Users(redis_server, namespace, namespace + "-other", password, root)
    for role in Role:
        root.execute_command(*acl_setuser_args(role, namespace, password=password, server_version=version))  # type: ignore[no-untyped-call]
    with RedisPromptRegistry(root, namespace=made.other) as other:
        _seed(other)
    try:
        yield made
    finally:
        root.execute_command("ACL", "DELUSER", *(made.user(role) for role in Role))  # type: ignore[no-untyped-call]
        root.close()


@pytest.mark.redis
def test_client_goes_live_as_reader_and_follows_a_label_move(users: Users) -> None:
    with users.registry(Role.WRITER) as writer:
        _seed(writer)
        client = PromptClient(users.url(Role.READER), namespace=users.namespace, start_timeout=5, poll_interval=0.2)
        try:
            assert client.wait_ready(5), client.status()
            assert client.get("critic").version == 1
            writer.set_label("critic", "production", 2, author="bob")
            assert wait_until(lambda: client.get("critic").version == 2, timeout=5)
            assert client.get("critic", version=1).version == 1  # a pinned version, read through the registry
            # The safety poll (poll_interval=0.2) and the subscriber's PING also run on the reader's rights.
            assert wait_until(lambda: "ping" in users.last_commands(Role.READER), timeout=5)
            assert client.status().state.value == "live", client.status()
            # Its presence reports and acknowledgements run on the reader's rights too.
            assert wait_until(lambda: [m.client_id for m in writer.fleet()] == [client.client_id], timeout=5)
            assert writer.wait_for_fleet(timeout=5).complete
        finally:
            client.close()
        assert writer.fleet() == []  # close() removed its record, as reader
    # The reader was never refused anything: what the client sends is exactly what the role grants.
    assert users.denials(Role.READER) == []


@pytest.mark.redis
def test_reader_cannot_write_run_scripts_publish_or_read_another_namespace(users: Users) -> None:
    with users.registry(Role.WRITER) as writer:
        _seed(writer)
        keys, other = Keyspace(users.namespace), Keyspace(users.other)
        reader = users.conn(Role.READER)
        sha = users.root.script_load("return 1")
        try:
            assert reader.get(keys.label("critic", "production")) == b"1"  # reading its own keys works
            users.refused(lambda: reader.set(keys.label("critic", "production"), 2))
            users.refused(lambda: reader.delete(keys.label("critic", "production")))
            users.refused(lambda: reader.hset(keys.version("critic", 1), "prompt_text", "forged"))
            users.refused(lambda: reader.eval("return redis.call('SET', KEYS[1], 'x')", 1, keys.rev))
            users.refused(lambda: reader.evalsha(sha, 0))
            users.refused(lambda: reader.script_load("return 1"))
            users.refused(lambda: reader.fcall("anything", 0))
            users.refused(lambda: reader.publish(keys.channel, b"\x88forged"))
            users.refused(lambda: reader.get(other.rev))
            users.refused(lambda: reader.hgetall(other.version("critic", 1)))
            users.refused(lambda: reader.xadd(keys.log, {"forged": "1"}))  # no forged audit entries
            users.refused(lambda: reader.scan(match="*"))
            users.refused(lambda: reader.flushdb())
            # Channels: only its own namespace's events.
            assert users.root.acl_dryrun(users.user(Role.READER), "SUBSCRIBE", keys.channel) == b"OK"
            assert REFUSED.search(str(users.root.acl_dryrun(users.user(Role.READER), "SUBSCRIBE", other.channel)))
        finally:
            reader.close()
        # Through the library: a write as reader is a typed error and changes nothing.
        with users.registry(Role.READER) as as_reader:
            users.refused(lambda: as_reader.set_label("critic", "production", 2), PromptRegistryError)
            users.refused(lambda: as_reader.create_prompt("new"), PromptRegistryError)
        with users.registry(Role.READER, users.other) as other_reader:
            users.refused(lambda: other_reader.get_version("critic", version=1), PromptRegistryError)


def _presence(client_id: str) -> FleetMember:
    now = utcnow()
    return FleetMember(
        client_id=client_id, host="h", pid=1, label="production", library_version="t", state="live", rev=1,
        started_at=now, last_seen=now, report_interval=5.0,
    )  # fmt: skip


@pytest.mark.redis
def test_reader_writes_its_presence_keys_and_nothing_else(users: Users) -> None:
    with users.registry(Role.WRITER) as writer:
        _seed(writer)
    keys, other = Keyspace(users.namespace), Keyspace(users.other)
    reader = users.conn(Role.READER)
    try:
        report(reader, keys, _presence("h:1:aa"))  # SET ... PX and ZADD, as the client sends them
        assert [m.client_id for m in read_fleet(reader, keys)] == ["h:1:aa"]
        assert 0 < users.root.pttl(keys.member("h:1:aa")) <= 15_000
        remove(reader, keys, "h:1:aa")
        assert read_fleet(reader, keys) == []
        # The same commands on any other key of its namespace, or on another namespace's fleet: refused.
        users.refused(lambda: reader.set(keys.label("critic", "production"), 2))
        users.refused(lambda: reader.set(keys.rev, 99))
        users.refused(lambda: reader.delete(keys.version("critic", 1)))
        users.refused(lambda: reader.set(keys.prefix + ":fleetish", 1))
        users.refused(lambda: reader.zadd(keys.index_latest, {"critic": 9}))
        users.refused(lambda: report(reader, other, _presence("h:1:aa")))
        # ... and other write commands on its presence keys.
        users.refused(lambda: reader.hset(keys.member("h:1:bb"), "rev", 1))
        users.refused(lambda: reader.append(keys.member("h:1:bb"), "x"))
        users.refused(lambda: reader.rename(keys.fleet, keys.member("h:1:cc")))
    finally:
        reader.close()


@pytest.mark.redis
def test_roles_hold_no_command_the_server_calls_write_scripting_or_dangerous(users: Users) -> None:
    """The server's own command categories judge the reader: no scripting, no PUBLISH, and the only
    writes are the presence commands (allowed on the presence keys alone: the test above)."""

    def category(name: str) -> set[str]:
        return {raw.decode() if isinstance(raw, bytes) else str(raw) for raw in users.root.acl_cat(name)}

    rules = acl_rules(users.namespace)
    reader = {rule[1:] for rule in rules["reader"] if rule.startswith("+")}
    writer = {rule[1:] for rule in rules["writer"] if rule.startswith("+")}
    assert reader & category("scripting") == set()
    assert reader & category("write") == set(PRESENCE_COMMANDS) & category("write") == {"set", "zadd", "del", "zrem",
                                                                                        "zremrangebyscore"}  # fmt: skip
    assert reader & {"publish", "spublish", "eval", "evalsha", "fcall", "function", "script|load"} == set()
    # The writer calls the functions an admin loaded, and runs no code of its own.
    assert writer & category("scripting") == {"fcall"}
    assert writer & {"eval", "evalsha", "script|load", "function|load"} == set()
    assert (reader | writer) & category("dangerous") == {"info", "role"} & category("dangerous")
    assert {"scan", "unlink", "keys", "flushdb", "flushall"} & writer == set()


@pytest.mark.redis
def test_cli_works_as_writer(users: Users, tmp_path: Path) -> None:
    users.root.function_flush()  # a server without this release's library: the writer may not load it
    env = {"PROMPTREG_URL": users.url(Role.WRITER), "PROMPTREG_NAMESPACE": users.namespace}

    def run(*args: str, input: str | None = None, role: Role = Role.WRITER) -> str:
        result = CliRunner().invoke(cli, list(args), input=input, env={**env, "PROMPTREG_URL": users.url(role)},
                                    catch_exceptions=False)  # fmt: skip
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
        assert users.password not in result.stdout + result.stderr
        return result.stdout

    refused = CliRunner().invoke(cli, ["create", "critic"], env=env, catch_exceptions=False)
    assert refused.exit_code != 0 and "promptreg migrate" in refused.output, refused.output
    assert "loaded the Redis functions library" in run("migrate", role=Role.ADMIN)
    users.root.acl_log_reset()
    run("create", "critic", "--description", "reviews movies", "--author", "ci")
    run("push", "critic", "--author", "ci", "-m", "first", input="As a movie critic, do you like {{movie}}?\n")
    run("push", "critic", "--author", "ci", "--label", "staging", input="Do you like {{movie}}?\n")
    run("label", "critic", "production", "1", "--author", "ci")
    run("label", "critic", "production", "2", "--expect", "1", "--author", "ci")
    run("rollback", "critic", "production", "--author", "ci", "--reason", "too short")
    assert json.loads(run("show", "critic", "--label", "production", "--json"))["version"] == 1
    actions = [event["action"] for event in json.loads(run("history", "critic", "--json"))]
    assert actions == ["create_prompt", "add_version", "add_version", "set_label", "set_label", "set_label", "rollback"]
    assert "critic" in run("list")
    export = tmp_path / "export.json"
    run("export", str(export))
    assert [prompt["name"] for prompt in json.loads(export.read_text())["prompts"]] == ["critic"]
    assert users.denials(Role.WRITER) == []


@pytest.mark.redis
def test_writer_cannot_touch_another_namespace_nor_wipe_its_own(users: Users) -> None:
    with users.registry(Role.WRITER) as writer:
        _seed(writer)
    other = Keyspace(users.other)
    conn = users.conn(Role.WRITER)
    try:
        users.refused(lambda: conn.get(other.rev))
        users.refused(lambda: conn.set(other.label("critic", "production"), 2))
        users.refused(lambda: conn.delete(other.prompt("critic")))
        users.refused(lambda: conn.publish(other.channel, b"forged"))
        users.refused(lambda: conn.eval("return 1", 0))  # no code of its own: only FCALL of the loaded library
        users.refused(lambda: conn.script_load("return 1"))
        users.refused(lambda: conn.evalsha(users.root.script_load("return 1"), 0))
        users.refused(lambda: conn.function_load("#!lua name=mine\nredis.register_function('mine', function() end)"))
        users.refused(lambda: conn.flushdb())
        users.refused(lambda: conn.keys("*"))
        users.refused(lambda: drop_namespace(users.url(Role.WRITER), users.namespace))  # SCAN is admin-only
    finally:
        conn.close()
    # The registry's scripts, pointed at another namespace, are refused before they change anything.
    with users.registry(Role.WRITER, users.other) as elsewhere:
        users.refused(lambda: elsewhere.set_label("critic", "production", 2), PromptRegistryError)
        users.refused(lambda: elsewhere.create_prompt("intruder"), PromptRegistryError)
        users.refused(lambda: elsewhere.history("critic"), PromptRegistryError)


@pytest.mark.redis
def test_admin_wipes_its_namespace_and_nothing_else(users: Users) -> None:
    with users.registry(Role.ADMIN) as admin:
        _seed(admin)
    before_other = {key: value for key, value in users.stored().items() if key.startswith(b"{" + users.other.encode())}
    assert drop_namespace(users.url(Role.ADMIN), users.namespace) > 0
    assert users.stored() == before_other
    assert users.denials(Role.ADMIN) == []


# -- the docs' set-up, verbatim, on a real server -----------------------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "security.md"
PROMPTREG = Path(sys.executable).with_name("promptreg")


def _docs_setup_loop() -> str:
    """The bash block of docs/security.md that creates the four users with `promptreg acl | ... | redis-cli`."""
    blocks = re.findall(r"```bash\n(.*?)```", DOCS.read_text("utf-8"), flags=re.S)
    loops = [block for block in blocks if "for role in reader writer approver admin" in block]
    assert len(loops) == 1, "docs/security.md: the ACL set-up loop is gone or doubled"
    return str(loops[0])


def _shell(script: str, cwd: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in bash as a user would: ``promptreg`` and ``redis-cli`` on PATH, no PROMPTREG_*."""
    need_binaries("redis-cli")
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (the docs' loop makes the secrets with it)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("PROMPTREG_")}
    env["PATH"] = f"{PROMPTREG.parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", script], env={**env, **variables}, cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _url(server: RedisServer, user: str, password: str) -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


@pytest.mark.redis
def test_the_security_docs_loop_creates_users_that_work(private_redis_server: RedisServer, tmp_path: Path) -> None:
    """The loop of docs/security.md, run verbatim, on the installed Redis (7.0 on Debian 12): every ACL
    SETUSER line is accepted, and each user connects with redis-py and does its job, no more."""
    server = private_redis_server
    root = server.client()
    version = str(root.info("server")["redis_version"])

    done = _shell(_docs_setup_loop(), tmp_path, ADMIN_URL=server.url)

    found = re.findall(r"^promptreg-(reader|writer|approver|admin): ([0-9a-f]{64})$", done.stdout, flags=re.M)
    secrets = {role: secret for role, secret in found if role != "approver"}  # approver: test_cli_governance
    replies = [line for line in done.stdout.splitlines() if not line.startswith("promptreg-")]
    assert replies[:4] == ["OK"] * 4, f"Redis {version} refused a line of `promptreg acl`: {done}"
    assert len(replies) == 5 and "loaded the Redis functions library" in replies[4], done  # promptreg migrate
    assert len(found) == 4 and sorted(secrets) == ["admin", "reader", "writer"] and len({s for _, s in found}) == 4
    urls = {role: _url(server, f"promptreg-{role}", secret) for role, secret in secrets.items()}
    keys = Keyspace("promptreg")

    # writer: the CLI's workflow (scripts, PUBLISH) on the default namespace.
    env = {"PROMPTREG_URL": urls["writer"], "PROMPTREG_NAMESPACE": ""}
    for args, stdin in (
        (["create", "critic"], None),
        (["push", "critic", "--label", "production"], "Do you like {{movie}}?\n"),
        (["push", "critic"], "Do you like {{movie}}, {{name}}?\n"),
        (["label", "critic", "staging", "2"], None),
    ):
        result = CliRunner().invoke(cli, args, input=stdin, env=env, catch_exceptions=False)
        assert result.exit_code == 0, (args, result.stdout, result.stderr)
    # reader: a PromptClient goes live and follows a label move.
    client = PromptClient(urls["reader"], start_timeout=5, poll_interval=0.2)
    try:
        assert client.wait_ready(5), client.status()
        assert client.get("critic").version == 1
        with RedisPromptRegistry.from_url(urls["writer"]) as writer:
            writer.set_label("critic", "production", 2)
        assert wait_until(lambda: client.get("critic").version == 2, timeout=5)
    finally:
        client.close()
    # Nothing a role needs was refused; on Redis >= 7.2 redis-py's CLIENT SETINFO is (and redis-py ignores it).
    log: list[dict[str, Any]] = root.acl_log()
    refused = {str(entry.get("object")) for entry in log if str(entry.get("username")).startswith("promptreg-")}
    assert refused <= ({"client|setinfo"} if parse_server_version(version) >= (7, 2) else set()), log

    # ... and what a role must not do is refused, changing nothing.
    def stored() -> dict[bytes, bytes]:
        return {key: root.dump(key) or b"" for key in root.scan_iter(match="{promptreg}:*")}

    before = stored()
    reader, writer_conn = redis.Redis.from_url(urls["reader"]), redis.Redis.from_url(urls["writer"])
    try:
        for call in (
            lambda: reader.set(keys.label("critic", "production"), 1),
            lambda: reader.publish(keys.channel, b"forged"),
            lambda: reader.evalsha(root.script_load("return 1"), 0),
            lambda: writer_conn.eval("return 1", 0),
            lambda: writer_conn.script_load("return 1"),
            lambda: writer_conn.scan(match="*"),
            lambda: writer_conn.flushdb(),
        ):
            with pytest.raises(redis.ResponseError, match=REFUSED):
                call()
    finally:
        reader.close()
        writer_conn.close()
    assert stored() == before
    # admin: the namespace wipe.
    assert drop_namespace(urls["admin"], "promptreg") > 0
    assert list(root.scan_iter(match="{promptreg}:*")) == []
    root.close()


@pytest.mark.redis
@pytest.mark.parametrize("where", ["after", "before"])
def test_acl_url_reads_the_server_version(redis_server: RedisServer, namespace: str, where: str) -> None:
    """`promptreg acl --url URL` (or `promptreg --url URL acl`) writes the rules for that server's
    version; the server accepts them and a user connecting with redis-py is refused nothing."""
    root = redis_server.client()
    version = parse_server_version(str(root.info("server")["redis_version"]))
    url = _url(redis_server, "default", "any")  # the default user has no password: any is accepted
    args = ["acl", "--namespace", namespace, "--url", url] if where == "after" else ["--url", url, "acl"]
    env = {"PROMPTREG_NAMESPACE": namespace}

    code, text, err = _invoke(*args, env=env)
    _, raw, _ = _invoke(*args, "--json", env=env)

    assert code == 0 and err == "", err
    assert "any@" not in text and f"Redis {version[0]}.{version[1]} (from the server at redis://default:***@" in text
    assert {name: role["rules"] for name, role in json.loads(raw)["roles"].items()} == acl_rules(
        namespace, server_version=version
    )
    password = uuid.uuid4().hex
    lines = [shlex.split(line) for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    try:
        for line in lines:
            reply = root.execute_command(*(arg.replace(PASSWORD_PLACEHOLDER, password) for arg in line))  # type: ignore[no-untyped-call]
            assert reply in (b"OK", "OK", True)
        reader = redis.Redis(
            host="127.0.0.1", port=redis_server.port, username=f"{namespace}-reader", password=password
        )
        assert reader.ping() and reader.get(Keyspace(namespace).rev) is None
        reader.close()
        log: list[dict[str, Any]] = root.acl_log()
        assert [entry for entry in log if entry.get("username") == f"{namespace}-reader"] == []
    finally:
        root.execute_command("ACL", "DELUSER", *(line[2] for line in lines))  # type: ignore[no-untyped-call]
        root.close()


# -- without a server ----------------------------------------------------------------------------


def test_scripts_run_only_commands_the_writer_has() -> None:
    """Redis 7 checks every command a script runs against the caller's ACL: keep them in step."""
    called = {
        command.lower()
        for path in LUA_DIR.glob("*.lua")
        for command in re.findall(r"redis\.call\(\s*'([A-Za-z]+)'", path.read_text("utf-8"))
    }
    assert called, "no redis.call found: has the scripts' style changed?"
    writer = {rule[1:] for rule in acl_rules()["writer"] if rule.startswith("+")}
    assert called <= writer, called - writer


def test_roles_nest_and_use_the_namespace_hash_tag() -> None:
    rules = acl_rules("shop")
    assert rules["reader"][:4] == ["%R~{shop}:*", "&{shop}:events", "%W~{shop}:fleet", "%W~{shop}:fleet:*"]
    assert rules["admin"][:2] == ["~{shop}:*", "&{shop}:events"]
    # The writer reads the namespace and writes all but {shop}:gov:* and {shop}:adm:* (protected labels).
    assert rules["writer"][0] == "%R~{shop}:*" and "&{shop}:events" in rules["writer"]
    written = [rule[1:] for rule in rules["writer"] if rule.startswith("~")]
    assert written and all(rule.startswith("{shop}:") for rule in written)
    assert not any(
        fnmatch.fnmatchcase(key, rule) for rule in written for key in ("{shop}:gov:ix", "{shop}:adm:protected")
    )
    keys = writer_key_rules("shop")
    assert rules["approver"] == [*keys, "~{shop}:gov:*", *rules["writer"][len(keys) :]]

    def grants(role: str) -> set[str]:
        return {rule for rule in rules[role] if rule.startswith("+")}

    assert grants("reader") < grants("writer") == grants("approver") < grants("admin")
    assert {f"+{c}" for c in READER_COMMANDS + WRITER_COMMANDS + ADMIN_COMMANDS} <= set(rules["admin"])
    # By default the rules every Redis >= 7.0 accepts: CLIENT SETINFO (7.2+) only when asked for.
    assert "+client|setinfo" not in rules["reader"]
    assert rules == acl_rules("shop", server_version=(7, 0)) == acl_rules("shop", server_version=(7, 1))
    for version in ((7, 2), (7, 4), (8, 0)):
        assert acl_rules("shop", server_version=version)["reader"][:6] == [*rules["reader"][:5], "+client|setinfo"]
    assert [r.user for r in role_rules()] == [
        "promptreg-reader", "promptreg-writer", "promptreg-approver", "promptreg-admin",
    ]  # fmt: skip


def test_setuser_args_start_from_a_clean_user() -> None:
    args = acl_setuser_args("reader", "shop", password="s3cret", user="svc")
    assert args[:7] == ["ACL", "SETUSER", "svc", "reset", "resetchannels", "on", ">s3cret"]
    assert args[7:] == acl_rules("shop")["reader"]


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda: acl_rules("bad ns"), InvalidNameError),
        (lambda: acl_rules("bad*ns"), InvalidNameError),
        (lambda: acl_setuser_args("root"), InvalidInputError),
        (lambda: acl_setuser_args("reader", password=""), InvalidInputError),
        (lambda: acl_setuser_args("reader", user="two words"), InvalidInputError),
        (lambda: acl_rules(server_version=(6, 2)), InvalidInputError),
        (lambda: parse_server_version("6.2.14"), InvalidInputError),
        (lambda: parse_server_version("latest"), InvalidInputError),
    ],
)
def test_bad_arguments_are_typed_errors(call: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        call()


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def test_text_and_json_outputs_carry_the_same_rules() -> None:
    code, text, _ = _invoke("acl", "--namespace", "shop")
    assert code == 0
    code, raw, _ = _invoke("acl", "--namespace", "shop", "--json")
    assert code == 0
    data = json.loads(raw)
    lines = [shlex.split(line) for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    assert lines == [role["acl_setuser"] for role in data["roles"].values()]
    assert {name: role["rules"] for name, role in data["roles"].items()} == acl_rules("shop")
    assert [line[2] for line in lines] == ["shop-reader", "shop-writer", "shop-approver", "shop-admin"]
    assert all(f">{PASSWORD_PLACEHOLDER}" in line for line in lines)
    assert data["password_placeholder"] == PASSWORD_PLACEHOLDER


def test_acl_command_follows_the_global_namespace_and_never_prints_the_url_password() -> None:
    env = {"PROMPTREG_URL": "redis://ci:hunter2-secret@127.0.0.1:1/0", "PROMPTREG_NAMESPACE": "team.a"}
    code, text, err = _invoke("acl", env=env)
    assert code == 0
    assert "'%R~{team.a}:*'" in text and "team.a-writer" in text
    assert "hunter2" not in text + err
    code, text, _ = _invoke("acl", "--redis-version", "7.0.15", "--json", env=env)
    assert "+client|setinfo" not in json.loads(text)["roles"]["reader"]["rules"]
    code, text, _ = _invoke("acl", "--redis-version", "7.2", "--json", env=env)
    assert "+client|setinfo" in json.loads(text)["roles"]["reader"]["rules"]


def test_acl_command_prints_rules_every_redis_7_accepts_by_default() -> None:
    """Redis 7.0 refuses a whole ACL SETUSER line naming `client|setinfo` (7.2+): the default leaves it out."""
    code, text, _ = _invoke("acl")
    assert code == 0
    lines = [line for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    assert len(lines) == 4 and not any("setinfo" in line for line in lines)
    code, raw, _ = _invoke("acl", "--json")
    assert json.loads(raw)["redis_version"] == "7.0"
    assert {name: role["rules"] for name, role in json.loads(raw)["roles"].items()} == acl_rules(server_version=(7, 0))


def test_acl_command_refuses_bad_input_in_one_line() -> None:
    code, _, err = _invoke("acl", "--namespace", "no way")
    assert code == 1 and err.count("\n") == 1 and err.startswith("error: ")
    code, _, err = _invoke("acl", "--redis-version", "6.2")
    assert code == 1 and "7.0" in err
    code, _, err = _invoke("acl", "--url", "file://registry.json")
    assert code == 1 and err == "error: not a Redis URL: 'file://registry.json' (use redis://, rediss:// or unix://)\n"
    code, out, err = _invoke("acl", "--url", f"redis://admin:hunter2-secret@127.0.0.1:{free_port()}/0")
    assert code == 1 and out == "" and err.startswith("error: redis is unreachable") and err.count("\n") == 1
    assert "hunter2" not in err


def test_security_doc_shows_the_commands_promptreg_acl_prints() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "security.md").read_text("utf-8")
    _, text, _ = _invoke("acl")
    lines = [line for line in text.splitlines() if line.startswith("ACL SETUSER ")]
    assert len(lines) == 4
    for line in lines:
        assert line in doc, f"docs/security.md is out of date; run `promptreg acl` and paste:\n{line}"


def test_writer_moves_partials_and_a_reader_is_served_the_composition(users: Users) -> None:
    with users.registry(Role.WRITER) as writer:
        writer.create_prompt("preamble")
        writer.add_version("preamble", "Be kind.")
        writer.add_version("preamble", "Be very kind.")
        writer.set_label("preamble", "production", 1)
        writer.create_prompt("bot")
        writer.add_version("bot", "{{> preamble}} Answer {{q}}.")
        writer.set_label("bot", "production", 1)
        with PromptClient(users.url(Role.READER), namespace=users.namespace) as client:
            assert client.wait_ready(5)
            assert client.get("bot").prompt_text == "Be kind. Answer {{q}}."
            writer.set_label("preamble", "production", 2)  # the graph check's reads, then the guarded script
            assert wait_until(lambda: client.get("bot").prompt_text == "Be very kind. Answer {{q}}.", timeout=5)
        assert writer.dependents("preamble") == {"bot": {"production": 1}}
