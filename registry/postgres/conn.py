"""psycopg at the boundary: the optional import, ``postgresql://`` URLs, connections, and psycopg's
errors translated to promptreg's, by class, in one table (:func:`map_postgres_errors`).

psycopg 3 is an optional dependency (the ``[postgres]`` extra, ``psycopg[binary]>=3.2``); without it every entry
point raises :class:`~promptreg.ConfigurationError` naming the extra.
"""

from __future__ import annotations

import os
import select
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any
from urllib.parse import unquote

from promptreg.registry.errors import (
    ConfigurationError,
    InvalidInputError,
    PromptRegistryError,
    RegistryAuthError,
    RegistryCorruptError,
    RegistryUnavailableError,
)
from promptreg.registry.urls import POSTGRES_SCHEMES, encode_component, query_pairs, redact_url, split_url, url_secrets
from promptreg.registry.validation import validate_namespace, validate_unicode

_psycopg: Any = None
"""The psycopg module once something needed it: imported on first use, not with ``registry`` (it
costs a Redis-only process about 9 MB), and optional (``require_psycopg`` names the extra)."""

MISSING_EXTRA = (
    "PostgreSQL support needs psycopg 3, which is not installed: pip install 'psycopg[binary]>=3.2' "
    "(the [postgres] extra)"
)
CONNECT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 5,
    "application_name": "promptreg",
    # A half-open connection (server gone without a FIN) fails within ~10 s instead of hanging.
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10000,
}
"""libpq parameters every promptreg connection gets unless the URL or the caller sets them."""


def is_undefined_table(exc: BaseException) -> bool:
    """Whether ``exc`` is PostgreSQL's "relation does not exist" (the schema is not there)."""
    return _psycopg is not None and isinstance(exc, _psycopg.errors.UndefinedTable)


def connection_gone(conn: Any) -> bool:
    """Whether an idle connection is closed or has unsolicited input (the server ended the session:
    a restart, ``pg_terminate_backend``). Then a write is retried on a new connection instead of
    failing on the dead one; a failure during a write is never retried (it might have committed)."""
    if conn.closed:
        return True
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True
    if readable:
        conn.close()
    return bool(readable)


def require_psycopg() -> Any:
    """The psycopg module (imported on first use); raises :class:`~promptreg.ConfigurationError`
    naming the extra when it is not installed."""
    global _psycopg
    if _psycopg is None:
        try:
            import psycopg
            import psycopg.errors
        except ImportError:  # the extra is not installed
            raise ConfigurationError(MISSING_EXTRA) from None
        _psycopg = psycopg
    return _psycopg


def parse_postgres_url(url: str) -> tuple[str, str | None]:
    """``(conninfo, namespace)`` of a ``postgresql://`` or ``postgres://`` URL.

    The ``namespace=`` query parameter is promptreg's (``None`` when absent) and is taken out;
    every other parameter goes to libpq as written (``sslmode=``, ``options=``, ...). The user info
    is what :class:`~promptreg.registry.urls.UrlParts` cuts (up to the last ``@`` before the query: a raw
    ``@``, ``/``, ``?`` or ``#`` in a password stays in it) and reaches libpq percent-encoded, as
    do the parameters' values; a ``%`` that starts no ``%XX`` escape stands for itself (libpq would
    refuse it, quoting the password). Raises :class:`~promptreg.InvalidInputError` for another
    scheme, a malformed namespace, or a host name no resolver takes (a label over 63 characters, an
    empty label; checked when psycopg is installed); the message never holds the password.
    """
    if not isinstance(url, str):
        raise InvalidInputError(f"registry URL must be a string, got {type(url).__name__}")
    url = validate_unicode(url.strip(), "registry URL")
    parts = split_url(url)
    if parts is None or not parts.well_formed or parts.scheme not in POSTGRES_SCHEMES:
        raise InvalidInputError(f"not a PostgreSQL URL: {redact_url(url)!r} (use postgresql:// or postgres://)")
    namespace: str | None = None
    kept: list[str] = []
    for key, value in query_pairs(parts.query or ""):
        if key == "namespace":
            namespace = unquote(value)
        else:
            kept.append(f"{key}={encode_component(value)}")
    if namespace is not None:
        validate_namespace(namespace)
    conninfo = parts.with_encoded_userinfo("&".join(kept) if kept else None)
    if _psycopg_installed():  # without psycopg nothing connects: connect() names the extra
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict

        try:
            hosts = conninfo_to_dict(conninfo).get("host")
        except Error:  # malformed for libpq: connect() reports it, translated
            hosts = None
        check_host_names(hosts)
    return conninfo, namespace


def _psycopg_installed() -> bool:
    try:
        require_psycopg()
    except ConfigurationError:
        return False
    return True


def check_host_names(hosts: object) -> None:
    """Raise :class:`~promptreg.InvalidInputError` if a name in ``hosts`` (libpq's ``host``: names,
    addresses or socket folders, comma-separated) cannot be looked up: psycopg resolves names in
    Python, whose IDNA encoding refuses an empty label or one over 63 characters with a bare
    ``UnicodeError``. The message names the host (never a password)."""
    if not isinstance(hosts, str):
        return
    for host in hosts.split(","):
        if not host or host.startswith(("/", "@")):  # a Unix socket folder (or abstract socket)
            continue
        try:
            host.encode("idna")
        except UnicodeError as exc:
            reason = exc.__cause__ or exc  # the codec's own words: "label empty or too long"
            raise InvalidInputError(
                f"invalid PostgreSQL host name {host!r}: {reason} (each dot-separated part must be 1 to 63 characters)"
            ) from None


