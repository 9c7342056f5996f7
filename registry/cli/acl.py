"""``promptreg acl``: print the Redis ACL users of the three roles (reader, writer, admin).

The rules come from :mod:`registry.acl`; this module only prints them. It never connects to Redis
and never prints a password: every line carries :data:`~registry.acl.PASSWORD_PLACEHOLDER`.
"""

from __future__ import annotations

import shlex

import click

from registry.acl import (
    DEFAULT_SERVER_VERSION,
    PASSWORD_PLACEHOLDER,
    parse_server_version,
    role_rules,
)
from registry.cli.options import current_settings, json_option, print_json
from registry.keys import DEFAULT_NAMESPACE

_DEFAULT_VERSION = ".".join(map(str, DEFAULT_SERVER_VERSION))


@click.command(name="acl")
@click.option(
    "--namespace",
    "namespace_option",
    help="The namespace the users may touch (default: the global --namespace, else 'promptreg').",
)
@click.option(
    "--redis-version",
    default=_DEFAULT_VERSION,
    show_default=True,
    metavar="MAJOR.MINOR",
    help="The server's version: 7.0 and 7.1 do not know CLIENT SETINFO, so its grant is left out.",
)
@json_option
def acl_command(namespace_option: str | None, redis_version: str, as_json: bool) -> None:
    """Print the ACL SETUSER commands of the reader, writer and admin users of a namespace.

    Replace <password> with a strong secret of each user's own before running them. See
    docs/security.md for what each role may do.
    """
    namespace = namespace_option or current_settings().namespace or DEFAULT_NAMESPACE
    version = parse_server_version(redis_version)
    roles = role_rules(namespace, server_version=version)
    if as_json:
        print_json(
            {
                "namespace": namespace,
                "redis_version": f"{version[0]}.{version[1]}",
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
    click.echo(f"# promptreg ACL users for namespace {namespace!r} (Redis >= {version[0]}.{version[1]}).")
    click.echo(f"# Replace {PASSWORD_PLACEHOLDER} with a strong secret of each user's own before running a line")
    click.echo("# (e.g. `openssl rand -hex 32`); this command never prints a real password.")
    click.echo("# Each line works at the redis-cli prompt, or after `redis-cli -u URL` in a shell (quoted as shown).")
    for rules in roles:
        click.echo("")
        click.echo(f"# {rules.role.value}: {rules.description}")
        click.echo(shlex.join(rules.setuser_args()))
