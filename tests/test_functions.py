"""The write scripts as a Redis Functions library: the writer runs no code of its own.

On a real redis-server with the ACL users of :mod:`promptreg.registry.redis.acl`: the writer's SCRIPT LOAD, EVAL,
EVALSHA and FUNCTION LOAD are refused and change nothing; before the library is loaded a writer's
write is a typed error naming the admin command, and changes nothing; after ``promptreg migrate`` as
admin the writer does every write by FCALL; the default user loads a missing library itself; two
releases' libraries live side by side; on a cluster the library reaches every primary.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from click.testing import CliRunner

from promptreg.registry import (
    LabelConflictError,
    RedisPromptRegistry,
    RegistryAuthError,
    RegistryCorruptError,
    ReplicationTimeoutError,
)
from promptreg.registry.cli import cli
from promptreg.registry.redis.acl import Role, acl_setuser_args, parse_server_version
from promptreg.registry.redis.calls import (
    AddVersion,
    CreatePrompt,
    DeleteLabel,
    IndexPrompts,
    Reply,
    RollbackLabel,
    RolloutCall,
    ScriptCall,
    SetCompatibility,
    SetLabel,
)
from promptreg.registry.redis.governance_calls import DecideRequest, ProtectLabel, RequestMove
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.records import REFUSALS, refusal
from promptreg.registry.redis.scripts import SCRIPTS, FunctionLibrary, WriteFunctions, load_library, write_library
from tests.ha_servers import ClusterDeployment
from tests.redis_server import RedisServer

REFUSED = re.compile(r"(?i)noperm|permission")
LOOP = "local n = 0 for i = 1, 1e9 do n = n + i end return n"  # blocks the server for seconds


@dataclass
class Server:
    """A fresh server (no library loaded yet) with the three users of ``namespace``."""

    server: RedisServer
    namespace: str
    password: str
    root: redis.Redis

    def url(self, role: Role) -> str:
        return f"redis://{self.namespace}-{role.value}:{self.password}@127.0.0.1:{self.server.port}/0"

    def conn(self, role: Role) -> redis.Redis:
        return redis.Redis.from_url(self.url(role), socket_timeout=5)

    def registry(self, role: Role) -> RedisPromptRegistry:
        return RedisPromptRegistry.from_url(self.url(role), namespace=self.namespace)

    def state(self) -> tuple[dict[bytes, bytes], Any, list[Any]]:
        """Every key (DUMP), the loaded libraries and the script cache's answer for LOOP: what a refusal must keep."""
        keys = {key: self.root.dump(key) or b"" for key in self.root.scan_iter()}
        sha = redis.Redis.register_script(self.root, LOOP).sha
        return keys, _libraries(self.root, withcode=True), self.root.script_exists(sha)

    def libraries(self) -> set[str]:
        return set(_libraries(self.root))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: Any) -> dict[str, Any]:
    """A RESP2 flat ``[name, value, ...]`` reply (or a RESP3 map) as a dict with text keys."""
    items = flat.items() if isinstance(flat, dict) else zip(flat[::2], flat[1::2], strict=True)
    return {_text(key): value for key, value in items}


def _libraries(conn: Any, *, withcode: bool = False) -> dict[str, dict[str, Any]]:
    """``FUNCTION LIST``: each library's fields by its name (``functions`` as a list of dicts)."""
    out = {}
    for raw in conn.function_list(withcode=withcode):
        library = _pairs(raw)
        library["functions"] = [_pairs(function) for function in library["functions"]]
        out[_text(library["library_name"])] = library
    return out


@pytest.fixture
def fresh(private_redis_server: RedisServer, namespace: str) -> Iterator[Server]:
    root = private_redis_server.client()
    version = parse_server_version(str(root.info("server")["redis_version"]))
    password = uuid.uuid4().hex
    for role in Role:
        root.execute_command(*acl_setuser_args(role, namespace, password=password, server_version=version))  # type: ignore[no-untyped-call]
    try:
        yield Server(private_redis_server, namespace, password, root)
    finally:
        root.close()


