"""Registry URLs: which scheme a URL names, whether a Redis URL is well formed, and how to show one.

URLs come from the environment, command-line arguments and configuration files, so they are
checked here before redis-py sees them: a malformed URL is an
:class:`~registry.InvalidInputError` naming the problem, and no message ever holds the password
(:func:`redact_url`).
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

from registry.errors import InvalidInputError
from registry.validation import validate_unicode

SINGLE_SERVER_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes naming one Redis server (redis-py's own URLs)."""
REDIS_SCHEMES = SINGLE_SERVER_SCHEMES | {"redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}
"""URL schemes served by :class:`~registry.RedisPromptRegistry` (one server, Sentinel, Cluster:
:mod:`registry.topology`)."""
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
"""URL schemes served by :class:`~registry.PostgresPromptRegistry` (libpq URLs)."""
FILE_SCHEME = "file"
"""The URL scheme of :class:`~registry.JsonFilePromptRegistry` (a bare path means it too)."""

_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])(?:sentinel_|ssl)?(?:password|passwd|pass|token|secret)=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to show in messages and logs.

    ``redis://user:secret@host`` becomes ``redis://user:***@host``; user info without a colon
    (which some clients read as a password) is hidden whole; ``password=`` and
    ``sentinel_password=`` (and libpq's ``sslpassword=``) query values too. Sentinel and Cluster URLs
    (``redis+sentinel://user:secret@h1:26379,h2:26379/service``) are redacted the same way.
    Never raises.
    """
    text = str(url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _SECRET_QUERY.sub(r"\1***", text)
    # The last "@" ends the user info even when a raw password holds "/", "?" or "#": hiding too
    # much is harmless, showing a password is not.
    userinfo, at, rest = rest.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        userinfo = f"{user}:***@" if colon and "/" not in user else "***@"
    path, qmark, query = rest.partition("?")
    if qmark:
        rest = path + qmark + _SECRET_QUERY.sub(r"\1***", query)
    return f"{scheme}{sep}{userinfo}{rest}"


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` holds (its password, raw and percent-decoded), to scrub from messages.

    Works on malformed URLs too (it does not parse them). Never raises. User info without a colon is
    a password to Redis (``redis://secret@host``) but a user name to PostgreSQL
    (``postgresql://postgres@host``): scrubbing a user name would mangle every message that holds
    the word.
    """
    scheme, sep, rest = str(url).partition("://")
    if not sep:
        return []
    userinfo, at, _rest = rest.rpartition("@")
    if not at:
        return []
    user, colon, password = userinfo.partition(":")
    if not colon and scheme.lower() in POSTGRES_SCHEMES:
        return []
    secret = password if colon else user
    return [s for s in dict.fromkeys((secret, unquote(secret))) if len(s) >= 3]


def without_query_parameter(url: str, name: str) -> str:
    """``url`` without the query parameter ``name`` (every occurrence); the rest kept as written."""
    base, qmark, query = url.partition("?")
    if not qmark:
        return url
    kept = [pair for pair in query.split("&") if pair.partition("=")[0] != name]
    return base + ("?" + "&".join(kept) if kept else "")


def url_scheme(url: str) -> str:
    """The lower-case scheme of a registry URL; ``""`` for a bare file path.

    ``urlsplit`` would read ``C:/x`` or ``host:6379`` as a scheme too; only letters before ``://``
    or a leading ``file:`` count, anything else without ``://`` is a bare file path, except
    ``name:rest`` with no slash or dot in front (``localhost:6379``), which is almost surely not a
    file name the user meant.
    """
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if match:
        return match.group(1).lower()
    if url[:5].lower() == "file:":
        return FILE_SCHEME
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S*", url) and not url.startswith(("/", ".")):
        return url.split(":", 1)[0].lower()
    return ""


def check_redis_url(url: str) -> str:
    """Return ``url`` if it is a well-formed one-server ``redis://``, ``rediss://`` or ``unix://`` URL.

    Checks what redis-py would otherwise report as a bare ``ValueError`` (or only at connect
    time): valid Unicode, a parsable host (``[::1`` is not), a port in 1-65535, a database number.
    Raises :class:`~registry.InvalidInputError` naming the problem and the redacted URL.
    """
    if not isinstance(url, str):
        raise InvalidInputError(f"registry URL must be a string, got {type(url).__name__}")
    validate_unicode(url, "registry URL")
    shown = redact_url(url)
    scheme = url_scheme(url)
    if scheme not in SINGLE_SERVER_SCHEMES:
        raise InvalidInputError(f"not a Redis URL: {shown!r} (use redis://, rediss:// or unix://)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidInputError(f"malformed registry URL {shown!r}: {exc}") from None
    if scheme == "unix":
        if not parts.path:
            raise InvalidInputError(f"malformed registry URL {shown!r}: no socket path")
        return url
    if port == 0:
        raise InvalidInputError(f"malformed registry URL {shown!r}: port 0")
    database = parts.path.strip("/")
    if database and not (database.isascii() and database.isdigit()):
        raise InvalidInputError(f"malformed registry URL {shown!r}: database {database!r} is not a number")
    return url
