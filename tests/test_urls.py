"""Registry URLs in the first hour: a typo is refused in one line with a "did you mean", never turned
into a JSON file named after it; a file URL creates the file, never its folder (the default's
``./.promptreg/`` aside). Each refusal is checked to leave the disk as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from promptreg.registry import InvalidInputError, JsonFilePromptRegistry, PromptRegistryFactory, RedisPromptRegistry
from promptreg.registry.cli import cli
from promptreg.registry.factory import DEFAULT_URL
from promptreg.registry.urls import UrlParts, query_pairs, redact_url, split_url, url_secrets, without_query_parameter

SECRET = "hunter2-s3cret"


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory (relative paths land here) and no PROMPTREG_* in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROMPTREG_URL", raising=False)
    monkeypatch.delenv("PROMPTREG_NAMESPACE", raising=False)
    return tmp_path


def _everything_under(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


# -- values that are not registry URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("127.0.0.1:6379", "redis://127.0.0.1:6379/0"),
        ("localhost:6379", "redis://localhost:6379/0"),
        ("localhost:6380/2", "redis://localhost:6380/2"),
        ("[::1]:6379", "redis://[::1]:6379/0"),
        ("redis//host:6379/0", "redis://host:6379/0"),
        ("redis:/host:6379", "redis://host:6379/0"),
        ("redis:host:6379", "redis://host:6379/0"),
        ("redis:6379", "redis://localhost:6379/0"),
        ("rediss//host:6380/1", "rediss://host:6380/1"),
        ("unix:/tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("redis+sentinel//h1:26379,h2:26379/mymaster", "redis+sentinel://h1:26379,h2:26379/mymaster"),
        ("postgresql:/db.example/prompts", "postgresql://db.example/prompts"),
        ("./registry", "./registry.json"),
    ],
)
def test_a_mistyped_url_is_refused_in_one_line_with_what_it_meant(empty_cwd: Path, url: str, meant: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PromptRegistryFactory.from_url(url)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 300, message
    assert f"did you mean {meant}?" in message
    assert "expected redis://" in message and "path ending in .json" in message
    assert _everything_under(empty_cwd) == []


@pytest.mark.parametrize("url", ["registry", "notes.txt", "C:registry", "redis"])
def test_a_value_that_is_no_url_nor_json_path_is_refused_saying_what_was_expected(empty_cwd: Path, url: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^not a registry URL: .*; expected redis://, rediss://, unix://"):
        PromptRegistryFactory.from_url(url)
    assert _everything_under(empty_cwd) == []


def test_a_close_misspelling_of_a_scheme_is_named_with_the_right_one() -> None:
    with pytest.raises(InvalidInputError) as caught:
        PromptRegistryFactory.from_url(f"redis+sentinal://:{SECRET}@h1:26379/mymaster")
    message = str(caught.value)
    assert message.startswith("unsupported registry URL scheme 'redis+sentinal'")
    assert "did you mean redis+sentinel://:***@h1:26379/mymaster?" in message
    assert SECRET not in message


@pytest.mark.parametrize(
    "url",
    [
        f"user:{SECRET}@127.0.0.1:6379",
        f"redis//user:{SECRET}@127.0.0.1:6379/0",
        f"redis:/:{SECRET}@127.0.0.1:6379/0",
        f"{SECRET}@127.0.0.1:6379",
    ],
)
def test_a_refused_url_never_shows_its_password(empty_cwd: Path, url: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        PromptRegistryFactory.from_url(url)
    assert SECRET not in str(caught.value)
    assert "did you mean redis://" in str(caught.value)
    assert _everything_under(empty_cwd) == []


@pytest.mark.parametrize(
    ("url", "meant"),
    [
        ("redis//host:6379/0", "redis://host:6379/0"),
        ("redis:/host:6379/0", "redis://host:6379/0"),
        ("127.0.0.1:6379", "redis://127.0.0.1:6379/0"),
    ],
)
def test_the_redis_backend_refuses_a_url_without_its_slashes_too(url: str, meant: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        RedisPromptRegistry.from_url(url)
    assert f"did you mean {meant}?" in str(caught.value)


def test_scheme_less_user_info_is_redacted_but_a_path_is_left_alone() -> None:
    assert redact_url(f"user:{SECRET}@host:6379") == "user:***@host:6379"
    assert redact_url(f"redis//u:{SECRET}@host:6379/0") == "redis//u:***@host:6379/0"
    assert url_secrets(f"redis//u:{SECRET}@host:6379/0") == [SECRET]
    assert redact_url("/srv/team@work/registry.json") == "/srv/team@work/registry.json"
    assert url_secrets("/srv/team@work/registry.json") == []


# -- the command line ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "localhost:6379", "redis//127.0.0.1:6379/0"])
def test_cli_create_with_a_mistyped_url_fails_in_one_line_and_writes_nothing(empty_cwd: Path, url: str) -> None:
    result = CliRunner().invoke(cli, ["--url", url, "create", "x"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: not a registry URL"), result.stderr
    assert "did you mean redis://" in result.stderr and "created" not in result.stderr
    assert _everything_under(empty_cwd) == []


def test_cli_create_in_a_missing_folder_fails_and_creates_nothing(empty_cwd: Path) -> None:
    url = f"file://{empty_cwd / 'typo' / 'registry.json'}"
    result = CliRunner().invoke(cli, ["--url", url, "create", "x"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and "does not exist" in result.stderr, result.stderr
    assert _everything_under(empty_cwd) == []


def test_cli_default_url_still_creates_its_folder(empty_cwd: Path) -> None:
    result = CliRunner().invoke(cli, ["create", "x"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert (empty_cwd / ".promptreg" / "registry.json").is_file()


# -- file URLs: the file, never its folder ------------------------------------------------------------


@pytest.mark.parametrize("form", ["file://{}", "{}", "FILE://{}", "file:{}"])
def test_an_explicit_file_url_in_a_missing_folder_is_refused_and_creates_nothing(empty_cwd: Path, form: str) -> None:
    missing = empty_cwd / "no" / "such" / "dir" / "reg.json"
    with pytest.raises(InvalidInputError) as caught:
        PromptRegistryFactory.from_url(form.format(missing))
    message = str(caught.value)
    assert message.startswith(f"registry folder {missing.parent} does not exist") and "\n" not in message
    assert _everything_under(empty_cwd) == []


def test_nonexistent_absolute_folder_is_refused() -> None:
    assert not Path("/nonexistent").exists()
    with pytest.raises(InvalidInputError, match="registry folder /nonexistent/dir does not exist"):
        PromptRegistryFactory.from_url("file:///nonexistent/dir/reg.json")
    assert not Path("/nonexistent").exists()


def test_a_relative_json_path_in_a_missing_folder_is_refused(empty_cwd: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        PromptRegistryFactory.from_url("./sub/reg.json")
    with pytest.raises(InvalidInputError, match="does not exist"):
        PromptRegistryFactory.create_from_config({"PROMPTREG_URL": "file://./sub/reg.json"})
    assert _everything_under(empty_cwd) == []


def test_an_explicit_file_url_in_an_existing_folder_creates_only_the_file(empty_cwd: Path) -> None:
    (empty_cwd / "here").mkdir()
    reg = PromptRegistryFactory.from_url("./here/reg.json")
    assert isinstance(reg, JsonFilePromptRegistry) and not reg.create_parent
    reg.create_prompt("x")
    assert _everything_under(empty_cwd) == ["here", "here/reg.json", "here/reg.json.lock"]


@pytest.mark.parametrize("environ", [{}, {"PROMPTREG_URL": ""}, {"PROMPTREG_URL": DEFAULT_URL}])
def test_only_the_default_url_creates_its_folder(empty_cwd: Path, environ: dict[str, str]) -> None:
    reg = PromptRegistryFactory.create_from_config(environ)
    assert isinstance(reg, JsonFilePromptRegistry) and reg.create_parent
    assert _everything_under(empty_cwd) == []  # opening writes nothing
    reg.create_prompt("x")
    assert os.path.isfile(empty_cwd / ".promptreg" / "registry.json")
    with pytest.raises(InvalidInputError, match="does not exist"):  # the same folder, another path: explicit
        PromptRegistryFactory.from_url("file://./.promptreg/other/registry.json")
    assert not (empty_cwd / ".promptreg" / "other").exists()


# -- where the user info and the query are ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "without"),
    [
        (
            "postgresql://app:p?ss@db/prompts?namespace=ns&sslmode=disable",
            "postgresql://app:p?ss@db/prompts?sslmode=disable",
        ),
        ("postgresql://db/prompts?namespace=a&user=me@corp&namespace=b", "postgresql://db/prompts?user=me@corp"),
        ("postgresql://app:p@ss@db/prompts?namespace=ns", "postgresql://app:p@ss@db/prompts"),
        ("redis://h:6379/0", "redis://h:6379/0"),
    ],
)
def test_a_removed_query_parameter_is_the_one_the_backend_would_read(url: str, without: str) -> None:
    # The demo takes namespace= out of a URL and then deletes its namespace: a parameter left in
    # would name one the demo deletes.
    assert without_query_parameter(url, "namespace") == without


def test_a_password_is_cut_where_the_backends_cut_it() -> None:
    parts = split_url(f"postgresql://app:p@ss/w?rd#{SECRET}@db:5432/prompts?password={SECRET}&sslmode=require")
    assert parts is not None
    assert (parts.userinfo, parts.location) == (f"app:p@ss/w?rd#{SECRET}", "db:5432/prompts")
    assert parts.query == f"password={SECRET}&sslmode=require"
    assert parts.password() == f"p@ss/w?rd#{SECRET}"
    assert split_url("redis//u:p/w@h:6379/0") == UrlParts("redis//", "u:p/w", "h:6379/0", None)
    assert split_url("127.0.0.1:6379") is None
    assert query_pairs(f"password=a&b{SECRET}&x=1") == [("password", f"a&b{SECRET}"), ("x", "1")]
    assert redact_url(f"redis://h/0?password=a&b{SECRET}&x=1") == "redis://h/0?password=***&x=1"
    assert url_secrets(f"redis://h/0?password=a&b{SECRET}&x=1") == [f"a&b{SECRET}", f"a%26b{SECRET}"]