def connect(conninfo: str, **kwargs: Any) -> Any:
    """A new autocommit psycopg connection (errors translated). The URL's own parameters win over
    :data:`CONNECT_DEFAULTS`; ``kwargs`` win over both. A host name no resolver takes (in the URL,
    ``kwargs`` or ``PGHOST``) raises :class:`~promptreg.InvalidInputError` before any connection."""
    psycopg = require_psycopg()
    from psycopg.conninfo import conninfo_to_dict

    with map_postgres_errors(conninfo):
        given = conninfo_to_dict(conninfo)
        options = {k: v for k, v in CONNECT_DEFAULTS.items() if k not in given}
        options.update(kwargs)
        check_host_names(options.get("host", given.get("host", os.environ.get("PGHOST"))))
        try:
            return psycopg.connect(conninfo, autocommit=True, **options)
        except UnicodeError as exc:  # a host name lookup refused that the check above did not foresee
            raise InvalidInputError(f"invalid PostgreSQL host name: {' '.join(str(exc).split())}") from None


@cache
def postgres_exc_map() -> tuple[tuple[type[Exception], type[PromptRegistryError], str], ...]:
    """``(psycopg class, promptreg class, what it means)``; the first match wins."""
    psycopg = require_psycopg()
    e = psycopg.errors
    return (
        (e.InvalidPassword, RegistryAuthError, "postgresql refused the password"),
        (e.InvalidAuthorizationSpecification, RegistryAuthError, "postgresql refused the credentials"),
        (e.InsufficientPrivilege, RegistryAuthError, "postgresql refused: permission denied for this role"),
        (e.ReadOnlySqlTransaction, RegistryUnavailableError, "postgresql is read-only here (a standby?)"),
        (e.CannotConnectNow, RegistryUnavailableError, "postgresql is starting up or shutting down"),
        (e.AdminShutdown, RegistryUnavailableError, "postgresql is shutting down or ended the session"),
        (e.QueryCanceled, RegistryUnavailableError, "postgresql cancelled the statement (statement_timeout?)"),
        (e.UndefinedTable, RegistryUnavailableError, "the promptreg tables are missing: run `promptreg migrate`"),
        (e.SerializationFailure, RegistryUnavailableError, "postgresql aborted the write (serialization)"),
        (e.DeadlockDetected, RegistryUnavailableError, "postgresql aborted the write (deadlock)"),
        (psycopg.OperationalError, RegistryUnavailableError, "postgresql is unreachable"),
        (psycopg.InterfaceError, RegistryUnavailableError, "the postgresql connection is closed"),
        (psycopg.IntegrityError, RegistryCorruptError, "postgresql refused the write (a constraint)"),
        (psycopg.DataError, RegistryCorruptError, "postgresql refused the data"),
    )


_AUTH_WORDS = ("password authentication failed", "no pg_hba.conf entry", "permission denied")


def translate_postgres_error(exc: Exception, conninfo: str = "") -> PromptRegistryError:
    """The promptreg error for a psycopg exception (message: which case, then postgresql's words,
    without ``conninfo``'s secrets)."""
    text = _scrub(str(exc).strip(), url_secrets(conninfo))
    for pg_class, error_class, meaning in postgres_exc_map():
        if isinstance(exc, pg_class):
            if error_class is RegistryUnavailableError and any(w in text for w in _AUTH_WORDS):
                return RegistryAuthError(f"postgresql refused the connection: {text}")
            return error_class(f"{meaning}: {text}")
    return PromptRegistryError(f"postgresql error: {text}")


@contextmanager
def map_postgres_errors(conninfo: str = "") -> Iterator[None]:
    """Raise the promptreg error of any psycopg error raised inside the block (cause kept, with
    ``conninfo``'s secrets scrubbed from every exception of its chain: ``logger.exception`` prints
    them all)."""
    try:
        yield
    except Exception as exc:
        # psycopg is imported by the first use, which may be inside this block.
        if _psycopg is not None and isinstance(exc, _psycopg.Error):
            _scrub_chain(exc, url_secrets(conninfo))
            raise translate_postgres_error(exc, conninfo) from exc
        raise


def _scrub_chain(exc: BaseException, secrets: list[str]) -> None:
    """Replace each of ``secrets`` by ``***`` in the arguments of ``exc`` and of every exception it
    chains (``__cause__``, ``__context__``), in place: the chain keeps its classes and tracebacks."""
    if not secrets:
        return
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if any(isinstance(arg, str) and _scrub(arg, secrets) != arg for arg in current.args):
            current.args = tuple(_scrub(arg, secrets) if isinstance(arg, str) else arg for arg in current.args)
        pending += [current.__cause__, current.__context__]


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):  # the longest first: a secret may hold another
        text = text.replace(secret, "***")
    return text