def _every_write(reg: RedisPromptRegistry) -> list[str]:
    """Each kind of write once; the actions of the prompt's history."""
    reg.create_prompt("critic", author="ci")
    reg.add_version("critic", "Do you like {{movie}}?", author="ci")
    reg.add_version("critic", "Do you like {{movie}}, really?", author="ci")
    reg.set_label("critic", "production", 1, author="ci")
    reg.set_label("critic", "production", 2, expected_version=1, author="ci")
    reg.rollback("critic", "production", author="ci", reason="bad")
    reg.set_label("critic", "staging", 2)
    reg.delete_label("critic", "staging", expected_version=2)
    reg.set_compatibility("critic", "backward", author="ci")
    return [event.action for event in reg.history("critic")]


EVERY_ACTION = ["create_prompt", "add_version", "add_version", "set_label", "set_label", "rollback", "set_label",
                "delete_label", "set_compatibility"]  # fmt: skip


@pytest.mark.redis
def test_the_writer_can_neither_load_nor_run_code_of_its_own(fresh: Server) -> None:
    fresh.root.function_load(write_library().code)  # even with the library there: nothing but FCALL
    writer = fresh.conn(Role.WRITER)
    sha = redis.Redis.register_script(fresh.root, LOOP).sha
    own_library = f"#!lua name=mine\nredis.register_function('mine', function() {LOOP} end)"
    try:
        for call in (
            lambda: writer.script_load(LOOP),
            lambda: writer.eval(LOOP, 0),
            lambda: writer.evalsha(sha, 0),
            lambda: writer.function_load(own_library),
            lambda: writer.function_load(own_library, replace=True),
            lambda: writer.execute_command("FUNCTION", "DELETE", write_library().name),  # type: ignore[no-untyped-call]
            lambda: writer.execute_command("FUNCTION", "FLUSH"),  # type: ignore[no-untyped-call]
        ):
            before = fresh.state()
            with pytest.raises(redis.ResponseError, match=REFUSED):
                call()
            assert fresh.state() == before
    finally:
        writer.close()
    assert fresh.libraries() == {write_library().name}


@pytest.mark.redis
def test_a_writer_before_the_library_is_loaded_is_told_to_run_migrate_as_admin(fresh: Server) -> None:
    before = fresh.state()
    with fresh.registry(Role.WRITER) as writer:
        with pytest.raises(RegistryAuthError) as caught:
            writer.create_prompt("critic")
        assert "promptreg migrate" in str(caught.value) and "admin" in str(caught.value)
        assert write_library().name in str(caught.value) and fresh.password not in str(caught.value)
        assert fresh.state() == before  # nothing written, nothing loaded
        with pytest.raises(RegistryAuthError, match="promptreg migrate"):
            writer.migrate()  # migrate loads the library: the writer may not
        assert fresh.state() == before
        # The admin's command loads it; the writer then does every write, by FCALL.
        env = {"PROMPTREG_URL": fresh.url(Role.ADMIN), "PROMPTREG_NAMESPACE": fresh.namespace}
        done = CliRunner().invoke(cli, ["migrate"], env=env, catch_exceptions=False)
        assert done.exit_code == 0, done.output
        assert f"loaded the Redis functions library {write_library().name}" in done.output
        assert fresh.libraries() == {write_library().name}
        assert _every_write(writer) == EVERY_ACTION
    assert fresh.registry(Role.READER).get_prompt("critic").labels == {"production": 1}  # type: ignore[union-attr]
    assert [e for e in fresh.root.acl_log() if _text(e.get("username")) == f"{fresh.namespace}-writer"] != []
    fresh.root.acl_log_reset()
    with fresh.registry(Role.WRITER) as writer:  # a second writer process: no refusal at all
        writer.set_label("critic", "production", 2)
    assert fresh.root.acl_log() == []


@pytest.mark.redis
def test_the_default_user_loads_a_missing_library_itself(fresh: Server) -> None:
    with RedisPromptRegistry(fresh.root, namespace=fresh.namespace) as reg:
        assert fresh.libraries() == set()
        assert _every_write(reg) == EVERY_ACTION
        assert fresh.libraries() == {write_library().name}
        assert not reg.load_functions()  # already there: kept, not replaced
        fresh.root.function_flush()  # e.g. a restart without persistence
        reg.set_label("critic", "production", 2)
        assert reg.get_version("critic", label="production").version == 2


