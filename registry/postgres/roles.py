"""The PostgreSQL roles of a promptreg database, as the SQL an owner runs (``promptreg acl --postgres``
prints it; docs/postgres.md shows it).

Four login roles, each with exactly what it needs:

- ``<prefix>_reader``: ``SELECT`` on every promptreg table (every service running a ``PromptClient``);
- ``<prefix>_writer``: the reader's, plus the writes of prompts, versions, unprotected labels,
  rollouts and audit rows, requesting a move of a protected label (CI's ``promptreg sync``), and the
  webhook tables (endpoints may hold credentials: the reader has no grant on them);
- ``<prefix>_approver``: the writer's, plus approving, rejecting and applying move requests;
- ``<prefix>_admin``: the approver's, plus protecting and unprotecting labels.

No role but the owner moves a protected label's row directly (schema migration 7's triggers), nor
writes a request or an approval except through the functions granted here, which check the
identities (:mod:`promptreg.registry.postgres.governance_schema`). The SQL is idempotent: run it
again after ``promptreg migrate`` (the grants of new tables) or to add a role that is missing.
"""

from __future__ import annotations

import re
from typing import Final

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.postgres.governance_schema import APPLY_FUNCTION, DECIDE_FUNCTION, REQUEST_FUNCTION
from promptreg.registry.postgres.webhook_schema import WEBHOOK_TABLES

ROLES: Final = ("reader", "writer", "approver", "admin")
"""The roles, each with the grants of the one before it and more."""
TABLES: Final = (
    "promptreg_schema_version", "promptreg_namespaces", "promptreg_prompts", "promptreg_versions",
    "promptreg_labels", "promptreg_rollouts", "promptreg_audit", "promptreg_partials", "promptreg_protections",
    "promptreg_requests", "promptreg_approvals",
)  # fmt: skip
"""The promptreg tables every role reads (all but the webhooks', :data:`WEBHOOK_TABLES`)."""
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,39}")


def _identifier(value: str, what: str) -> str:
    # Names go into SQL unquoted (and lower case, as PostgreSQL folds them): refuse anything else.
    if not isinstance(value, str) or _IDENTIFIER.fullmatch(value) is None:
        raise InvalidInputError(f"{what} must be a lower-case SQL identifier (a-z, 0-9, _), got {value!r:.60}")
    return value


def role_names(prefix: str = "promptreg") -> dict[str, str]:
    """``{"reader": "<prefix>_reader", ...}``. Raises :class:`~promptreg.InvalidInputError` for a
    prefix that is not a lower-case SQL identifier."""
    _identifier(prefix, "the role prefix")
    return {role: f"{prefix}_{role}" for role in ROLES}


def role_sql(database: str = "prompts", prefix: str = "promptreg") -> str:
    """The SQL an owner of the promptreg tables runs (after ``promptreg migrate``) to create the
    four roles ``<prefix>_reader``, ``_writer``, ``_approver`` and ``_admin`` with exactly their
    grants on ``database``. The roles log in without a password until one is set
    (``ALTER ROLE ... PASSWORD``), or per ``pg_hba.conf``. Raises :class:`~promptreg.InvalidInputError`
    when ``database`` or ``prefix`` is not a lower-case SQL identifier."""
    _identifier(database, "the database name")
    names = role_names(prefix)
    reader, writer, approver, admin = (names[role] for role in ROLES)
    everyone = f"{reader}, {writer}, {approver}, {admin}"
    writers = f"{writer}, {approver}, {admin}"
    creates = "\n".join(
        f"    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{name}') THEN CREATE ROLE {name} LOGIN; END IF;"
        for name in names.values()
    )
    webhooks = ", ".join(WEBHOOK_TABLES)
    tables = ",\n    ".join(", ".join(TABLES[i : i + 4]) for i in range(0, len(TABLES), 4))
    return f"""DO $$
BEGIN
{creates}
END
$$;
GRANT CONNECT ON DATABASE {database} TO {everyone};
GRANT USAGE ON SCHEMA public TO {everyone};
GRANT SELECT ON {tables}
    TO {everyone};
GRANT INSERT, UPDATE ON promptreg_namespaces, promptreg_prompts, promptreg_labels TO {writers};
GRANT INSERT, UPDATE, DELETE ON promptreg_rollouts TO {writers};
GRANT INSERT ON promptreg_versions, promptreg_audit, promptreg_partials TO {writers};
GRANT SELECT, INSERT, UPDATE, DELETE ON {webhooks}
    TO {writers};
GRANT EXECUTE ON FUNCTION {REQUEST_FUNCTION}
    TO {writers};
GRANT EXECUTE ON FUNCTION {DECIDE_FUNCTION},
    {APPLY_FUNCTION} TO {approver}, {admin};
GRANT INSERT, UPDATE, DELETE ON promptreg_protections TO {admin};
"""
