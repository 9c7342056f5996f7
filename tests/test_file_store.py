"""The JSON-file backend's own promises: the file format, corrupt files left untouched, the write
lock, and atomic replacement (the shared contract is in test_contract.py)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from promptreg.registry import (
    InvalidInputError,
    JsonFilePromptRegistry,
    PromptRegistry,
    RegistryCorruptError,
    RegistryUnavailableError,
)
from promptreg.registry.file_format import FORMAT, FORMAT_VERSION
from tests.redis_server import wait_until

NAME = "movie-critic"


def _seed(reg: PromptRegistry) -> None:
    reg.create_prompt(NAME, author="alice")
    reg.add_version(NAME, "As a movie critic, do you like {{movie}}?", author="alice")
    reg.add_version(NAME, "As a {{criticlevel}} critic, do you like {{movie}}?", author="bob")
    reg.set_label(NAME, "production", 1)
    reg.set_label(NAME, "production", 2)


def _valid(tmp_path: Path) -> dict[str, Any]:
    """A real registry file's content, made through the API."""
    source = tmp_path / "source" / "registry.json"
    _seed(JsonFilePromptRegistry(source, create_parent=True))
    data: dict[str, Any] = json.loads(source.read_bytes())
    return data


def _leftovers(directory: Path) -> list[str]:
    """Files other than the registry and its lock, such as temp files a write left behind."""
    return sorted(set(os.listdir(directory)) - {"registry.json", "registry.json.lock"})