@pytest.mark.redis
def test_a_missing_library_is_loaded_and_the_write_waits_for_replicas_once(fresh: Server) -> None:
    # With wait_replicas the FCALL and WAIT share a pipeline: the "Function not found" comes back
    # from the pipeline, and the write runs exactly once after the load.
    with RedisPromptRegistry.from_url(fresh.server.url, namespace=fresh.namespace) as reg:
        reg.create_prompt("critic")
    fresh.root.function_flush()
    url = f"{fresh.server.url}?wait_replicas=1&wait_timeout=0.05"
    with RedisPromptRegistry.from_url(url, namespace=fresh.namespace) as reg:
        with pytest.raises(ReplicationTimeoutError) as caught:
            reg.add_version("critic", "Hello")
        assert caught.value.event.version == 1  # type: ignore[attr-defined]
        assert [v.version for v in reg.get_prompt("critic").versions] == [1]  # type: ignore[union-attr]


def _release(name: str) -> FunctionLibrary:
    """Another release's library: the same scripts under another hash (as a release that changed them)."""
    current = write_library()
    return FunctionLibrary(name, current.code.replace(current.name, name))


@pytest.mark.redis
def test_two_releases_libraries_live_side_by_side(fresh: Server) -> None:
    old = _release("promptreg_0ld0ld00")
    assert load_library(fresh.root, old) and fresh.libraries() == {old.name}
    with fresh.registry(Role.ADMIN) as admin:
        assert admin.load_functions()  # the new release's, next to the old one
        assert not admin.load_functions()
    assert fresh.libraries() == {old.name, write_library().name}
    listed = _libraries(fresh.root, withcode=True)
    assert _text(listed[old.name]["library_code"]) == old.code  # never replaced
    for library in (old, write_library()):
        names = {_text(f["name"]) for f in listed[library.name]["functions"]}
        assert names == {library.function(script) for script in SCRIPTS}
    # Writers of both releases write the same registry, each through its own library.
    with fresh.registry(Role.WRITER) as new_writer, fresh.registry(Role.WRITER) as old_writer:
        old_writer._functions = WriteFunctions(old_writer.redis, old)
        new_writer.create_prompt("critic")
        old_writer.add_version("critic", "one")
        new_writer.add_version("critic", "two")
        old_writer.set_label("critic", "production", 2, expected_version=0)
        assert [e.action for e in new_writer.history("critic")] == ["create_prompt", "add_version", "add_version",
                                                                    "set_label"]  # fmt: skip
        assert new_writer.get_version("critic", label="production").prompt_text == "two"


def test_the_library_is_named_after_its_sources_and_runs_on_fakeredis() -> None:
    library = write_library()
    assert re.fullmatch(r"promptreg_[0-9a-f]{8}", library.name)
    assert library.code.startswith(f"#!lua name={library.name}\n")
    assert all(f"function_name = '{library.function(script)}'" in library.code for script in SCRIPTS)
    conn = fakeredis.FakeRedis()
    with RedisPromptRegistry(conn, namespace="fake") as reg:
        assert _every_write(reg) == EVERY_ACTION
        assert set(_libraries(conn)) == {library.name}


@pytest.mark.redis
def test_on_a_cluster_the_library_is_loaded_on_every_primary(redis_cluster: ClusterDeployment, namespace: str) -> None:
    def libraries(node: int) -> set[str]:
        with redis_cluster.nodes[node].client() as conn:
            return set(_libraries(conn))

    with RedisPromptRegistry.from_url(redis_cluster.url(), namespace=namespace) as reg:
        reg.load_functions()
        owner = redis_cluster.owner_of(reg.keys.rev)
        flushed = next(i for i, node in enumerate(redis_cluster.nodes) if node is not owner)
        with redis_cluster.nodes[flushed].client() as conn:  # one primary lost it (restarted without persistence)
            conn.function_flush()
        assert write_library().name not in libraries(flushed)
        assert reg.load_functions()  # missing somewhere: loaded there, kept elsewhere
        assert all(write_library().name in libraries(i) for i in range(len(redis_cluster.nodes)))
        for i in range(len(redis_cluster.nodes)):
            with redis_cluster.nodes[i].client() as conn:
                conn.function_flush()
        assert _every_write(reg) == EVERY_ACTION  # the first write loaded it again, on every primary
        assert all(write_library().name in libraries(i) for i in range(len(redis_cluster.nodes)))


