"""``promptreg acl``: print the Redis ACL users of the four roles (reader, writer, approver, admin), or
with ``--postgres`` the SQL that creates the PostgreSQL roles.

The rules come from :mod:`promptreg.registry.redis.acl` (and
:func:`promptreg.registry.postgres.roles.role_sql`); this module only prints them. It never prints a password:
every line carries :data:`~promptreg.registry.redis.acl.PASSWORD_PLACEHOLDER`. By default it prints the rules every
Redis >= 7.0 accepts and connects to nothing; only ``--url`` given on the command line (before or
after ``acl``) makes it read that server's version (``INFO server``) and add the grants the server
knows. ``PROMPTREG_URL`` alone never makes it connect.
"""

from __future__ import annotations

import shlex

import click
from click.core import ParameterSource

from promptreg.registry.cli.options import current_settings, json_option, print_json
from promptreg.registry.redis.acl import (
    DEFAULT_SERVER_VERSION,
    PASSWORD_PLACEHOLDER,
    SETINFO_SERVER_VERSION,
    parse_server_version,
    read_server_version,
    role_rules,
)
from promptreg.registry.urls import redact_url
from promptreg.registry.validation import DEFAULT_NAMESPACE


def _dotted(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


@click.command(name="acl")
@click.option(
    "--namespace",
    "namespace_option",
    help="The namespace the users may touch (default: the global --namespace, else 'promptreg').",
)
@click.option(
    "--redis-version",
    metavar="MAJOR.MINOR",
    help=f"Write the rules for this server version ({_dotted(SETINFO_SERVER_VERSION)}+ also grants CLIENT "
    f"SETINFO). Default: rules every Redis >= {_dotted(DEFAULT_SERVER_VERSION)} accepts, or with --url the "
    "server's own version.",
)
@click.option(
    "--url",
    "url_option",
    metavar="URL",
    help="Read the version of this Redis (INFO server; e.g. your admin URL) and add the grants it knows. "
    "The password is never printed.",
)
@click.option(
    "--postgres",
    is_flag=True,
    help="Print the SQL that creates the PostgreSQL roles instead (reader, writer, approver, admin); connects to "
    "nothing.",
)
@click.option(
    "--database", default="prompts", show_default=True, help="--postgres: the database the roles may connect to."
)
@click.option(
    "--prefix", default="promptreg", show_default=True, help="--postgres: the roles are named PREFIX_reader, ..."
)
@json_option
def acl_command(
    namespace_option: str | None, redis_version: str | None, url_option: str | None, postgres: bool, database: str,
    prefix: str, as_json: bool,
) -> None:  # fmt: skip
    """Print the ACL SETUSER commands of the reader, writer, approver and admin users of a namespace
    (--postgres: the SQL of the PostgreSQL roles).

    Replace <password> with a strong secret of each user's own before running them. See
    docs/security.md and docs/governance.md for what each role may do.
    """
    if postgres:
        if redis_version is not None or url_option is not None or namespace_option is not None:
            raise click.UsageError("--postgres takes --database and --prefix (no --redis-version, --url, --namespace)")
        return _print_postgres(database, prefix, as_json)
    ctx = click.get_current_context()
    if any(ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE for name in ("database", "prefix")):
        raise click.UsageError("--database and --prefix go with --postgres")
    settings = current_settings()
    namespace = namespace_option or settings.namespace or DEFAULT_NAMESPACE
    url = url_option
    root = click.get_current_context().find_root()
    if url is None and root.get_parameter_source("url") is ParameterSource.COMMANDLINE:
        url = settings.url  # `promptreg --url URL acl`: the same as `promptreg acl --url URL`
    if redis_version is not None:  # an explicit version wins: nothing is read
        version, source = parse_server_version(redis_version), "--redis-version"
    elif url is not None:
        version, source = read_server_version(url), f"the server at {redact_url(url)}"
    else:
        version, source = DEFAULT_SERVER_VERSION, None
    roles = role_rules(namespace, server_version=version)
    if as_json:
        print_json(
            {
                "namespace": namespace,
                "redis_version": _dotted(version),
                "password_placeholder": PASSWORD_PLACEHOLDER,
                "roles": {
                    rules.role.value: {
                        "user": rules.user,
                        "description": rules.description,
                        "rules": list(rules.rules),
                        "acl_setuser": rules.setuser_args(),
                    }
                    for rules in roles
                },
            }
        )
        return
    if source is None:
        click.echo(
            f"# promptreg ACL users for namespace {namespace!r}: rules every Redis >= {_dotted(version)} accepts."
        )
        click.echo(
            f"# On Redis >= {_dotted(SETINFO_SERVER_VERSION)}, `promptreg acl --url URL` (read from the server) "
            "also grants CLIENT SETINFO;"
        )
        click.echo("# without it, redis-py's CLIENT SETINFO on connect is refused (NOPERM) and ignored.")
    else:
        click.echo(f"# promptreg ACL users for namespace {namespace!r}, Redis {_dotted(version)} (from {source}).")
    click.echo(f"# Replace {PASSWORD_PLACEHOLDER} with a strong secret of each user's own before running a line")
    click.echo("# (e.g. `openssl rand -hex 32`); this command never prints a real password.")
    click.echo("# Each line works at the redis-cli prompt, or after `redis-cli -u URL` in a shell (quoted as shown).")
    for rules in roles:
        click.echo("")
        click.echo(f"# {rules.role.value}: {rules.description}")
        click.echo(shlex.join(rules.setuser_args()))


def _print_postgres(database: str, prefix: str, as_json: bool) -> None:
    """``acl --postgres``: :func:`~promptreg.registry.postgres.roles.role_sql` as it is (or in JSON)."""
    from promptreg.registry.postgres.roles import role_names, role_sql  # only this option needs them

    sql = role_sql(database, prefix)
    if as_json:
        print_json({"database": database, "prefix": prefix, "roles": role_names(prefix), "sql": sql})
    else:
        click.echo(sql, nl=not sql.endswith("\n"))