@contextmanager
def _hold_lock(reg: JsonFilePromptRegistry) -> Iterator[None]:
    """Hold the registry's write lock the way another process would."""
    reg.path.parent.mkdir(parents=True, exist_ok=True)
    with open(reg.lock_path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        yield


# -- format and basics ----------------------------------------------------------------------------


def test_a_missing_file_is_an_empty_registry_and_reads_create_nothing(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "not" / "yet" / "registry.json", create_parent=True)
    assert reg.list_prompts() == []
    assert reg.get_prompt(NAME) is None
    assert reg.load_state() == (0, {})
    assert not (tmp_path / "not").exists()


def test_first_write_creates_the_file(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt(NAME)
    data = json.loads(reg.path.read_bytes())
    assert (data["format"], data["format_version"], data["rev"]) == (FORMAT, FORMAT_VERSION, 1)
    assert list(data["prompts"]) == [NAME]


def test_a_missing_folder_is_refused_not_created(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        JsonFilePromptRegistry(tmp_path / "a" / "b" / "registry.json")
    assert str(caught.value).startswith(f"registry folder {tmp_path / 'a' / 'b'} does not exist: create it first")
    assert not isinstance(caught.value, RegistryUnavailableError)
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(InvalidInputError, match="does not exist"):
        JsonFilePromptRegistry(tmp_path / "file" / "registry.json")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_create_parent_lets_the_first_write_create_the_folders(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "a" / "b" / "registry.json", create_parent=True)
    assert not (tmp_path / "a").exists()  # not on construction: on the first write
    reg.create_prompt(NAME)
    assert list(json.loads(reg.path.read_bytes())["prompts"]) == [NAME]


def test_a_folder_removed_after_opening_is_not_recreated_by_a_write(tmp_path: Path) -> None:
    folder = tmp_path / "store"
    folder.mkdir()
    reg = JsonFilePromptRegistry(folder / "registry.json")
    folder.rmdir()
    with pytest.raises(RegistryUnavailableError, match=f"registry folder {folder} does not exist"):
        reg.create_prompt(NAME)
    assert os.listdir(tmp_path) == []


def test_every_write_bumps_the_revision_that_load_state_reports(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    _seed(reg)
    rev, prompts = reg.load_state()
    history = reg.history(NAME)
    assert rev == len(history) == history[-1].rev
    assert [e.rev for e in history] == list(range(1, rev + 1))
    assert prompts == {NAME: reg.get_prompt(NAME)}
    reg.create_prompt("other")
    assert reg.load_state().rev == rev + 1


def test_relative_paths_are_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    reg = JsonFilePromptRegistry("sub/registry.json")
    assert reg.path == tmp_path / "sub" / "registry.json"
    assert reg.lock_path == tmp_path / "sub" / "registry.json.lock"
    monkeypatch.chdir(tmp_path.parent)
    reg.create_prompt(NAME)
    assert (tmp_path / "sub" / "registry.json").exists()


@pytest.mark.parametrize("timeout", [-1, "10", None, True, float("nan")])
def test_lock_timeout_must_be_a_non_negative_number(tmp_path: Path, timeout: Any) -> None:
    with pytest.raises(InvalidInputError, match="lock_timeout"):
        JsonFilePromptRegistry(tmp_path / "registry.json", lock_timeout=timeout)


def test_writes_keep_the_file_mode(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt(NAME)
    reg.path.chmod(0o600)
    reg.add_version(NAME, "text")
    assert reg.path.stat().st_mode & 0o777 == 0o600


# -- corrupt and foreign files --------------------------------------------------------------------


def _set(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return data


CORRUPTIONS: dict[str, tuple[Callable[[dict[str, Any]], bytes], str]] = {
    "empty": (lambda d: b"", "empty"),
    "whitespace": (lambda d: b"  \n", "empty"),
    "truncated": (lambda d: json.dumps(d).encode()[: len(json.dumps(d)) // 2], "not valid JSON"),
    "binary": (lambda d: b"\x00\xff\xfe garbage", "not valid JSON"),
    "json list": (lambda d: b"[1, 2, 3]", "not a promptreg registry"),
    "foreign object": (lambda d: b'{"name": "movie-critic", "versions": []}', "not a promptreg registry"),
    "other format": (lambda d: json.dumps({**d, "format": "other"}).encode(), "not a promptreg registry"),
    "newer format": (lambda d: json.dumps({**d, "format_version": 2}).encode(), "format_version"),
    "prompts a list": (lambda d: json.dumps({**d, "prompts": []}).encode(), "prompts"),
    "rev a string": (lambda d: json.dumps({**d, "rev": "5"}).encode(), "rev"),
    "unknown field": (lambda d: json.dumps({**d, "extra": 1}).encode(), "extra"),
    "version text missing": (
        lambda d: json.dumps(_set(d, ("prompts", NAME, "versions", 0, "prompt_text"), None)).encode(),
        "prompt_text",
    ),
    "version gap": (
        lambda d: json.dumps(_set(d, ("prompts", NAME, "versions"), d["prompts"][NAME]["versions"][1:])).encode(),
        "numbered",
    ),
    "dangling label": (
        lambda d: json.dumps(_set(d, ("prompts", NAME, "labels", "production"), 9)).encode(),
        "missing version 9",
    ),
    "bad prompt name": (
        lambda d: json.dumps({**d, "prompts": {"bad name": d["prompts"][NAME]}}).encode(),
        "invalid prompt name",
    ),
    "bad action": (
        lambda d: json.dumps(_set(d, ("prompts", NAME, "history", 0, "action"), "drop_table")).encode(),
        "action",
    ),
    # json.loads recursed into these (an untyped RecursionError): the depth is bounded before it parses.
    "nested 100k deep": (lambda d: b"[" * 100_000 + b"]" * 100_000, "nested deeper than 48 levels"),
    "metadata nested 100k deep": (
        lambda d: (
            json.dumps(_set(d, ("prompts", NAME, "versions", 0, "metadata"), "DEEP"))
            .replace('"DEEP"', '{"a": ' * 100_000 + "1" + "}" * 100_000)
            .encode()
        ),
        "nested deeper than 48 levels",
    ),
}

CALLS: dict[str, Callable[[JsonFilePromptRegistry], object]] = {
    "list_prompts": lambda r: r.list_prompts(),
    "get_prompt": lambda r: r.get_prompt(NAME),
    "get_version": lambda r: r.get_version(NAME),
    "history": lambda r: r.history(NAME),
    "load_state": lambda r: r.load_state(),
    "create_prompt": lambda r: r.create_prompt("new"),
    "add_version": lambda r: r.add_version(NAME, "text"),
    "set_label": lambda r: r.set_label(NAME, "staging", 1),
    "delete_label": lambda r: r.delete_label(NAME, "production"),
    "rollback": lambda r: r.rollback(NAME, "production"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_a_corrupt_or_foreign_file_is_reported_and_left_byte_for_byte(tmp_path: Path, corruption: str) -> None:
    make, hint = CORRUPTIONS[corruption]
    store = tmp_path / "store"
    store.mkdir()
    path = store / "registry.json"
    original = make(_valid(tmp_path))
    path.write_bytes(original)
    reg = JsonFilePromptRegistry(path)
    for call_name, call in CALLS.items():
        with pytest.raises(RegistryCorruptError) as caught:
            call(reg)
        message = str(caught.value)
        assert str(path) in message, call_name
        assert hint in message, (call_name, message)
        assert "untouched" in message
        assert path.read_bytes() == original, call_name
    assert _leftovers(store) == []


def test_the_valid_source_of_the_corruptions_reads_fine(tmp_path: Path) -> None:
    # Guards the table above: each case breaks a file that is otherwise readable.
    path = tmp_path / "registry.json"
    path.write_text(json.dumps(_valid(tmp_path)))
    reg = JsonFilePromptRegistry(path)
    for call in CALLS.values():
        call(reg)
    assert reg.get_version(NAME, label="production").version == 2  # deleted, then rolled back


# -- the write lock ---------------------------------------------------------------------------------


def test_a_held_lock_times_out_as_unavailable_and_changes_nothing(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json", lock_timeout=0.2)
    _seed(reg)
    before = reg.path.read_bytes()
    with _hold_lock(reg):
        with pytest.raises(RegistryUnavailableError, match="could not lock") as caught:
            reg.add_version(NAME, "blocked")
        assert isinstance(caught.value, ConnectionError)
        assert reg.path.read_bytes() == before
        assert reg.get_version(NAME).version == 2  # readers take no lock
    reg.add_version(NAME, "free again")
    assert reg.get_version(NAME).version == 3


def test_a_writer_waits_for_the_lock_and_then_writes(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json", lock_timeout=30)
    reg.create_prompt(NAME)
    outcome: list[object] = []

    def write() -> None:
        try:
            outcome.append(reg.add_version(NAME, "waited").version)
        except Exception as exc:
            outcome.append(exc)

    with _hold_lock(reg):
        writer = threading.Thread(target=write, name="waiting-writer", daemon=True)
        writer.start()
        assert not wait_until(lambda: bool(outcome), timeout=0.3)  # blocked while we hold it
        assert reg.get_prompt(NAME) is not None and not (reg.get_prompt(NAME) or pytest.fail()).versions
    writer.join(timeout=30)
    assert outcome == [1]


# -- atomic replacement ------------------------------------------------------------------------------


def test_a_failed_replace_leaves_the_old_file_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    _seed(reg)
    before = reg.path.read_bytes()

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(RegistryUnavailableError, match="No space left"):
        reg.add_version(NAME, "lost")
    monkeypatch.undo()
    assert reg.path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    assert reg.add_version(NAME, "kept").version == 3


def test_many_writes_leave_only_the_file_and_its_lock(tmp_path: Path) -> None:
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt(NAME)
    for n in range(20):
        reg.add_version(NAME, f"text {n}")
    assert sorted(os.listdir(tmp_path)) == ["registry.json", "registry.json.lock"]


def test_readers_never_see_a_partial_file_while_another_thread_writes(tmp_path: Path) -> None:
    writer_reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    writer_reg.create_prompt(NAME)
    reader = JsonFilePromptRegistry(tmp_path / "registry.json")
    total = 40
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for n in range(total):
                writer_reg.add_version(NAME, "x" * 2000 + str(n))
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write, name="file-writer", daemon=True)
    writer.start()
    seen: list[int] = []
    while writer.is_alive() and len(seen) < 10_000:
        rev, prompts = reader.load_state()  # raises RegistryCorruptError on a partial file
        assert len(prompts[NAME].versions) == rev - 1
        seen.append(rev)
    writer.join(timeout=60)
    assert errors == []
    assert seen == sorted(seen)
    assert reader.load_state().rev == total + 1


def test_threads_of_one_process_also_serialise_their_writes(tmp_path: Path) -> None:
    # flock is per open file description, and every write opens its own: threads exclude each other too.
    reg = JsonFilePromptRegistry(tmp_path / "registry.json")
    reg.create_prompt(NAME)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for n in range(10):
                reg.add_version(NAME, f"thread {worker} text {n}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,), name=f"file-writer-{w}", daemon=True) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    prompt = reg.get_prompt(NAME)
    assert prompt is not None
    assert [v.version for v in prompt.versions] == list(range(1, 41))
    assert sorted(v.prompt_text for v in prompt.versions) == sorted(
        f"thread {w} text {n}" for w in range(4) for n in range(10)
    )
