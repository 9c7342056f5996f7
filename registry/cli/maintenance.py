"""``promptreg migrate``: bring a registry written by an older promptreg up to this version's layout."""

from __future__ import annotations

import click

from promptreg.registry.cli.options import current_registry, json_option, print_json


@click.command(name="migrate")
@click.option("--rebuild", is_flag=True, help="Rebuild the index even when it is complete.")
@json_option
def migrate(rebuild: bool, as_json: bool) -> None:
    """Bring the store up to this version: on Redis, load its write functions, then build the index.

    On Redis it loads this release's functions library (FUNCTION LOAD; every primary of a cluster),
    which writers may only call: run it as the admin (a user that may load) before deploying the
    release's writers, and again once every writer runs it, for the index a registry written by
    promptreg 0.1.0 lacks. Idempotent, and safe while clients and writers run: it works in small
    batches and never blocks Redis for long. On PostgreSQL it creates or upgrades the schema
    (versioned, idempotent migrations). A JSON file registry has nothing to migrate.
    """
    result = current_registry().migrate(rebuild=rebuild)
    if as_json:
        print_json({"changed": result.changed, "prompts": result.prompts, "message": result.message})
    else:
        click.echo(result.message)
