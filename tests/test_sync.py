"""Prompts as code: ``promptreg.registry.sync`` on every backend (fakeredis, real Redis, JSON file, PostgreSQL)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import (
    IncompatibleVersionError,
    InvalidInputError,
    InvalidNameError,
    LabelConflictError,
    PromptFileError,
)
from promptreg.registry.postgres.store import PostgresPromptRegistry
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.sync import SyncPlan, apply_sync, parse_prompt_file, plan_sync, read_prompt_files
from tests.backends import Cli
from tests.postgres_server import PostgresServer, postgres_raw


@pytest.fixture
def registry(any_registry: PromptRegistry) -> PromptRegistry:
    """Every backend (tests/conftest.py): the JSON file, fakeredis, redis-server, a Cluster, PostgreSQL."""
    return any_registry


def write(folder: Path, relative: str, content: str) -> Path:
    path = folder / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")
    return path


def snapshot(registry: PromptRegistry) -> dict[str, object]:
    """Everything observable: prompts (versions, labels) and every audit trail."""
    # model_dump, not the models: PromptVersion equality also compares its parsed template object.
    result: dict[str, object] = {}
    for name in registry.list_prompts():
        prompt = registry.get_prompt(name)
        assert prompt is not None
        result[name] = (prompt.model_dump(), [event.model_dump() for event in registry.history(name)])
    return result


def sync(registry: PromptRegistry, folder: Path, **kwargs: object) -> list[str]:
    plan = plan_sync(registry, folder, **kwargs)  # type: ignore[arg-type]
    return [step.describe() for step in apply_sync(registry, plan, author="ci")]


CRITIC_V1 = """
    ---
    labels: [production]
    metadata: {model: gpt-4o, temperature: 0.2}
    description: Reviews a movie
    message: first cut
    ---
    As a movie critic, do you like {{movie}}?
"""

CRITIC_V2 = """
    ---
    labels: production
    metadata: {model: gpt-4o, temperature: 0.2}
    ---
    You are a {{criticlevel}} movie critic. Write a review for {{movie}}.
