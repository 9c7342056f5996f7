"""Hostile input, tried as an attacker would: each attack is refused with a typed error, and nothing
stored changes.

``promptreg sync`` runs in CI on pull requests, so prompt files, their front matter and the folder's
shape are attacker-controlled; so are metadata, URLs and command-line arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from promptreg.registry import (
    InvalidInputError,
    JsonFilePromptRegistry,
    PromptFileError,
    PromptRegistry,
    PromptRegistryFactory,
    PromptTooLargeError,
    RedisPromptRegistry,
    RegistryAuthError,
    RegistryUnavailableError,
)
from promptreg.registry.backup import apply_import, export_registry, plan_import
from promptreg.registry.cli import cli
from promptreg.registry.sync import apply_sync, plan_sync
from tests.redis_server import RedisServer, free_port

PROMPTREG = Path(sys.executable).with_name("promptreg")
SECRET = "s3cr3t-" + uuid.uuid4().hex


@pytest.fixture
def registry(any_registry: PromptRegistry) -> PromptRegistry:
    """Every backend (tests/conftest.py): the JSON file, fakeredis, redis-server, a Cluster, PostgreSQL."""
    return any_registry


def everything(registry: PromptRegistry) -> dict[str, object]:
    """All that can be observed: every prompt (versions, labels) and its audit trail."""
    result: dict[str, object] = {}
    for name in registry.list_prompts():
        prompt = registry.get_prompt(name)
        assert prompt is not None
        result[name] = (prompt.model_dump(), [event.model_dump() for event in registry.history(name)])
    return result


def seeded(registry: PromptRegistry) -> dict[str, object]:
    registry.create_prompt("critic", description="reviews")
    registry.add_version("critic", "Review {{movie}}", metadata={"model": "m"})
    registry.set_label("critic", "production", 1)
    return everything(registry)


def prompt_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "good.prompt").write_text("---\nlabels: [production]\n---\nGood {{x}}\n", encoding="utf-8")
    return folder


def secret_file(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "credentials"
    secret.write_text(f"PROMPTREG_URL=redis://:{SECRET}@prod:6379/0\n", encoding="utf-8")
    return secret


def sync_cli(folder: Path, env: dict[str, str], *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["sync", str(folder), *extra], env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


# -- the prompt folder -------------------------------------------------------------------------


def test_a_prompt_file_linked_to_a_secret_outside_is_refused(registry: PromptRegistry, tmp_path: Path) -> None:
    before = seeded(registry)
    folder = prompt_folder(tmp_path)
    (folder / "leak.prompt").symlink_to(secret_file(tmp_path))

    with pytest.raises(PromptFileError) as info:
        plan_sync(registry, folder)

    assert info.value.path == folder / "leak.prompt"
    assert "symbolic link to a file outside" in str(info.value)
    assert SECRET not in str(info.value)
    assert everything(registry) == before  # the good file was not synced either


def test_a_link_to_proc_self_environ_is_refused_before_anything_is_read(tmp_path: Path) -> None:
    registry = JsonFilePromptRegistry(tmp_path / "registry.json")
    folder = prompt_folder(tmp_path)
    (folder / "env.prompt").symlink_to("/proc/self/environ")

    code, out, err = sync_cli(folder, {"PROMPTREG_URL": f"file://{registry.path}", "CI_TOKEN": SECRET})

    assert code == 1 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "env.prompt: symbolic link to a file outside" in err
    assert SECRET not in err
    assert not registry.path.exists()  # nothing written, not even the good file


@pytest.mark.parametrize("target", ["outside-dir", "root"])
def test_a_folder_linked_outside_is_refused(registry: PromptRegistry, tmp_path: Path, target: str) -> None:
    before = seeded(registry)
    folder = prompt_folder(tmp_path)
    secret = secret_file(tmp_path)
    (secret.parent / "x.prompt").write_text("outside text\n", encoding="utf-8")
    (folder / "team").symlink_to(secret.parent if target == "outside-dir" else Path("/"))

    with pytest.raises(PromptFileError, match="symbolic link to a folder outside"):
        plan_sync(registry, folder)
    assert everything(registry) == before


def test_links_that_stay_inside_the_folder_are_read(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = prompt_folder(tmp_path)
    (folder / "shared").mkdir()
    (folder / "shared" / "base.prompt").write_text("Base {{x}}\n", encoding="utf-8")
    (folder / "alias.prompt").symlink_to(folder / "shared" / "base.prompt")
    (folder / "mirror").symlink_to(folder / "shared")  # a folder link inside: not followed

    apply_sync(registry, plan_sync(registry, folder))

    assert registry.list_prompts() == ["alias", "good", "shared/base"]
    assert registry.get_version("alias").prompt_text == "Base {{x}}\n"


def test_broken_and_looping_links_are_refused(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = prompt_folder(tmp_path)
    (folder / "dangling.prompt").symlink_to(tmp_path / "nowhere")
    with pytest.raises(PromptFileError, match="does not exist"):
        plan_sync(registry, folder)
    (folder / "dangling.prompt").unlink()
    (folder / "a.prompt").symlink_to(folder / "b.prompt")
    (folder / "b.prompt").symlink_to(folder / "a.prompt")
    with pytest.raises(PromptFileError, match="does not exist \\(or a loop\\)"):
        plan_sync(registry, folder)
    assert registry.list_prompts() == []


def test_a_fifo_is_refused_without_hanging(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = prompt_folder(tmp_path)
    os.mkfifo(folder / "pipe.prompt")  # a blocking open would hang CI for ever

    with pytest.raises(PromptFileError, match=r"pipe\.prompt: not a regular file"):
        plan_sync(registry, folder)
    assert registry.list_prompts() == []


def test_an_oversized_file_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    registry = JsonFilePromptRegistry(tmp_path / "registry.json", max_text_bytes=1000, max_metadata_bytes=1000)
    folder = prompt_folder(tmp_path)
    limit = 1000 + 2 * 1000 + 32 * 1024 + 10
    # Not even valid YAML: refused on its size alone, so no parser ever sees it.
    (folder / "big.prompt").write_bytes(b"---\n" + b"[" * (limit + 1))

    with pytest.raises(PromptFileError, match=f"big.prompt: file is {limit + 5} bytes, the limit is {limit}"):
        plan_sync(registry, folder)
    assert not registry.path.exists()


def test_an_alias_bomb_fails_in_under_a_second_with_one_line(tmp_path: Path) -> None:
    # The classic "billion laughs": ~450 bytes that expand to 10^9 list items if aliases are followed.
    rows = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        rows.append(f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]")
    bomb = "---\nmetadata:\n" + "".join(f"  {row}\n" for row in rows) + "---\nbody\n"
    assert len(bomb) < 600
    folder = prompt_folder(tmp_path)
    (folder / "bomb.prompt").write_text(bomb, encoding="utf-8")
    url = f"file://{tmp_path / 'registry.json'}"

    started = time.monotonic()
    code, out, err = sync_cli(folder, {"PROMPTREG_URL": url}, "--dry-run")
    elapsed = time.monotonic() - started

    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "bomb.prompt: line 3: YAML anchors and aliases (& and *) are not allowed" in err
    assert elapsed < 1.0, elapsed
    assert not (tmp_path / "registry.json").exists()


def test_front_matter_within_its_bound_but_over_the_metadata_limit_is_refused(tmp_path: Path) -> None:
    registry = JsonFilePromptRegistry(tmp_path / "registry.json")
    folder = prompt_folder(tmp_path)
    items = "".join(f"  k{i}: {i}\n" for i in range(6000))  # ~66 KiB of metadata (the JSON limit is 64 KiB)
    (folder / "wide.prompt").write_text(f"---\nmetadata:\n{items}---\nbody\n", encoding="utf-8")

    with pytest.raises(PromptFileError, match=r"wide.prompt: metadata is \d+ bytes as JSON, the limit is 65536"):
        plan_sync(registry, folder)


# -- metadata, text fields, Unicode: one validation for every backend ---------------------------


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"n": 2**64}, "metadata.n: integer out of the signed 64-bit range"),
        ({"n": 2**63}, "metadata.n: integer out of the signed 64-bit range"),
        ({"n": -(2**63) - 1}, "metadata.n: integer out of the signed 64-bit range"),
        ({"deep": {"list": [1, -(2**70)]}}, "metadata.deep.list[1]: integer out of the signed 64-bit range"),
        ({"x": float("nan")}, "metadata.x: nan is not JSON-compatible"),
        ({"x": float("-inf")}, "metadata.x: -inf is not JSON-compatible"),
        ({"s": "ok \ud800"}, "metadata.s is not valid Unicode: lone surrogate '\\ud800' at character 3"),
        ({"\udcff": 1}, "metadata: key is not valid Unicode"),
        ({"b": b"bytes"}, "metadata.b: bytes is not JSON-compatible"),
        ({"s": {1, 2}}, "metadata.s: set is not JSON-compatible"),
        ({1: "x"}, "metadata: key 1 is not a string"),
    ],
)
def test_metadata_outside_json_is_refused(registry: PromptRegistry, metadata: dict[str, object], reason: str) -> None:
    before = seeded(registry)
    with pytest.raises(InvalidInputError) as info:
        registry.add_version("critic", "text", metadata=metadata)
    assert reason in str(info.value)
    assert everything(registry) == before


def test_the_64_bit_bounds_themselves_are_stored(registry: PromptRegistry) -> None:
    registry.create_prompt("edge")
    version = registry.add_version("edge", "text", metadata={"lo": -(2**63), "hi": 2**63 - 1, "f": 1e308})
    assert registry.get_version("edge", version=version.version).metadata == {
        "lo": -(2**63),
        "hi": 2**63 - 1,
        "f": 1e308,
    }


def test_deep_and_wide_metadata_is_refused_fast(registry: PromptRegistry) -> None:
    before = seeded(registry)
    deep: object = 1
    for _ in range(10_000):  # would blow the stack in a naive recursive check
        deep = [deep]
    with pytest.raises(InvalidInputError, match="nested deeper than 32 levels"):
        registry.add_version("critic", "text", metadata={"d": deep})
    wide = {"w": list(range(5_000_000))}  # refused after about 64 Ki items, not after walking 5 M
    started = time.process_time()
    with pytest.raises(PromptTooLargeError, match="metadata is over 65536 bytes"):
        registry.add_version("critic", "text", metadata=wide)
    assert time.process_time() - started < 1.0
    assert everything(registry) == before


@pytest.mark.parametrize("field", ["author", "message", "description", "reason", "text"])
def test_lone_surrogates_in_any_text_field_are_refused(registry: PromptRegistry, field: str) -> None:
    before = seeded(registry)
    bad = "x\udcffy"  # what Python makes of a non-UTF-8 byte in argv or a file name
    with pytest.raises(InvalidInputError) as info:
        if field == "description":
            registry.create_prompt("other", description=bad)
        elif field == "reason":
            registry.set_label("critic", "staging", 1, reason=bad)
        elif field == "text":
            registry.add_version("critic", bad)
        else:
            registry.add_version("critic", "fine", **{field: bad})  # type: ignore[arg-type]
    shown = {"text": "prompt text"}.get(field, field)
    assert f"{shown} is not valid Unicode: lone surrogate '\\udcff' at character 1" in str(info.value)
    assert everything(registry) == before


def test_an_export_with_a_huge_integer_imports_nothing(registry: PromptRegistry, tmp_path: Path) -> None:
    source = JsonFilePromptRegistry(tmp_path / "source.json")
    source.create_prompt("a-fine")
    source.add_version("a-fine", "fine")
    source.create_prompt("b-huge")
    source.add_version("b-huge", "text", metadata={"n": 1})
    document = export_registry(source)
    document["prompts"][1]["versions"][0]["metadata"]["n"] = 2**64  # as a hand-edited export could say
    parsed = json.loads(json.dumps(document))
    before = seeded(registry)

    with pytest.raises(InvalidInputError, match="integer out of the signed 64-bit range"):
        apply_import(registry, plan_import(registry, parsed))

    assert everything(registry) == before  # no "b-huge" without a version, and no "a-fine" either


def test_import_refuses_surrogates_and_absurd_json_with_one_line(tmp_path: Path) -> None:
    url = f"file://{tmp_path / 'registry.json'}"
    surrogate = tmp_path / "surrogate.json"
    surrogate.write_text(
        '{"format": "promptreg-export", "format_version": 1, "prompts": [{"name": "x", "description": "\\ud800",'
        ' "versions": [], "labels": {}}]}',
        encoding="utf-8",
    )
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    for path, reason in [(surrogate, "description is not valid Unicode"), (nested, "not a JSON export")]:
        result = CliRunner().invoke(cli, ["import", str(path)], env={"PROMPTREG_URL": url}, catch_exceptions=False)
        assert result.exit_code == 1, result.output
        assert result.stderr.count("\n") == 1 and reason in result.stderr, result.stderr
    assert not (tmp_path / "registry.json").exists()


# -- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        [b"create", b"bad\xffname"],
        [b"create", b"ok", b"--description", b"caf\xe9"],
        [b"--url", b"file://\xff/registry.json", b"list"],
        [b"sync", b"prompts", b"--author", b"\xfe\xff"],
    ],
    ids=["name", "description", "url", "author"],
)
def test_undecodable_arguments_get_one_line(tmp_path: Path, argv: list[bytes]) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "p.prompt").write_text("text\n", encoding="utf-8")
    env = {**os.environ, "PROMPTREG_URL": f"file://{tmp_path / 'registry.json'}", "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(
        [os.fsencode(PROMPTREG), *argv], capture_output=True, env=env, cwd=tmp_path, timeout=60, check=False
    )
    err = proc.stderr.decode("utf-8")
    assert proc.returncode == 1, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "registry.json").exists()


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("redis://host:99999", "Port out of range"),
        ("redis://[::1", "Invalid IPv6 URL"),
        ("redis://host:abc/0", "could not be cast to integer"),
        ("redis://host:0/0", "port 0"),
        ("redis://host:6379/zero", "database 'zero' is not a number"),
        (f"redis://user:{SECRET}@host:6379/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        (f"redis://user:{SECRET}@[::1:6379/0", "Invalid IPv6 URL"),
        ("redis://h\udcff:6379/0", "registry URL is not valid Unicode"),
    ],
    ids=lambda value: str(value).replace(SECRET, "SECRET"),  # the same ids in every xdist worker
)
def test_malformed_urls_are_input_errors_everywhere(url: str, reason: str) -> None:
    from promptreg.client import PromptClient

    for build in (PromptRegistryFactory.from_url, RedisPromptRegistry.from_url, PromptClient):
        with pytest.raises(InvalidInputError) as info:
            build(url)
        assert reason in str(info.value), build
        assert SECRET not in str(info.value)
    result = CliRunner().invoke(cli, ["--url", url, "list"], catch_exceptions=False)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert SECRET not in result.stderr


# -- the JSON file behind a link ------------------------------------------------------------------


def test_a_linked_registry_file_is_written_through(tmp_path: Path) -> None:
    real = tmp_path / "store" / "registry.json"
    real.parent.mkdir()
    link = tmp_path / "registry.json"
    link.symlink_to(real)
    other_link = tmp_path / "again.json"
    other_link.symlink_to(link)  # a chain of links reaches the same file

    JsonFilePromptRegistry(link).create_prompt("one")
    JsonFilePromptRegistry(other_link).create_prompt("two")

    assert link.is_symlink() and other_link.is_symlink()
    assert real.is_file() and not real.is_symlink()
    assert JsonFilePromptRegistry(real).list_prompts() == ["one", "two"]
    # Writers through either link take the one lock beside the real file.
    assert (
        JsonFilePromptRegistry(link).lock_path
        == JsonFilePromptRegistry(other_link).lock_path
        == real.with_name("registry.json.lock")
    )


def test_a_dangling_registry_link_creates_its_target(tmp_path: Path) -> None:
    link = tmp_path / "registry.json"
    link.symlink_to(tmp_path / "data" / "real.json")
    JsonFilePromptRegistry(link).create_prompt("one")
    assert link.is_symlink() and (tmp_path / "data" / "real.json").is_file()


# -- authentication ---------------------------------------------------------------------------------


@pytest.fixture
def acl_user(redis_server: RedisServer) -> Iterator[tuple[str, str]]:
    user, password = "u" + uuid.uuid4().hex[:10], "pw-" + uuid.uuid4().hex
    admin = redis_server.client()
    admin.acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"], channels=["*"])
    try:
        yield user, password
    finally:
        admin.acl_deluser(user)
        admin.close()


@pytest.mark.redis
def test_a_wrong_password_says_authentication_failed(redis_server: RedisServer, acl_user: tuple[str, str]) -> None:
    user, _password = acl_user
    url = f"redis://{user}:{SECRET}@127.0.0.1:{redis_server.port}/0"
    registry = PromptRegistryFactory.from_url(url)
    with pytest.raises(RegistryAuthError) as info:
        registry.list_prompts()
    registry.close()
    assert isinstance(info.value, RegistryUnavailableError)
    assert "authentication failed" in str(info.value) and "unreachable" not in str(info.value)
    assert SECRET not in str(info.value)

    result = CliRunner().invoke(cli, ["--url", url, "list"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "authentication failed" in result.stderr and SECRET not in result.stderr + result.stdout


@pytest.mark.redis
def test_a_right_password_works_and_a_missing_one_is_refused(
    redis_server: RedisServer, acl_user: tuple[str, str], namespace: str
) -> None:
    user, password = acl_user
    good = RedisPromptRegistry.from_url(
        f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0", namespace=namespace
    )
    good.create_prompt("p")
    assert good.list_prompts() == ["p"]
    good.close()
    admin = redis_server.client()
    admin.acl_setuser(user, enabled=True, commands=["+@all", "-smembers"])  # an ACL that forbids a read
    try:
        limited = RedisPromptRegistry.from_url(
            f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0", namespace=namespace
        )
        with pytest.raises(RegistryAuthError, match="permission denied by its ACL"):
            limited.list_prompts()
        limited.close()
    finally:
        admin.close()


def test_an_unreachable_server_is_still_unavailable_not_auth() -> None:
    registry = RedisPromptRegistry.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1.0)
    with pytest.raises(RegistryUnavailableError) as info:
        registry.list_prompts()
    assert not isinstance(info.value, RegistryAuthError)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    registry.close()
