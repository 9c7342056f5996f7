"""The last-known-good file: round trip, atomic replace, and every way a file can be unusable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest

from promptreg.client.snapshot import FORMAT, SCHEMA, load_snapshot, save_snapshot
from promptreg.registry import PromptVersion, RegistryCorruptError

POINTERS = {"movie-critic": {"production": 1, "latest": 2}, "empty": {}}


def _versions() -> dict[tuple[str, int], PromptVersion]:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return {
        ("movie-critic", 1): PromptVersion(version=1, prompt_text="Do you like {{movie}}?", created_at=at),
        ("movie-critic", 2): PromptVersion(
            version=2,
            prompt_text="As a {{level}} critic: {{movie}}",
            created_at=at,
            author="bob",
            message="tone",
            metadata={"model": "gpt", "temperature": 0.2, "tags": ["a", "b"]},
        ),
        ("movie-critic", 3): PromptVersion(version=3, prompt_text="not pointed at", created_at=at),
    }


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "lkg" / "prompts.msgpack"
    versions = _versions()
    save_snapshot(path, "ns1", 42, POINTERS, versions)
    loaded = load_snapshot(path, "ns1")
    assert loaded is not None
    assert loaded.rev == 42
    assert loaded.pointers == POINTERS
    assert loaded.versions == {key: versions[key] for key in [("movie-critic", 1), ("movie-critic", 2)]}
    assert loaded.versions[("movie-critic", 2)].variables == {"level", "movie"}


def test_replace_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "prompts.msgpack"
    save_snapshot(path, "ns1", 1, POINTERS, _versions())
    save_snapshot(path, "ns1", 2, {"movie-critic": {"latest": 2}}, _versions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prompts.msgpack"]
    loaded = load_snapshot(path, "ns1")
    assert loaded is not None and loaded.rev == 2


def test_missing_file_is_none(tmp_path: Path) -> None:
    assert load_snapshot(tmp_path / "nope.msgpack", "ns1") is None


def _good_payload() -> dict[str, object]:
    return {
        "format": FORMAT,
        "schema": SCHEMA,
        "namespace": "ns1",
        "rev": 3,
        "written_at": 0.0,
        "pointers": {"p": {"production": 1}},
        "versions": [["p", 1, "text", "2026-01-01T00:00:00+00:00", None, None, {}]],
    }


BROKEN: dict[str, object] = {
    "garbage": b"\x00\x01not msgpack at all\xff",
    "truncated": msgpack.packb(_good_payload())[:-7],
    "empty": b"",
    "a list": msgpack.packb([1, 2, 3]),
    "foreign format": msgpack.packb({**_good_payload(), "format": "something-else"}),
    "future schema": msgpack.packb({**_good_payload(), "schema": 99}),
    "other namespace": msgpack.packb({**_good_payload(), "namespace": "ns2"}),
    "negative rev": msgpack.packb({**_good_payload(), "rev": -1}),
    "label on missing version": msgpack.packb({**_good_payload(), "pointers": {"p": {"production": 2}}}),
    "bad date": msgpack.packb({**_good_payload(), "versions": [["p", 1, "t", "yesterday", None, None, {}]]}),
    "bad version number": msgpack.packb({**_good_payload(), "versions": [["p", 0, "t", "2026-01-01", None, None, {}]]}),
    "short row": msgpack.packb({**_good_payload(), "versions": [["p", 1]]}),
}


@pytest.mark.parametrize("content", BROKEN.values(), ids=BROKEN.keys())
def test_unusable_file_raises_corrupt_and_is_left_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "prompts.msgpack"
    path.write_bytes(content)
    with pytest.raises(RegistryCorruptError):
        load_snapshot(path, "ns1")
    assert path.read_bytes() == content


def test_the_good_payload_used_above_does_load(tmp_path: Path) -> None:
    path = tmp_path / "prompts.msgpack"
    path.write_bytes(msgpack.packb(_good_payload()))
    loaded = load_snapshot(path, "ns1")
    assert loaded is not None and loaded.pointers == {"p": {"production": 1}}


def test_unwritable_directory_raises_oserror_and_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "prompts.msgpack"
    save_snapshot(path, "ns1", 1, POINTERS, _versions())
    before = path.read_bytes()
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    with pytest.raises(OSError):
        save_snapshot(blocker / "prompts.msgpack", "ns1", 2, POINTERS, _versions())
    assert path.read_bytes() == before
