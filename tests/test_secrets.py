"""No form of URL, well formed or not, ever shows its password: not in an exception (its str, its
repr, its whole chain), a log record, the CLI's output (also with ``PROMPTREG_DEBUG=1``), a
client's status or a redacted URL, on every backend.

Each form is tried with passwords that hold what URL parsers cut at (raw ``@``, ``:``, ``/``,
``?``, ``#``, ``&``; ``%`` escapes valid and not) against real servers: a redis-server with
``requirepass``, a PostgreSQL whose ``app`` role needs a password (scram), and unreachable ports.
What must not show is the password as written and as decoded, and every piece of 3 characters or
more of them that the rest of the URL (hosts, user, path) does not hold.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, unquote

import psycopg
import pytest
import redis
from click.testing import CliRunner
from psycopg import sql
from redis.connection import parse_url

from promptreg.client import PromptClient
from promptreg.registry import (
    InvalidInputError,
    PromptRegistryError,
    PromptRegistryFactory,
    RegistryAuthError,
    RegistryUnavailableError,
)
from promptreg.registry.cli import cli
from promptreg.registry.postgres.conn import connect, parse_postgres_url
from promptreg.registry.redis.topology import parse_redis_url
from promptreg.registry.urls import redact_url, split_url, url_secrets
from tests.postgres_server import PostgresServer, need_postgres
from tests.redis_server import RedisServer, free_port

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

SERVER_PASSWORD = "right-Pw-4u"
"""What the servers accept (no test URL below holds it: every attempt is refused or unreachable)."""

PASSWORDS = {
    "at": "QJX@ZWK",
    "several-at": "QJX@ZW@KVY",
    "colon": "QJX:ZWK",
    "bad-escape": "QJX%ZZWK",
    "bad-escape-short": "QJX%ZWKVY",
    "escaped-at": "QJX%40ZWK",
    "slash": "QJX/ZWK",
    "question-mark": "QJX?ZWK",
    "hash": "QJX#ZWK",
    "ampersand": "QJX&ZWK",
    "everything": "QJ@X:Z/W?K#V%ZZY&",
}
"""Passwords as written in the URLs: letters that no host, user, path or message holds."""

REDIS_FORMS = {
    "empty-user": "redis://:{pw}@127.0.0.1:{redis}/0",
    "user": "redis://default:{pw}@127.0.0.1:{redis}/0",
    "user-only": "redis://{pw}@127.0.0.1:{redis}/0",
    "query": "redis://127.0.0.1:{redis}/0?password={pw}",
    "query-then-more": "redis://127.0.0.1:{redis}/0?password={pw}&socket_timeout=5",
    "unreachable": "redis://default:{pw}@127.0.0.1:{dead}/0?socket_connect_timeout=2",
    "tls-unreachable": "rediss://default:{pw}@127.0.0.1:{dead}/0",
    "ipv6": "redis://default:{pw}@[::1]:{dead}/0",
    "unix-socket": "unix://:{pw}@{tmp}/no.sock?db=0",
    "sentinels": "redis+sentinel://:{pw}@127.0.0.1:{dead},127.0.0.1:{dead2}/svc?sentinel_password={pw}",
    "cluster": "redis+cluster://default:{pw}@127.0.0.1:{dead},[::1]:{dead2}/",
    "no-colon": "redis//default:{pw}@127.0.0.1:{redis}/0",
    "one-slash": "redis:/default:{pw}@127.0.0.1:{redis}/0",
    "no-scheme": "default:{pw}@127.0.0.1:{redis}",
}
POSTGRES_FORMS = {
    "user": "postgresql://app:{pw}@127.0.0.1:{postgres}/postgres",
    "postgres-scheme": "postgres://app:{pw}@127.0.0.1:{postgres}/postgres?sslmode=disable",
    "query": "postgresql://app@127.0.0.1:{postgres}/postgres?password={pw}",
    "query-then-more": "postgresql://app@127.0.0.1:{postgres}/postgres?password={pw}&application_name=t",
    "namespace": "postgresql://app:{pw}@127.0.0.1:{postgres}/postgres?namespace=secrets",
    "unreachable": "postgresql://app:{pw}@127.0.0.1:{dead}/postgres?connect_timeout=2",
    "host-list": "postgresql://app:{pw}@127.0.0.1:{dead},127.0.0.1:{dead2}/postgres",
    "ipv6": "postgresql://app:{pw}@[::1]:{dead}/postgres",
    "unix-socket": "postgresql://app:{pw}@{tmp_encoded}/postgres",
    "unix-socket-query": "postgresql:///postgres?host={tmp}&user=app&password={pw}",
    "no-colon": "postgresql//app:{pw}@127.0.0.1:{postgres}/postgres",
    "one-slash": "postgresql:/app:{pw}@127.0.0.1:{postgres}/postgres",
}
FILE_FORMS = {
    "user": "file://u:{pw}@{tmp}/registry.json",
    "empty-user": "file://:{pw}@{tmp}/registry.json",
    "query": "file://{tmp}/registry.json?password={pw}",
    "no-slashes": "file:u:{pw}@{tmp}/registry.json",
}

CLIENT_PASSWORDS = ("at", "bad-escape", "everything")
"""A PromptClient costs its start timeout: every form is tried with these passwords."""


@dataclass
class Servers:
    redis: int
    postgres: int
    tmp: Path

    def url(self, form: str, password: str) -> str:
        return form.format(
            pw=password,
            redis=self.redis,
            postgres=self.postgres,
            dead=free_port(),
            dead2=free_port(),
            tmp=self.tmp,
            tmp_encoded=quote(str(self.tmp), safe=""),
        )


@pytest.fixture(scope="module")
def secured_redis() -> Iterator[RedisServer]:
    """A redis-server that takes only SERVER_PASSWORD (the default user's)."""
    server = RedisServer().start()
    try:
        server.client().config_set("requirepass", SERVER_PASSWORD)
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def secured_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this module whose role ``app`` logs in with SERVER_PASSWORD only (scram);
    ``postgres`` keeps trust authentication, to set things up."""
    need_postgres()
    server = PostgresServer().start()
    try:
        (server.data_dir / "pg_hba.conf").write_text(
            "host all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(sql.SQL("CREATE ROLE app LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(SERVER_PASSWORD)))
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def servers(secured_redis: RedisServer, secured_postgres: PostgresServer, tmp_path: Path) -> Servers:
    return Servers(redis=secured_redis.port, postgres=secured_postgres.port, tmp=tmp_path)


# -- what must not show, and where to look -------------------------------------------------------


def _pieces(password: str) -> set[str]:
    forms = {password, unquote(password)}
    return {form[i:j] for form in forms for i in range(len(form)) for j in range(i + 3, len(form) + 1)}


def _shown(text: str, url: str, password: str) -> list[str]:
    """The pieces of ``password`` that ``text`` shows and the rest of ``url`` does not hold."""
    public = url.replace(password, "\x00")
    return sorted(piece for piece in _pieces(password) if piece in text and piece not in public)


def _chain(exc: BaseException) -> str:
    """Everything an exception shows: the formatted chain, and every linked exception (also a
    suppressed ``__context__``) by its str and repr."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        texts += [str(current), repr(current), repr(current.args)]
        pending += [current.__cause__, current.__context__]
    return "\n".join(texts)


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    formatter = logging.Formatter()
    texts = []
    for record in caplog.records:
        texts.append(record.getMessage())
        if record.exc_info:
            texts.append(formatter.formatException(record.exc_info))
        if record.stack_info:
            texts.append(record.stack_info)
    return "\n".join(texts)


def _registry_outputs(url: str) -> dict[str, str]:
    """The registry API: what opening it and reading from it shows."""
    try:
        registry = PromptRegistryFactory.from_url(url)
    except PromptRegistryError as exc:
        return {"open": _chain(exc)}
    try:
        registry.list_prompts()
    except PromptRegistryError as exc:
        return {"repr": repr(registry), "read": _chain(exc)}
    finally:
        registry.close()
    pytest.fail(f"{redact_url(url)} was accepted: the test servers take only SERVER_PASSWORD")


def _cli_outputs(url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """``promptreg --url URL list``, without and with PROMPTREG_DEBUG=1 (which re-raises bugs)."""
    outputs = {}
    for debug in (None, "1"):
        if debug is None:
            monkeypatch.delenv("PROMPTREG_DEBUG", raising=False)
        else:
            monkeypatch.setenv("PROMPTREG_DEBUG", debug)
        monkeypatch.delenv("PROMPTREG_URL", raising=False)
        result = CliRunner().invoke(cli, ["--url", url, "list"])
        assert result.exit_code != 0, result.output
        text = result.output + result.stderr
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            text += _chain(result.exception)
        outputs[f"cli debug={debug}"] = text
    monkeypatch.delenv("PROMPTREG_DEBUG", raising=False)
    return outputs


def _client_outputs(url: str) -> dict[str, str]:
    """A PromptClient: its status's last error and its repr, or what its constructor raised."""
    try:
        client = PromptClient(url, start_timeout=0.2, fleet_report=False)
    except PromptRegistryError as exc:
        return {"client": _chain(exc)}
    try:
        for _ in range(100):  # the first attempt is over in milliseconds; allow a slow machine 5 s
            status = client.status()
            if status.last_error is not None:
                break
            client.wait_ready(0.05)
        assert status.last_error is not None, f"{redact_url(url)}: no error recorded"
        return {"status": status.last_error, "client repr": repr(client)}
    finally:
        client.close()


def _applies(form: str, password: str) -> bool:
    # In lone user info ("redis://{pw}@h") a ":" makes what precedes it the user name, shown.
    return not ("//{pw}@" in form and ":" in password)


def _leaks(
    forms: dict[str, str],
    servers: Servers,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> list[str]:
    """Every (form, password, output) where a piece of the password shows."""
    found = []
    caplog.set_level(logging.DEBUG)
    for form_name, form in forms.items():
        for password_name, password in PASSWORDS.items():
            if not _applies(form, password):
                continue
            url = servers.url(form, password)
            caplog.clear()
            outputs = {"redact_url": redact_url(url), **_registry_outputs(url), **_cli_outputs(url, monkeypatch)}
            if password_name in CLIENT_PASSWORDS:
                outputs.update(_client_outputs(url))
            outputs["log"] = _logged(caplog)
            for where, text in outputs.items():
                shown = _shown(text, url, password)
                if shown:
                    found.append(f"{form_name} / {password_name}: {where} shows {shown}")
    return found


# -- every form, every output ------------------------------------------------------------------------


def test_no_redis_url_shows_its_password(
    servers: Servers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaks = _leaks(REDIS_FORMS, servers, caplog, monkeypatch)
    assert not leaks, "\n".join(leaks)


def test_no_postgres_url_shows_its_password(
    servers: Servers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    leaks = _leaks(POSTGRES_FORMS, servers, caplog, monkeypatch)
    assert not leaks, "\n".join(leaks)


def test_no_file_url_shows_a_password_it_holds(
    servers: Servers, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file registry takes no password: such a URL is refused (redacted) instead of becoming a path
    # that every "folder does not exist" would show.
    leaks = _leaks(FILE_FORMS, servers, caplog, monkeypatch)
    assert not leaks, "\n".join(leaks)
    for form in FILE_FORMS.values():
        url = servers.url(form, PASSWORDS["at"])
        with pytest.raises(InvalidInputError, match="a file registry takes no password"):
            PromptRegistryFactory.from_url(url)
    assert not any(servers.tmp.iterdir())


# -- the password is the one the URL holds ----------------------------------------------------------


def test_a_raw_password_reaches_the_server_as_written(
    secured_redis: RedisServer, secured_postgres: PostgresServer
) -> None:
    """The user info ends at the last "@" before the query, on both backends, so a password typed
    raw works (and is the exact part every message hides); a "%" that starts no escape is itself."""
    admin = redis.Redis(host="127.0.0.1", port=secured_redis.port, password=SERVER_PASSWORD, socket_timeout=5)
    failures = []
    current = SERVER_PASSWORD
    try:
        for name, written in PASSWORDS.items():
            meant = unquote(written)  # what redis-py, and now libpq, read
            admin.config_set("requirepass", meant)
            current = meant
            with psycopg.connect(secured_postgres.url(), autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER ROLE app PASSWORD {}").format(sql.Literal(meant)))
            urls = [
                f"redis://default:{written}@127.0.0.1:{secured_redis.port}/0",
                f"redis://:{written}@127.0.0.1:{secured_redis.port}/0?socket_timeout=5",
                f"postgresql://app:{written}@127.0.0.1:{secured_postgres.port}/postgres",
                f"postgresql://app:{written}@127.0.0.1:{secured_postgres.port}/postgres?application_name=a%20b",
            ]
            if "&" not in written:  # a raw "&" in a query value is a parameter's end to every parser
                urls.append(f"postgresql://app@127.0.0.1:{secured_postgres.port}/postgres?password={written}")
            for url in urls:
                try:
                    registry = PromptRegistryFactory.from_url(url)
                    try:
                        registry.list_prompts()
                    finally:
                        registry.close()
                except PromptRegistryError as exc:
                    failures.append(f"{name}: {redact_url(url)}: {exc}")
    finally:
        admin.config_set("requirepass", SERVER_PASSWORD)
        admin.close()
        with psycopg.connect(secured_postgres.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE app PASSWORD {}").format(sql.Literal(SERVER_PASSWORD)))
    assert current  # the loop ran
    assert not failures, "\n".join(failures)


def test_a_wrong_password_is_refused_as_authentication(servers: Servers) -> None:
    for form in (REDIS_FORMS["user"], POSTGRES_FORMS["user"]):
        for password in PASSWORDS.values():
            url = servers.url(form, password)
            registry = PromptRegistryFactory.from_url(url)
            with pytest.raises(RegistryAuthError):
                registry.list_prompts()
            registry.close()


# -- the boundaries themselves -----------------------------------------------------------------------


def test_redaction_and_secrets_agree_with_what_the_backends_connect_with() -> None:
    """For every form: redact_url hides the password the backend will send, url_secrets names it
    (to scrub), and the URL handed to redis-py or libpq holds it percent-encoded only."""
    problems = []
    for password in PASSWORDS.values():
        meant = unquote(password)
        for form in [*REDIS_FORMS.values(), *POSTGRES_FORMS.values()]:
            if not _applies(form, password):
                continue
            url = form.format(pw=password, redis=6379, postgres=5432, dead=1, dead2=2, tmp="/t", tmp_encoded="%2Ft")
            shown = _shown(redact_url(url), url, password)
            if shown:
                problems.append(f"redact_url({url!r}) shows {shown}")
            if not {password, meant} & set(url_secrets(url)):
                problems.append(f"url_secrets({url!r}) = {url_secrets(url)}")
            parts = split_url(url)
            if parts is None or not parts.well_formed or "{pw}@" not in form:
                continue
            if parts.password() != password:
                problems.append(f"split_url({url!r}).password() = {parts.password()!r}")
    assert not problems, "\n".join(problems)


def test_the_url_each_backend_parser_gets_holds_the_password_encoded() -> None:
    password = PASSWORDS["everything"]
    conninfo, namespace = parse_postgres_url(f"postgresql://app:{password}@db.example:5432/prompts?namespace=ns")
    assert conninfo == "postgresql://app:" + quote(unquote(password), safe="") + "@db.example:5432/prompts"
    assert namespace == "ns"
    assert psycopg.conninfo.conninfo_to_dict(conninfo)["password"] == unquote(password)
    conninfo, _ = parse_postgres_url(f"postgresql://app@db/prompts?password={password}&sslmode=disable")
    assert psycopg.conninfo.conninfo_to_dict(conninfo) == {
        "user": "app",
        "host": "db",
        "dbname": "prompts",
        "password": unquote(password),
        "sslmode": "disable",
    }
    single = parse_redis_url(f"redis://u:{password}@h:6379/2?socket_timeout=5")
    assert single.target.addresses == ("h:6379",)
    assert parse_url(single.plain_url)["password"] == unquote(password)  # type: ignore[no-untyped-call]
    sentinel = parse_redis_url(f"redis+sentinel://:{password}@h1:26379,[::1]:26380/svc/1")
    assert sentinel.hosts == (("h1", 26379), ("::1", 26380))
    assert sentinel.connection["password"] == unquote(password) and sentinel.connection["db"] == 1


def test_a_query_with_an_at_sign_is_no_user_info() -> None:
    conninfo, _ = parse_postgres_url("postgresql://db.example/prompts?user=me@corp&application_name=x")
    assert psycopg.conninfo.conninfo_to_dict(conninfo) == {
        "host": "db.example",
        "dbname": "prompts",
        "user": "me@corp",
        "application_name": "x",
    }
    assert redact_url("postgresql://db/p?user=me@corp&password=QJXZWK") == "postgresql://db/p?user=me@corp&password=***"


def test_a_libpq_error_quoting_the_password_is_scrubbed_through_the_whole_chain() -> None:
    """The boundary's last line: a psycopg error that quotes the conninfo's password (libpq's
    "invalid percent-encoded token" does) is translated, and no exception of its chain keeps it."""
    conninfo = "postgresql://app:QJX%ZZWK@127.0.0.1:1/postgres"  # as libpq would refuse it
    with pytest.raises(PromptRegistryError) as caught:
        connect(conninfo)
    assert isinstance(caught.value.__cause__, psycopg.Error)  # the cause is kept, without the secret
    assert not _shown(_chain(caught.value), conninfo, "QJX%ZZWK")


def test_an_unreachable_postgres_with_a_raw_at_names_the_right_host(servers: Servers) -> None:
    url = servers.url("postgresql://app:QJX@ZWK@127.0.0.1:{dead}/postgres?connect_timeout=2", "")
    registry = PromptRegistryFactory.from_url(url)
    with pytest.raises(RegistryUnavailableError) as caught:
        registry.list_prompts()
    registry.close()
    assert "127.0.0.1" in str(caught.value) and not isinstance(caught.value, RegistryAuthError)
    assert not _shown(_chain(caught.value), url, "QJX@ZWK")


def test_the_environment_variable_is_treated_like_the_option(servers: Servers, monkeypatch: pytest.MonkeyPatch) -> None:
    url = servers.url(POSTGRES_FORMS["user"], PASSWORDS["several-at"])
    monkeypatch.setenv("PROMPTREG_URL", url)
    monkeypatch.delenv("PROMPTREG_DEBUG", raising=False)
    result = CliRunner().invoke(cli, ["list"])
    assert result.exit_code == 1 and "password authentication failed" in result.stderr, result.stderr
    assert not _shown(result.output + result.stderr, url, PASSWORDS["several-at"])