"""


def test_first_sync_creates_prompt_version_and_labels(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)

    steps = sync(registry, folder)

    assert steps == [
        "movie-critic: create prompt",
        f"movie-critic: add version 1 (from {folder / 'movie-critic.prompt'})",
        "movie-critic: label production unset -> 1",
    ]
    prompt = registry.get_prompt("movie-critic")
    assert prompt is not None
    assert prompt.description == "Reviews a movie"
    assert prompt.labels == {"production": 1}
    version = prompt.versions[0]
    assert version.prompt_text == "As a movie critic, do you like {{movie}}?\n"
    assert version.metadata == {"model": "gpt-4o", "temperature": 0.2}
    assert version.message == "first cut"
    assert version.author == "ci"
    moves = [e for e in registry.history("movie-critic") if e.action == "set_label"]
    assert moves[-1].reason == f"sync from {folder / 'movie-critic.prompt'}"


def test_rerun_changes_nothing(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)
    write(folder, "team/summarizer.prompt", "Summarize {{text}} in one line.\n")
    sync(registry, folder, labels=["staging"])
    before = snapshot(registry)
    rev_before = _revision(registry)

    plan = plan_sync(registry, folder, labels=["staging"])

    assert not plan.changes
    assert apply_sync(registry, plan) == []
    assert snapshot(registry) == before
    assert _revision(registry) == rev_before


def test_edit_adds_version_and_moves_labels(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    path = write(folder, "movie-critic.prompt", CRITIC_V1)
    sync(registry, folder)
    write(folder, "movie-critic.prompt", CRITIC_V2)

    steps = sync(registry, folder)

    assert steps == [f"movie-critic: add version 2 (from {path})", "movie-critic: label production 1 -> 2"]
    assert registry.get_version("movie-critic", label="production").version == 2
    assert registry.get_version("movie-critic").prompt_text.startswith("You are a {{criticlevel}}")


def test_metadata_change_alone_is_a_new_version(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)
    sync(registry, folder)
    write(folder, "movie-critic.prompt", CRITIC_V1.replace("0.2", "0.7"))

    sync(registry, folder)

    prompt = registry.get_prompt("movie-critic")
    assert prompt is not None and len(prompt.versions) == 2
    assert prompt.versions[1].metadata["temperature"] == 0.7
    assert prompt.labels["production"] == 2


def test_revert_moves_labels_back_without_new_version(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)
    sync(registry, folder)
    write(folder, "movie-critic.prompt", CRITIC_V2)
    sync(registry, folder)
    write(folder, "movie-critic.prompt", CRITIC_V1)  # git revert

    steps = sync(registry, folder)

    assert steps == ["movie-critic: label production 2 -> 1"]
    prompt = registry.get_prompt("movie-critic")
    assert prompt is not None
    assert [v.version for v in prompt.versions] == [1, 2]
    assert prompt.labels == {"production": 1}
    # and the revert is itself idempotent
    assert not plan_sync(registry, folder).changes


def test_message_is_not_part_of_identity(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)
    sync(registry, folder)
    write(folder, "movie-critic.prompt", CRITIC_V1.replace("first cut", "reworded message"))

    assert not plan_sync(registry, folder).changes


def test_sub_folders_give_slash_names(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "team/search/rewrite.prompt", "Rewrite {{query}}\n")
    write(folder, "team/critic.prompt", "Critic {{movie}}\n")
    write(folder, "README.md", "not a prompt")

    sync(registry, folder)

    assert registry.list_prompts() == ["team/critic", "team/search/rewrite"]
    assert registry.get_version("team/search/rewrite").prompt_text == "Rewrite {{query}}\n"


def test_extra_labels_apply_to_every_file(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "a.prompt", "---\nlabels: [production]\n---\nA\n")
    write(folder, "b.prompt", "B\n")

    sync(registry, folder, labels=["staging"])

    assert registry.get_prompt("a") is not None and registry.get_prompt("a").labels == {  # type: ignore[union-attr]
        "production": 1,
        "staging": 1,
    }
    assert registry.get_prompt("b").labels == {"staging": 1}  # type: ignore[union-attr]


def test_existing_equal_version_is_reused(registry: PromptRegistry, tmp_path: Path) -> None:
    registry.create_prompt("movie-critic")
    registry.add_version("movie-critic", "Old {{movie}}\n", author="alice")
    registry.add_version("movie-critic", "New {{movie}}\n", author="bob")
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", "---\nlabels: [production]\n---\nOld {{movie}}\n")

    steps = sync(registry, folder)

    assert steps == ["movie-critic: label production unset -> 1"]
    assert len(registry.get_prompt("movie-critic").versions) == 2  # type: ignore[union-attr]


def test_dry_run_plan_writes_nothing(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V1)

    plan = plan_sync(registry, folder)

    assert [s.action for s in plan.steps] == ["create_prompt", "add_version", "set_label"]
    assert registry.list_prompts() == []


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("---\nlabels: [production\n---\nbody\n", "invalid YAML"),
        ("---\nlables: [production]\n---\nbody\n", "unknown front matter key(s) lables"),
        ("---\nlabels: [latest]\n---\nbody\n", "reserved"),
        ("---\nlabels: [bad label]\n---\nbody\n", "invalid label"),
        ("---\nlabels: {a: 1}\n---\nbody\n", "labels must be a list"),
        ("---\nmetadata: [1, 2]\n---\nbody\n", "metadata must be a mapping"),
        ("---\nmetadata: {when: 2024-01-01}\n---\nbody\n", "line 2: YAML type 'timestamp' is not a JSON type"),
        # Hostile front matter (a pull request can write any of these): refused with the line.
        ("---\nmetadata:\n  a: &x [1, 2]\n  b: *x\n---\nbody\n", "line 3: YAML anchors and aliases"),
        ("---\nmetadata: {n: 18446744073709551616}\n---\nbody\n", "line 2: integer out of the signed 64-bit range"),
        ("---\nmetadata: {n: " + "9" * 5000 + "}\n---\nbody\n", "line 2: integer out of the signed 64-bit range"),
        ("---\nmetadata: {n: .nan}\n---\nbody\n", "line 2: '.nan' is not a finite number"),
        ("---\nmetadata: {n: -.inf}\n---\nbody\n", "is not a finite number"),
        ("---\nmetadata: {1: one}\n---\nbody\n", "line 2: mapping keys must be plain strings"),
        ("---\nmetadata: {? [a, b] : c}\n---\nbody\n", "line 2: mapping keys must be plain strings"),
        ("---\nmetadata:\n  <<: {a: 1}\n---\nbody\n", "line 3: mapping keys must be plain strings"),
        ("---\nmetadata: {b: !!binary aGVsbG8=}\n---\nbody\n", "line 2: YAML type 'binary' is not a JSON type"),
        ("---\nmetadata: !!set {a, b}\n---\nbody\n", "YAML type 'set' is not a JSON type"),
        ("---\nmetadata: {o: !!python/object:os.system x}\n---\nbody\n", "is not a JSON type"),
        ("---\nmetadata: {d: " + "[" * 200 + "]" * 200 + "}\n---\nbody\n", "line 2: nested deeper than 34"),
        ('---\nmetadata: {s: "\\ud800"}\n---\nbody\n', "metadata.s is not valid Unicode: lone surrogate"),
        ('---\nmessage: "\\udcff"\n---\nbody\n', "message is not valid Unicode"),
        ("---\ndescription: " + "x" * 300_000 + "\n---\nbody\n", "front matter is 300014 bytes, the limit is 163840"),
        ("---\n- a list\n---\nbody\n", "front matter must be a mapping"),
        ("---\nlabels: [production]\nbody without end\n", "no closing '---'"),
        ("---\nlabels: [production]\n---\n  \n", "body is empty"),
        ("---\ndescription: [not, text]\n---\nbody\n", "description must be a string"),
    ],
    ids=lambda value: value.split(":")[0].split("(")[0].strip() if "\n" not in value else None,
)
def test_invalid_file_anywhere_writes_nothing(
    registry: PromptRegistry, tmp_path: Path, content: str, reason: str
) -> None:
    folder = tmp_path / "prompts"
    write(folder, "a-good.prompt", "---\nlabels: [production]\n---\nGood {{x}}\n")
    write(folder, "existing.prompt", "Existing\n")
    sync(registry, folder)
    write(folder, "a-good.prompt", "---\nlabels: [production]\n---\nChanged {{x}}\n")  # a pending change
    bad = write(folder, "zz/bad.prompt", content)
    before = snapshot(registry)

    with pytest.raises(PromptFileError) as info:
        plan_sync(registry, folder)

    assert isinstance(info.value, InvalidInputError)
    assert info.value.path == bad
    assert str(bad) in str(info.value)
    assert reason in str(info.value)
    assert snapshot(registry) == before


def test_invalid_name_from_path_writes_nothing(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "good.prompt", "Good\n")
    bad = write(folder, "has space.prompt", "Bad\n")

    with pytest.raises(PromptFileError, match="invalid prompt name") as info:
        plan_sync(registry, folder)

    assert info.value.path == bad
    assert registry.list_prompts() == []


def test_not_utf8_file_is_refused(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    (folder / "latin1.prompt").write_bytes("caf\u00e9\n".encode("latin-1"))

    with pytest.raises(PromptFileError, match="not UTF-8"):
        plan_sync(registry, folder)
    assert registry.list_prompts() == []


def test_missing_directory_is_a_typed_error(registry: PromptRegistry, tmp_path: Path) -> None:
    with pytest.raises(PromptFileError, match="not a directory"):
        plan_sync(registry, tmp_path / "nope")


def test_invalid_extra_label_is_refused(registry: PromptRegistry, tmp_path: Path) -> None:
    write(tmp_path / "prompts", "a.prompt", "A\n")
    with pytest.raises(InvalidNameError):
        plan_sync(registry, tmp_path / "prompts", labels=["latest"])
    assert registry.list_prompts() == []


def test_label_moved_since_plan_is_not_overwritten(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    write(folder, "a.prompt", "---\nlabels: [production]\n---\nA1\n")
    sync(registry, folder)
    write(folder, "a.prompt", "---\nlabels: [production]\n---\nA2\n")
    plan = plan_sync(registry, folder)
    registry.add_version("a", "hotfix")
    registry.set_label("a", "production", 2, author="oncall")

    with pytest.raises(LabelConflictError):
        apply_sync(registry, plan)

    assert registry.get_version("a", label="production").prompt_text == "hotfix"


def test_front_matter_forms(tmp_path: Path) -> None:
    plain = write(tmp_path, "plain.prompt", "No front matter: --- here\n---\n")
    empty = write(tmp_path, "empty.prompt", "---\n---\nBody\n")
    crlf = tmp_path / "crlf.prompt"
    crlf.write_bytes(b"---\r\nlabels: staging\r\n---\r\nLine one\r\nLine two\r\n")

    assert parse_prompt_file(plain, "plain").text == "No front matter: --- here\n---\n"
    assert parse_prompt_file(empty, "empty").text == "Body\n"
    parsed = parse_prompt_file(crlf, "crlf")
    assert parsed.labels == ("staging",)
    assert parsed.text == "Line one\nLine two\n"


def test_example_folder_is_valid() -> None:
    folder = Path(__file__).resolve().parent.parent / "examples" / "prompts"
    files = read_prompt_files(folder)
    names = [f.name for f in files]
    assert "movie-critic" in names
    assert all(f.text.strip() for f in files)


def _revision(registry: PromptRegistry) -> object:
    if isinstance(registry, RedisPromptRegistry):
        return registry.redis.get(registry.keys.rev)
    if isinstance(registry, PostgresPromptRegistry):
        return registry._revision()
    from promptreg.registry.file_store import JsonFilePromptRegistry

    assert isinstance(registry, JsonFilePromptRegistry)
    return registry.load_state().rev


# -- a dry run refuses as the sync would; a byte order mark hides no front matter ------------


def test_plan_check_compatible_raises_what_apply_sync_raises(registry: PromptRegistry, tmp_path: Path) -> None:
    registry.create_prompt("movie-critic", compatibility="backward")
    registry.add_version("movie-critic", "As a movie critic, do you like {{movie}}?\n")
    registry.set_label("movie-critic", "production", 1)
    folder = tmp_path / "prompts"
    write(folder, "movie-critic.prompt", CRITIC_V2)  # needs criticlevel, which version 1 does not take
    plan = plan_sync(registry, folder)
    before = snapshot(registry)

    with pytest.raises(IncompatibleVersionError) as checked:
        plan.check_compatible()
    with pytest.raises(IncompatibleVersionError) as applied:
        apply_sync(registry, plan)

    assert str(checked.value) == str(applied.value)
    assert (checked.value.label, checked.value.current, checked.value.added) == ("production", 1, ("criticlevel",))
    assert snapshot(registry) == before
    plan.check_compatible(force=True)  # --force would make the move: nothing to refuse
    assert snapshot(registry) == before


def test_byte_order_mark_does_not_hide_the_front_matter(registry: PromptRegistry, tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    folder.mkdir()
    body = textwrap.dedent(CRITIC_V1).lstrip("\n")
    (folder / "movie-critic.prompt").write_bytes(b"\xef\xbb\xbf" + body.replace("\n", "\r\n").encode())

    steps = sync(registry, folder)

    assert steps[-1] == "movie-critic: label production unset -> 1"
    version = registry.get_version("movie-critic", label="production")
    assert version.prompt_text == "As a movie critic, do you like {{movie}}?\n"
    assert version.metadata == {"model": "gpt-4o", "temperature": 0.2}
    assert version.message == "first cut"
    assert sync(registry, folder) == []


def test_file_growing_past_its_size_names_the_limit(tmp_path: Path) -> None:
    """A file whose size says less than it holds (a /proc file says 0) is still cut at the limit, and the
    message says what the limit is."""
    from promptreg.registry.prompt_files import read_bounded

    with pytest.raises(PromptFileError) as caught:
        read_bounded(Path("/proc/self/status"), 10)

    assert str(caught.value) == "/proc/self/status: file is over 10 bytes, the limit is 10"


# -- everything a backend would refuse is refused before the first write -----------------------


def _nul_folder(tmp_path: Path) -> tuple[Path, Path]:
    """Two good files (two new prompts, a version, a label move), then one whose text holds a NUL."""
    folder = tmp_path / "prompts"
    write(folder, "a-critic.prompt", CRITIC_V1)
    write(folder, "b-summary.prompt", "Summarize {{text}}.\n")
    bad = folder / "c-broken.prompt"
    bad.write_bytes(b"---\nlabels: [production]\n---\nHello\x00 {{name}}\n")
    return folder, bad


def test_a_nul_in_a_later_file_is_refused_before_anything_is_written(registry: PromptRegistry, tmp_path: Path) -> None:
    folder, bad = _nul_folder(tmp_path)
    before = snapshot(registry)

    with pytest.raises(PromptFileError) as caught:
        plan_sync(registry, folder)

    assert caught.value.path == bad and "NUL character (U+0000)" in str(caught.value)
    assert snapshot(registry) == before == {}


@pytest.mark.postgres
def test_postgres_sync_of_a_nul_in_a_later_file_writes_nothing_dry_or_real(
    postgres_server: PostgresServer, namespace: str, tmp_path: Path
) -> None:
    """The issue's run: ``--dry-run`` passed, then the real sync committed 2 prompts, 1 version, 1 label
    move and 4 audit rows before failing. Now both exit 1 with the same line and write nothing."""
    url = postgres_server.url()
    run = Cli({"PROMPTREG_URL": url, "PROMPTREG_NAMESPACE": namespace}, tmp_path)
    run.ok("create", "existing")  # the namespace holds something, so "unchanged" means something
    folder, bad = _nul_folder(tmp_path)
    before = postgres_raw(url, namespace)

    dry = run.fails("sync", str(folder), "--dry-run")
    real = run.fails("sync", str(folder))

    assert dry == real and str(bad) in real and "NUL character" in real
    assert postgres_raw(url, namespace) == before


def _racing_plan(registry: PromptRegistry, tmp_path: Path) -> SyncPlan:
    """A plan of 5 writes whose last one (a label move of b-critic) meets a label moved after the plan."""
    registry.create_prompt("b-critic")
    registry.add_version("b-critic", "One {{movie}}?\n")
    registry.add_version("b-critic", "Two {{movie}}?\n")
    registry.set_label("b-critic", "production", 1)
    folder = tmp_path / "prompts"
    write(folder, "a-new.prompt", "---\nlabels: [production]\n---\nNew {{x}}\n")
    write(folder, "b-critic.prompt", "---\nlabels: [production]\n---\nThree {{movie}}?\n")
    plan = plan_sync(registry, folder)
    assert [s.describe().split(" (from")[0] for s in plan.steps] == [
        "a-new: create prompt",
        "a-new: add version 1",
        "a-new: label production unset -> 1",
        "b-critic: add version 3",
        "b-critic: label production 1 -> 3",
    ]
    registry.set_label("b-critic", "production", 2, author="hotfix")  # someone moved it meanwhile
    return plan


def test_an_error_during_the_sync_says_what_was_written(registry: PromptRegistry, tmp_path: Path) -> None:
    plan = _racing_plan(registry, tmp_path)
    before = snapshot(registry)

    with pytest.raises(LabelConflictError) as caught:
        apply_sync(registry, plan, author="ci")

    error = caught.value
    assert (error.expected, error.actual) == (1, 2)  # the error keeps its type and attributes
    message = str(error)
    assert message.startswith("label 'production' of prompt 'b-critic' points at version 2, expected it at version 1")
    if isinstance(registry, PostgresPromptRegistry):  # one transaction: all or nothing
        assert "nothing was written" in message
        assert snapshot(registry) == before
        return
    assert "sync stopped after 4 write(s)" in message
    for made in [step.describe() for step in plan.steps[:4]]:
        assert made in message
    assert plan.steps[4].describe() not in message
    # ... and that is what the registry holds: the four writes, not the fifth.
    assert registry.list_prompts() == ["a-new", "b-critic"]
    critic = registry.get_prompt("b-critic")
    assert critic is not None and len(critic.versions) == 3 and critic.labels == {"production": 2}
    # Running the sync again continues from there (here: the move the hotfix raced, now from 2).
    assert sync(registry, plan.directory) == ["b-critic: label production 2 -> 3"]


def test_sync_checks_a_deleted_label_and_a_change_of_type(registry: PromptRegistry, tmp_path: Path) -> None:
    """Deleting the label first does not open a way round the mode, nor does turning the file into a
    chat file whose history placeholder replaces the {{history}} variable."""
    registry.create_prompt("support", compatibility="backward")
    registry.add_version("support", "History: {{history}}\nQuestion: {{question}}\n")
    registry.set_label("support", "production", 1)
    registry.delete_label("support", "production")
    folder = tmp_path / "prompts"
    chat = '---\nlabels: [production]\n---\n{{role "system"}}\nAnswer.\n{{history}}\n{{role "user"}}\n{{question}}\n'
    write(folder, "support.prompt", chat)

    plan = plan_sync(registry, folder)
    before = snapshot(registry)

    assert plan.steps[-1].describe() == (
        "support: label production unset -> 2  INCOMPATIBLE (backward; text -> chat; history variable <-> "
        "placeholder; against version 1, where the deleted label pointed)"
    )
    with pytest.raises(IncompatibleVersionError) as caught:
        apply_sync(registry, plan)
    assert (caught.value.current, caught.value.version) == (1, 2) and "chat" in str(caught.value)
    assert snapshot(registry) == before
    apply_sync(registry, plan, force=True)
    assert registry.history("support")[-1].forced
