"""Nesting and size bounds on hostile input: a JSON registry file nested 100,000
deep, a prompt folder 1,100 folders deep, YAML front matter nested past its bound and a PostgreSQL
host name no resolver takes each raise a typed one-line error, never a ``RecursionError`` or a bare
``UnicodeError``, and nothing stored changes.

The deep inputs are built in ``tmp_path`` without recursion (``os.makedirs`` and ``shutil.rmtree``
recurse once per level) and the deep folders are removed the same way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from promptreg.registry import (
    InvalidInputError,
    JsonFilePromptRegistry,
    PromptFileError,
    PromptRegistryFactory,
    PromptTooLargeError,
    RegistryCorruptError,
    file_store,
)
from promptreg.registry.cli import cli
from promptreg.registry.postgres.conn import connect, parse_postgres_url
from promptreg.registry.prompt_files import FRONT_MATTER_DEPTH, MAX_FOLDER_DEPTH
from promptreg.registry.sync import apply_sync, plan_sync
from promptreg.registry.validation import MAX_JSON_DEPTH, MAX_METADATA_DEPTH, check_json_depth, validate_metadata

SECRET = "s3cr3t-nesting-password"
DEEP = 100_000


def run_cli(*argv: str, url: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(argv), env={"PROMPTREG_URL": url}, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, *expected: str) -> None:
    assert code == 1, (code, out, err)
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and "Recursion" not in err
    for text in expected:
        assert text in err, err


# -- check_json_depth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": []}]}', 4),
        (b'["[[[[", "]]]]"]', 1),  # brackets in strings do not nest
        (b'["\\"[[[", "\\\\", [[]]]', 3),  # escaped quotes and backslashes end strings where JSON does
        (b"[" * DEEP + b"]" * DEEP, DEEP),
    ],
)
def test_check_json_depth_counts_brackets_outside_strings(text: bytes, depth: int) -> None:
    check_json_depth(text, "x", max_depth=depth)
    if depth:
        with pytest.raises(InvalidInputError, match=f"^x is nested deeper than {depth - 1} levels$"):
            check_json_depth(text, "x", max_depth=depth - 1)


def test_check_json_depth_is_linear_on_unterminated_strings() -> None:
    # Each escaped quote could start a string that never ends: retrying from each one is quadratic.
    text = b'["' + b'\\"[' * 200_000
    started = time.monotonic()
    check_json_depth(text, "x", max_depth=1)
    assert time.monotonic() - started < 1.0
    with pytest.raises(InvalidInputError):
        check_json_depth(b"[[" + text, "x", max_depth=2)


def test_the_json_bound_leaves_room_for_the_deepest_metadata_in_a_registry_file(tmp_path: Path) -> None:
    # The deepest metadata validate_metadata accepts, in a version's metadata and config.
    deepest: Any = 1
    while True:
        try:
            validate_metadata({"d": [deepest]})
        except InvalidInputError:
            break
        deepest = [deepest]
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt("deep")
    reg.add_version("deep", "text", metadata={"d": deepest}, config={"d": deepest})
    reg.add_version("deep", messages=[{"role": "user", "content": "hi"}])

    check_json_depth(reg.path.read_bytes(), "the file")
    assert MAX_JSON_DEPTH == MAX_METADATA_DEPTH + 16


# -- the JSON registry file -------------------------------------------------------------------------


def _registry_with(metadata_json: bytes) -> bytes:
    """A registry file, valid but for the metadata of its one version."""
    head = (
        b'{"format": "promptreg", "format_version": 1, "rev": 2, "prompts": {"p": {'
        b'"created_at": "2024-01-01T00:00:00Z", "versions": [{"version": 1, "prompt_text": "x",'
        b' "created_at": "2024-01-01T00:00:00Z", "metadata": '
    )
    return head + metadata_json + b"}]}}}"


DEEP_FILES = {
    "deep list": b"[" * DEEP + b"]" * DEEP,
    "deep and truncated": b"[" * DEEP,
    "deep metadata": _registry_with(b'{"a": ' * DEEP + b"1" + b"}" * DEEP),
    "metadata past the parser's bound": _registry_with(b"[" * 1500 + b"]" * 1500),
}

NESTED = f"the file is nested deeper than {MAX_JSON_DEPTH} levels, not a promptreg registry"

FILE_CALLS: dict[str, Callable[[JsonFilePromptRegistry], object]] = {
    "list_prompts": lambda r: r.list_prompts(),
    "get_prompt": lambda r: r.get_prompt("p"),
    "load_state": lambda r: r.load_state(),
    "create_prompt": lambda r: r.create_prompt("new"),
    "add_version": lambda r: r.add_version("p", "text"),
}


@pytest.mark.parametrize("case", list(DEEP_FILES))
def test_a_deeply_nested_registry_file_is_corrupt_and_left_byte_for_byte(tmp_path: Path, case: str) -> None:
    path = tmp_path / "registry.json"
    original = DEEP_FILES[case]
    path.write_bytes(original)
    reg = JsonFilePromptRegistry(path)
    for call_name, call in FILE_CALLS.items():
        with pytest.raises(RegistryCorruptError) as caught:
            call(reg)
        message = str(caught.value)
        assert "\n" not in message, call_name
        assert message == f"{path}: {NESTED} (the file was left untouched)", call_name
        assert path.read_bytes() == original, call_name
    assert sorted(os.listdir(tmp_path)) == ["registry.json", "registry.json.lock"]


def test_the_cli_reports_a_deeply_nested_registry_file_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    original = DEEP_FILES["deep metadata"]
    path.write_bytes(original)
    for argv in (["list"], ["create", "new"]):
        code, out, err = run_cli(*argv, url=f"file://{path}")
        assert_one_line_error(code, out, err, f"nested deeper than {MAX_JSON_DEPTH} levels", "untouched")
    assert path.read_bytes() == original


def test_a_registry_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    with open(path, "wb") as handle:  # sparse: costs no disk, and today's code would read 1 GiB
        handle.truncate(file_store.MAX_FILE_BYTES + 1)
    before = path.stat()
    reg = JsonFilePromptRegistry(path)
    for call_name, call in FILE_CALLS.items():
        with pytest.raises(RegistryCorruptError) as caught:
            call(reg)
        assert str(caught.value) == (
            f"{path}: the file is {file_store.MAX_FILE_BYTES + 1} bytes, over the {file_store.MAX_FILE_BYTES}-byte "
            "limit of a registry file (the file was left untouched)"
        ), call_name
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)


def test_a_write_that_would_outgrow_the_size_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt("p")
    original = reg.path.read_bytes()
    monkeypatch.setattr(file_store, "MAX_FILE_BYTES", len(original) + 100)

    with pytest.raises(PromptTooLargeError, match="nothing was written"):
        reg.add_version("p", "x" * 1000)

    assert reg.path.read_bytes() == original
    assert reg.get_prompt("p") is not None  # still readable: it was never written past the limit


# -- prompt folders ----------------------------------------------------------------------------------


@pytest.fixture
def deep_tree(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/prompts`` with a good file on top and 1,100 nested folders ``a/a/a/...`` below."""
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "good.prompt").write_text("---\nlabels: [production]\n---\nGood {{x}}\n", encoding="utf-8")
    levels: list[Path] = []
    current = folder
    for _ in range(1100):
        current = current / "a"
        current.mkdir()
        levels.append(current)
    (current / "deep.prompt").write_text("deep\n", encoding="utf-8")
    try:
        yield folder
    finally:
        (current / "deep.prompt").unlink()
        for level in reversed(levels):  # shutil.rmtree would recurse 1,100 deep
            level.rmdir()


