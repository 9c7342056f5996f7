"""Registry URLs: which scheme a URL names, whether a Redis URL is well formed, and how to show one.

URLs come from the environment, command-line arguments and configuration files, so they are
checked here before redis-py sees them: a malformed URL is an
:class:`~registry.InvalidInputError` naming the problem, and no message ever holds the password
(:func:`redact_url`).
"""

from __future__ import annotations

import difflib
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
        # A URL typed without its "://" (``user:pw@host:6379``, ``redis//u:pw@host``) still has
        # user info before its last "@"; in a file path ("/srv/a@b/x.json") it is only a name.
        before, at, after = text.rpartition("@")
        prefix, _slash, userinfo = before.rpartition("/")
        prefix += _slash
        if at and (":" in userinfo or not prefix):
            user, colon, _password = userinfo.partition(":")
            text = f"{prefix}{user}:***@{after}" if colon else f"{prefix}***@{after}"
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
    userinfo, at, _rest = rest.rpartition("@")
    if not sep:
        # Typed without "://" (``redis//u:pw@host``): a password only as ``user:password@``.
        userinfo = str(url).rpartition("@")[0].rpartition("/")[2]
        at = "@" if ":" in userinfo else ""
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


REGISTRY_SCHEMES = REDIS_SCHEMES | POSTGRES_SCHEMES | {FILE_SCHEME}
"""Every URL scheme :meth:`~registry.PromptRegistryFactory.from_url` accepts."""

EXPECTED_URLS = (
    "redis://, rediss://, unix://, redis[s]+sentinel://, redis[s]+cluster://, postgresql://, postgres://, "
    "file:// or a path ending in .json"
)
"""What a registry URL may be, as the one-line refusals say it."""

_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# A known scheme typed without its "://": "redis//h", "redis:/h", "redis:h:6379", "unix:/tmp/s".
_MISTYPED_SCHEME = re.compile(
    r"(?i)(" + "|".join(sorted((re.escape(s) for s in REGISTRY_SCHEMES), key=len, reverse=True)) + r")(:/*|//+)(.*)"
)
# host:port[/db], maybe with user info: what redis-cli and most configuration files call an address.
_ADDRESS = re.compile(r"(?:([^@/\s]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})(?:/(\d*))?/?")


def registry_url_scheme(url: str) -> str:
    """The lower-case scheme of a registry URL :class:`~registry.PromptRegistryFactory` accepts;
    ``""`` for a bare path ending in ``.json``.

    Accepted: ``SCHEME://...`` with a scheme of :data:`REGISTRY_SCHEMES`, ``file:PATH``, and a bare
    path ending in ``.json``. Anything else (``127.0.0.1:6379``, ``redis//host:6379/0``, ``ftp://x``)
    raises :class:`~registry.InvalidInputError`: one line saying what was expected, with a "did you
    mean" where the value looks like a mistyped URL. The message never holds the password. A value
    that is not refused here may still be malformed (the backend checks the rest).
    """
    shown = redact_url(url)
    match = _SCHEME_PREFIX.match(url)
    if match:
        scheme = match.group(1).lower()
        if scheme in REGISTRY_SCHEMES:
            return scheme
        close = difflib.get_close_matches(scheme, sorted(REGISTRY_SCHEMES), n=1, cutoff=0.75)
        hint = f" (did you mean {redact_url(close[0] + url[match.end(1) :])}?)" if close else ""
        raise InvalidInputError(
            f"unsupported registry URL scheme {scheme!r} in {shown!r}{hint}: expected {EXPECTED_URLS}"
        )
    if url[:5].lower() == "file:":
        return FILE_SCHEME
    if url.lower().endswith(".json"):
        return ""
    suggestion = suggest_url(url)
    hint = f" (did you mean {redact_url(suggestion)}?)" if suggestion else ""
    raise InvalidInputError(f"not a registry URL: {shown!r}{hint}; expected {EXPECTED_URLS}")


def suggest_url(text: str) -> str | None:
    """The registry URL ``text`` most likely meant, or ``None``; it may hold a password (redact it).

    ``redis//host:6379/0`` and ``redis:/host`` -> ``redis://host...`` (a known scheme without its
    ``://``); ``127.0.0.1:6379``, ``localhost:6379/2``, ``user:pw@host:6379`` ->
    ``redis://...:PORT/DB`` (a bare address is a Redis server's); a path without ``.json`` -> that path
    with ``.json``.
    """
    mistyped = _MISTYPED_SCHEME.fullmatch(text)
    if mistyped and mistyped.group(3):
        scheme, rest = mistyped.group(1).lower(), mistyped.group(3)
        if scheme == "unix":  # a socket path is absolute: unix:///tmp/redis.sock
            return f"unix:///{rest.lstrip('/')}"
        if rest.isdigit():  # "redis:6379": a port without a host
            return f"{scheme}://localhost:{rest}/0"
        if scheme in SINGLE_SERVER_SCHEMES:
            return _server_url(scheme, rest) or f"{scheme}://{rest}"
        return f"{scheme}://{rest}"
    address = _server_url("redis", text)
    last = text.rpartition("/")[2]
    if address is None and "/" in text and ":" not in text and last and "." not in last:
        return text + ".json"
    return address


def _server_url(scheme: str, address: str) -> str | None:
    """``SCHEME://[userinfo@]HOST:PORT/DB`` for ``[userinfo@]HOST:PORT[/DB]``, else ``None``."""
    match = _ADDRESS.fullmatch(address)
    if not match:
        return None
    userinfo, host, port, db = match.groups()
    return f"{scheme}://{userinfo + '@' if userinfo is not None else ''}{host}:{port}/{db or 0}"


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
    if not _SCHEME_PREFIX.match(url):
        suggestion = suggest_url(url)
        hint = f" (did you mean {redact_url(suggestion)}?)" if suggestion else ""
        raise InvalidInputError(f"malformed registry URL {shown!r}: no '://' after {scheme!r}{hint}")
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