def test_every_refusal_a_script_returns_has_one_typed_error() -> None:
    lua = Path(__file__).resolve().parent.parent / "registry" / "redis" / "lua"
    codes = {
        code.encode()
        for path in lua.glob("*.lua")
        for code in re.findall(r"\{'ERR', '([A-Z]+)'", path.read_text("utf-8"))
    }
    assert codes == set(REFUSALS)
    assert isinstance(refusal("p", "production", [b"ERR", b"CONFLICT", 3], expected=2), LabelConflictError)
    assert refusal("p", "production", [b"ERR", b"CONFLICT", 3], expected=2).actual == 3  # type: ignore[attr-defined]
    unknown = refusal("p", None, [b"ERR", b"SOMETHING-NEW"])
    assert isinstance(unknown, RegistryCorruptError) and "SOMETHING-NEW" in str(unknown)


def _documented(script: str) -> tuple[int, int]:
    """How many KEYS and ARGV the script's header documents by number."""
    source = (Path(__file__).resolve().parent.parent / "registry" / "redis" / "lua" / f"{script}.lua").read_text()
    keys = {int(n) for n in re.findall(r"^-- KEYS\[(\d+)\]", source, re.M)}
    args = {int(n) for n in re.findall(r"^-- ARGV\[(\d+)\]", source, re.M)}
    return max(keys), max(args)


def test_every_typed_call_passes_what_its_script_documents() -> None:
    ks = Keyspace("t")
    head = b"h"
    calls: list[ScriptCall] = [
        CreatePrompt(ks, "p", None, None, "2026-01-01T00:00:00+00:00", head, "none"),
        AddVersion(ks, "p", 1, "text", None, "at", None, b"\x80", "0" * 64, head, ("", "", "", ""), b"\x90"),
        SetLabel(ks, "p", "production", 1, None, "at", None, None, head, False, 0),
        DeleteLabel(ks, "p", "production", None, "at", None, None, head),
        RollbackLabel(ks, "p", "production", "at", None, None, head, False, 1, 2),
        SetCompatibility(ks, "p", "full", "at", None, None, head),
        RolloutCall(ks, "start_rollout", "p", "production", 2, 1, 1000, "at", None, None, head, False),
        ProtectLabel(ks, "p", "production", 2, "at", None, None, head),
        RequestMove(ks, "p", "production", 2, "0" * 16, "{}", 1, "at", "ana", "r", head, 1, 1),
        DecideRequest(ks, "p", "production", "0" * 16, "{}", "{}", 1, "approve_request", "at", "bo", None, head, 2, 1),
    ]
    assert {call.script for call in calls} | {IndexPrompts.script} == set(SCRIPTS)
    for call in calls:
        keys, args = _documented(call.script)
        # + {ns}:ix:graph and {ns}:revid in KEYS; + {ns}:adm:protected, the graph guard's two, the
        # write id and the publish command in ARGV (_commit.lua)
        assert (len(call.script_keys()) + 2, len(call.script_args()) + 5) == (keys, args), call.script
        assert all(key.startswith("{t}:") for key in call.script_keys()), call.script  # one slot: the hash tag
    assert SetLabel.reply([b"OK", 7, 2, b"1"]) == Reply(7, previous=2, forced=True)
    assert RollbackLabel.reply([b"OK", 8, 1, 2, b""]) == Reply(8, version=1, previous=2)
    assert AddVersion.reply([b"OK", 9, 4]).version == 4
    assert RolloutCall.reply([b"OK", 10, 2, 1, b"1"]) == Reply(10, version=2, previous=1, forced=True)
    index = IndexPrompts(ks, {"a": ["production"], "b": []}, ["production", "staging"])
    assert index.script_args() == [2, 2, "production", "staging", "a", 1, "production", "b", 0]
    assert len(index.script_keys()) == 2 + (2 + 1) + 2 + 2
