"""``promptreg migrate``: bring a registry written by an older promptreg up to this version's layout."""

from __future__ import annotations

import click

from registry.cli.options import current_registry, json_option, print_json


@click.command(name="migrate")
@click.option("--rebuild", is_flag=True, help="Rebuild the index even when it is complete.")
@json_option
def migrate(rebuild: bool, as_json: bool) -> None:
    """Build the index a registry written by promptreg 0.1.0 lacks (idempotent).

        Run it once every writer runs this version. Safe while clients and writers run: it works in small
        batches and never blocks Redis for long. On PostgreSQL it creates or upgrades the schema (versioned,
    idempotent migrations). A JSON file registry has nothing to migrate.
    """
    result = current_registry().migrate(rebuild=rebuild)
    if as_json:
        print_json({"changed": result.changed, "prompts": result.prompts, "message": result.message})
    else:
        click.echo(result.message)