def test_a_folder_1100_levels_deep_is_refused_naming_it(deep_tree: Path, tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")

    with pytest.raises(PromptFileError) as caught:
        plan_sync(reg, deep_tree)

    too_deep = deep_tree.joinpath(*["a"] * (MAX_FOLDER_DEPTH + 1))
    assert caught.value.path == too_deep
    assert str(caught.value) == f"{too_deep}: folder nested deeper than {MAX_FOLDER_DEPTH} levels: refused"
    assert not reg.path.exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_the_cli_refuses_a_1100_level_folder_in_one_line_and_writes_nothing(
    deep_tree: Path, tmp_path: Path, dry_run: bool
) -> None:
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    reg.create_prompt("kept")
    original = path.read_bytes()

    code, out, err = run_cli("sync", str(deep_tree), *(["--dry-run"] if dry_run else []), url=f"file://{path}")

    assert_one_line_error(code, out, err, f"folder nested deeper than {MAX_FOLDER_DEPTH} levels", f"{deep_tree}/a/a/")
    assert path.read_bytes() == original  # not even good.prompt was synced


def test_folders_down_to_the_depth_limit_are_synced(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    current = folder
    current.mkdir()
    for _ in range(MAX_FOLDER_DEPTH - 1):
        current = current / "a"
        current.mkdir()
    (current / "p.prompt").write_text("deepest\n", encoding="utf-8")  # a 127-character name
    (current / "a").mkdir()  # the deepest folder allowed (empty: a file there could have no valid name)
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")

    apply_sync(reg, plan_sync(reg, folder))

    name = "a/" * (MAX_FOLDER_DEPTH - 1) + "p"
    assert reg.list_prompts() == [name]
    assert MAX_FOLDER_DEPTH == 64 and len(name) == 127


def test_a_folder_link_back_to_an_ancestor_is_not_followed(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    (folder / "team").mkdir(parents=True)
    (folder / "team" / "p.prompt").write_text("p\n", encoding="utf-8")
    (folder / "team" / "loop").symlink_to(folder)  # followed, it would nest for ever
    (folder / "team" / "up").symlink_to("..")
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")

    apply_sync(reg, plan_sync(reg, folder))

    assert reg.list_prompts() == ["team/p"]


def test_a_deep_folder_linked_outside_is_still_refused(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    deep = folder.joinpath(*["d"] * 40)
    deep.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.prompt").write_text(f"{SECRET}\n", encoding="utf-8")
    (deep / "escape").symlink_to(outside)
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")

    with pytest.raises(PromptFileError, match="symbolic link to a folder outside") as caught:
        plan_sync(reg, folder)

    assert caught.value.path == deep / "escape"
    assert SECRET not in str(caught.value)
    assert not reg.path.exists()


# -- front matter ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("front_matter", "line"),
    [
        ("metadata: " + "[" * 70_000 + "]" * 70_000, 2),  # flow style, within the front matter's size bound
        ("metadata: " + "{a: " * 30_000 + "1" + "}" * 30_000, 2),
        ("metadata:\n" + "".join(" " * (i + 1) + "a:\n" for i in range(500)), FRONT_MATTER_DEPTH + 1),
        ("metadata:\n  x:\n" + "".join(" " * (2 * i + 2) + "-\n" for i in range(300)), FRONT_MATTER_DEPTH + 2),
    ],
    ids=["flow list", "flow mapping", "block mapping", "block list"],
)
def test_front_matter_nested_past_its_bound_is_refused_in_one_line(
    tmp_path: Path, front_matter: str, line: int
) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "deep.prompt").write_text(f"---\n{front_matter}\n---\nbody\n", encoding="utf-8")
    path = tmp_path / "registry.json"

    with pytest.raises(PromptFileError) as caught:
        plan_sync(JsonFilePromptRegistry(path), folder)
    assert str(caught.value) == f"{folder / 'deep.prompt'}: line {line}: nested deeper than {FRONT_MATTER_DEPTH} levels"

    code, out, err = run_cli("sync", str(folder), url=f"file://{path}")
    assert_one_line_error(code, out, err, f"deep.prompt: line {line}: nested deeper than {FRONT_MATTER_DEPTH} levels")
    assert not path.exists()


# -- a PostgreSQL host name ----------------------------------------------------------------------------

LONG_LABEL_URLS = {
    "64-character label": f"postgresql://app:{SECRET}@{'a' * 64}.example/db",
    "empty label": f"postgresql://app:{SECRET}@db..example:5432/db",
    "second of two hosts": f"postgresql://app:{SECRET}@db.example:5432,{'b' * 70}:5433/db",
    "host in the query": f"postgresql://app@/db?host={'c' * 64}.example&password={SECRET}",
}


@pytest.mark.parametrize("case", list(LONG_LABEL_URLS))
def test_a_host_name_no_resolver_takes_is_an_input_error_without_the_password(case: str) -> None:
    pytest.importorskip("psycopg")
    from promptreg.client import PromptClient

    url = LONG_LABEL_URLS[case]
    for build in (parse_postgres_url, PromptRegistryFactory.from_url, PromptClient):
        with pytest.raises(InvalidInputError) as caught:
            build(url)
        message = str(caught.value)
        assert message.startswith("invalid PostgreSQL host name "), (build, message)
        assert "1 to 63 characters" in message and "\n" not in message
        assert SECRET not in message

    code, out, err = run_cli("list", url=url)
    assert_one_line_error(code, out, err, "invalid PostgreSQL host name")
    assert SECRET not in err


def test_connect_checks_the_host_it_is_given_too(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("psycopg")
    conninfo = f"postgresql://app:{SECRET}@db.example/db"  # what a caller may hand connect() directly
    with pytest.raises(InvalidInputError, match="invalid PostgreSQL host name") as caught:
        connect(conninfo, host="x" * 64 + ".example")
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("PGHOST", "y" * 64 + ".example")
    with pytest.raises(InvalidInputError, match=r"invalid PostgreSQL host name 'y{64}\.example'") as caught:
        connect(f"postgresql://app:{SECRET}@/db")
    assert SECRET not in str(caught.value)


def test_ordinary_hosts_pass_the_check() -> None:
    pytest.importorskip("psycopg")
    for url in (
        "postgresql://app@db.example.:5432/db",
        "postgresql://app@[::1]:5432/db",
        "postgresql://app@127.0.0.1,10.0.0.2:5433/db",
        "postgresql://app@%2Fvar%2Frun%2Fpostgresql/db",
        "postgresql://app@m\u00fcnchen.example/db",
        f"postgresql://app@{'a' * 63}.example/db",
    ):
        parse_postgres_url(url)


def test_an_export_nested_100k_deep_is_refused_in_one_line(tmp_path: Path) -> None:
    # Already typed before this change (the CLI catches json's RecursionError); kept as a guard.
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    reg.create_prompt("kept")
    original = path.read_bytes()
    export = tmp_path / "export.json"
    document = {"format": "promptreg-export", "format_version": 1, "prompts": ["PLACEHOLDER"]}
    export.write_text(json.dumps(document).replace('"PLACEHOLDER"', "[" * DEEP + "]" * DEEP), encoding="utf-8")

    code, out, err = run_cli("import", str(export), url=f"file://{path}")

    assert_one_line_error(code, out, err, "not a JSON export")
    assert path.read_bytes() == original


def test_a_notification_nested_past_the_recursion_limit_is_a_typed_error() -> None:
    from promptreg.registry.errors import RegistryCorruptError
    from promptreg.registry.postgres.schema import decode_payload

    payload = '{"rev": ' + "[" * 3000 + "]" * 3000 + "}"
    assert len(payload) < 8000  # fits PostgreSQL's NOTIFY payload limit: any role can send it
    with pytest.raises(RegistryCorruptError, match="undecodable change notification"):
        decode_payload(payload)
    with pytest.raises(RegistryCorruptError):
        decode_payload('{"rev": ' + "[" * 100 + "]" * 100 + "}")  # parsed, then refused by the field checks
