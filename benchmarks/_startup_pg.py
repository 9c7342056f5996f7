"""PostgreSQL for the start-up benchmark: which server, and the registry written into its tables.

The rows are those :class:`~promptreg.PostgresPromptRegistry` writes (:mod:`promptreg.registry.postgres.schema`,
migrations applied by its own :func:`~promptreg.registry.postgres.schema.run_migrations`) for the data
of :mod:`benchmarks._startup_data`, loaded with ``COPY`` in one transaction (prompts, then versions,
then labels, a thousand prompts at a time, in the order the foreign keys need), then ``ANALYZE`` d as
autovacuum would after such a load. No audit rows, as the Redis registry of the benchmark has no
audit stream: a start-up reads only the newest one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from benchmarks import _harness
from benchmarks._startup_data import LABELS, VERSIONS, PromptData, generate
from devservers.local_postgres import postgres_bin_dir, remove_template
from promptreg.registry.postgres.conn import connect, parse_postgres_url
from promptreg.registry.postgres.schema import run_migrations

TABLES = ("promptreg_namespaces", "promptreg_prompts", "promptreg_versions", "promptreg_labels")
_COPY_PROMPTS = "COPY promptreg_prompts (namespace, name, created_at, latest) FROM STDIN"
_COPY_VERSIONS = (
    "COPY promptreg_versions (namespace, name, version, prompt_text, author, message, metadata, sha256, "
    "created_at, messages, config) FROM STDIN"
)
_COPY_LABELS = "COPY promptreg_labels (namespace, name, label, version) FROM STDIN"


def options(parser: argparse.ArgumentParser) -> None:
    """``--pg-url`` and ``--no-postgres``."""
    parser.add_argument("--pg-url", help="PostgreSQL to measure on (default: a private one when installed)")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL start-ups")


@contextlib.contextmanager
def postgres_url(args: argparse.Namespace) -> Iterator[str | None]:
    """``--pg-url``, or a private PostgreSQL of this run when one is installed, else ``None``."""
    if args.no_postgres:
        yield None
        return
    if args.pg_url:
        yield args.pg_url
        return
    if postgres_bin_dir() is None:
        yield None
        return
    server = _harness.start_private_postgres()
    try:
        yield server.url()
    finally:
        server.cleanup()
        remove_template()


def populate(url: str, namespace: str, prompts: int) -> None:
    """Write ``prompts`` prompts of :func:`~benchmarks._startup_data.generate` into namespace ``namespace``."""
    with connect(parse_postgres_url(url)[0]) as conn:
        run_migrations(conn)
        with conn.transaction():
            conn.execute(
                "INSERT INTO promptreg_namespaces (namespace, rev) VALUES (%s, %s)",
                (namespace, prompts * (1 + VERSIONS + len(LABELS))),
            )
            chunk: list[PromptData] = []
            for prompt in generate(prompts):
                chunk.append(prompt)
                if len(chunk) == 1000:
                    _copy(conn, namespace, chunk)
                    chunk = []
            _copy(conn, namespace, chunk)
        for table in TABLES:
            conn.execute(f"ANALYZE {table}")


def _copy(conn: Any, namespace: str, chunk: Sequence[PromptData]) -> None:
    if not chunk:
        return
    with conn.cursor() as cursor:
        with cursor.copy(_COPY_PROMPTS) as copy:
            for prompt in chunk:
                copy.write_row((namespace, prompt.name, prompt.created_at, VERSIONS))
        with cursor.copy(_COPY_VERSIONS) as copy:
            for prompt in chunk:
                for v in prompt.versions:
                    messages = None if v.messages is None else json.dumps(v.messages)
                    copy.write_row((namespace, prompt.name, v.number, v.prompt_text, v.author, v.message,
                                    json.dumps(v.metadata), v.sha256, v.created_at, messages,
                                    json.dumps(v.config)))  # fmt: skip
        with cursor.copy(_COPY_LABELS) as copy:
            for prompt in chunk:
                for label, number in LABELS.items():
                    copy.write_row((namespace, prompt.name, label, number))


def drop(url: str, namespace: str) -> None:
    """Delete the namespace's rows (the registry's own ``drop_namespace``)."""
    _harness.drop_postgres_namespace(url, namespace)
