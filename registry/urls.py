"""Registry URLs: which scheme a URL names, whether a Redis URL is well formed, and how to show one.

URLs come from the environment, command-line arguments and configuration files, so they are
checked here before redis-py sees them: a malformed URL is an
:class:`~promptreg.InvalidInputError` naming the problem, and no message ever holds the password
(:func:`redact_url`).

Where a password starts and ends is decided here, once (:func:`split_url`): the user info ends at
the last ``@`` before the query, so a password typed raw (``p@ss``, ``a/b``, ``x?y``, ``se%ZZ``)
is the part every message hides, and the backends hand it to redis-py and libpq percent-encoded
(:meth:`UrlParts.with_encoded_userinfo`): their parsers then never cut it into a host, a port or a
query, and never quote it in an error.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from urllib.parse import quote, unquote, unquote_plus, unquote_to_bytes, urlsplit

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.validation import validate_unicode

SINGLE_SERVER_SCHEMES = frozenset({"redis", "rediss", "unix"})
"""URL schemes naming one Redis server (redis-py's own URLs)."""
REDIS_SCHEMES = SINGLE_SERVER_SCHEMES | {"redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"}
"""URL schemes served by :class:`~promptreg.RedisPromptRegistry` (one server, Sentinel, Cluster:
:mod:`promptreg.registry.redis.topology`)."""
POSTGRES_SCHEMES = frozenset({"postgresql", "postgres"})
"""URL schemes served by :class:`~promptreg.PostgresPromptRegistry` (libpq URLs)."""
FILE_SCHEME = "file"
"""The URL scheme of :class:`~promptreg.JsonFilePromptRegistry` (a bare path means it too)."""
REGISTRY_SCHEMES = REDIS_SCHEMES | POSTGRES_SCHEMES | {FILE_SCHEME}
"""Every URL scheme :meth:`~promptreg.PromptRegistryFactory.from_url` accepts."""

# A query parameter's name: where a query (or its next parameter) may start.
_PARAMETER = r"[A-Za-z_][A-Za-z0-9_.-]*="
# A secret parameter's value runs to the next "&name=": a raw "&" in a password stays in it.
_SECRET_QUERY = re.compile(
    r"(?i)((?:^|[?&;])(?:sentinel_|ssl)?(?:password|passwd|pass|token|secret)=)(?:[^&]|&(?!" + _PARAMETER + "))*"
)
_NEXT_PARAMETER = re.compile("&(?=" + _PARAMETER + ")")
_SCHEME_PREFIX = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
# A known scheme typed without its "://": "redis//h", "redis:/h", "redis:h:6379", "unix:/tmp/s".
_MISTYPED_SCHEME = re.compile(
    r"(?i)(" + "|".join(sorted((re.escape(s) for s in REGISTRY_SCHEMES), key=len, reverse=True)) + r")(:/*|//+)(.*)"
)
# Hosts as they stand between the user info and the path: "h", "h:6379", "[::1]:5432", "h1:1,h2:2", "".
_HOST = r"(?:\[[^\]/@]*\]|[^:/\[\]@,?#]*)(?::\d*)?"
_HOSTS = re.compile(_HOST + "(?:," + _HOST + ")*")
# host:port[/db], maybe with user info: what redis-cli and most configuration files call an address.
_ADDRESS = re.compile(r"(?:([^@/\s]*)@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})(?:/(\d*))?/?")


@dataclass(frozen=True)
class UrlParts:
    """A registry URL cut where its user info starts and ends: each part as written.

    The user info ends at the last ``@`` before the query, so a raw ``@``, ``:``, ``/``, ``?`` or
    ``#`` in a password stays in the password (``postgresql://app:p@ss/w?rd@db/prompts``); the
    query starts at the first ``?`` that stands after the hosts and before ``name=``
    (``postgresql://db/prompts?user=me@corp`` has no user info). :func:`redact_url` hides, and
    the backends connect with, exactly this user info.
    """

    prefix: str
    """The scheme and what follows it: ``redis://``, or a mistyped ``redis//`` / ``postgresql:/``."""
    userinfo: str | None
    """``user[:password]`` as written; ``None`` without an ``@``."""
    location: str
    """The hosts and the path (``127.0.0.1:6379/0``, ``h1:26379,h2:26379/svc``, ``/tmp/redis.sock``)."""
    query: str | None
    """What follows the query's ``?``; ``None`` without one."""

    @property
    def scheme(self) -> str:
        """The lower-case scheme."""
        return re.split(r"[:/]", self.prefix, maxsplit=1)[0].lower()

    @property
    def well_formed(self) -> bool:
        """Whether the scheme is followed by ``://`` (not a mistyped ``redis//`` or ``redis:/``)."""
        return self.prefix.endswith("://")

    def password(self) -> str | None:
        """The password as written: after the user info's first ``:``; the lone user info where a
        backend reads it as the password (Redis); ``None`` when there is none."""
        if self.userinfo is None:
            return None
        user, colon, password = self.userinfo.partition(":")
        if self.scheme == FILE_SCHEME:
            return password if colon and "/" not in user else None
        if colon:
            return password
        return None if self.scheme in POSTGRES_SCHEMES else user

    def with_encoded_userinfo(self, query: str | None) -> str:
        """The URL with its user name and password percent-encoded (as a URL parser must find
        them: no raw ``@ : / ? # %``) and ``query`` (already encoded) as its query."""
        userinfo = "" if self.userinfo is None else encode_userinfo(self.userinfo) + "@"
        return f"{self.prefix}{userinfo}{self.location}{'' if query is None else '?' + query}"


def split_url(url: str) -> UrlParts | None:
    """``url`` cut into :class:`UrlParts`; ``None`` when it has no scheme (a bare path or address).

    Never raises: it only cuts (a malformed host or port is the backend's to refuse).
    """
    text = str(url)
    match = _SCHEME_PREFIX.match(text) or _MISTYPED_SCHEME.fullmatch(text)
    if match is None:
        return None
    prefix = text[: match.end()] if match.re is _SCHEME_PREFIX else text[: match.start(3)]
    rest = text[len(prefix) :]
    start = _query_start(rest)
    head = rest[:start]
    userinfo, at, location = head.rpartition("@")
    query = rest[start + 1 :] if start < len(rest) else None
    return UrlParts(prefix, userinfo if at else None, location, query)


def _query_start(rest: str) -> int:
    """Where the query's ``?`` is in ``rest`` (the URL after its scheme); ``len(rest)`` if none.

    A ``?`` inside a raw password is followed by more user info, not by ``name=``, or stands where
    the hosts would be malformed (``app:p?ss@db``: port ``p``).
    """
    position = rest.find("?")
    while position >= 0:
        hosts = rest[:position].rpartition("@")[2].partition("/")[0]
        after = rest[position + 1 :]
        if _HOSTS.fullmatch(hosts) and (not after or re.match(_PARAMETER, after)):
            return position
        position = rest.find("?", position + 1)
    return len(rest)


def query_pairs(query: str) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of a URL query, as written (not decoded).

    A parameter ends at the next ``&name=``, so a raw ``&`` in a value (``password=a&b``) stays in
    it; a pair without ``=`` has the value ``""``.
    """
    if not query:
        return []
    pairs = []
    for item in _NEXT_PARAMETER.split(query):
        name, _eq, value = item.partition("=")
        pairs.append((name, value))
    return pairs


def encode_component(text: str) -> str:
    """``text`` (a URL component as written) with every character but letters, digits and ``-._~``
    percent-encoded; its valid ``%XX`` escapes are kept (as the same bytes), and a ``%`` that
    starts none stands for itself (``se%ZZcret`` is ``se%25ZZcret``), as in redis-py."""
    return quote(unquote_to_bytes(text), safe="")


def encode_userinfo(userinfo: str) -> str:
    """``user[:password]`` with both parts encoded by :func:`encode_component` (the first ``:``
    separates them)."""
    user, colon, password = userinfo.partition(":")
    return encode_component(user) + (":" + encode_component(password) if colon else "")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to show in messages and logs.

    ``redis://user:secret@host`` becomes ``redis://user:***@host``; user info without a colon
    (which some clients read as a password) is hidden whole; ``password=`` and
    ``sentinel_password=`` (and libpq's ``sslpassword=``) query values too. Sentinel and Cluster URLs
    (``redis+sentinel://user:secret@h1:26379,h2:26379/service``) are redacted the same way. The user
    info is what :class:`UrlParts` cuts (a raw ``@``, ``/``, ``?`` or ``#`` in a password is hidden
    with it), also in a URL typed without its ``://``. Never raises.
    """
    text = str(url)
    parts = split_url(text)
    if parts is None:
        return _SECRET_QUERY.sub(r"\1***", _redact_bare(text))
    userinfo = ""
    if parts.userinfo is not None:
        user, colon, _password = parts.userinfo.partition(":")
        if parts.scheme == FILE_SCHEME and parts.password() is None:
            userinfo = parts.userinfo + "@"  # a path with an "@" in it
        else:
            userinfo = f"{user}:***@" if colon and "/" not in user else "***@"
    query = "" if parts.query is None else "?" + _SECRET_QUERY.sub(r"\1***", parts.query)
    return f"{parts.prefix}{userinfo}{parts.location}{query}"


def _redact_bare(text: str) -> str:
    # Without a scheme: "user:pw@host:6379" (an address) has user info before its last "@"; in a
    # file path ("/srv/a@b/x.json") it is only a name, unless the segment reads "user:pw@".
    before, at, after = text.rpartition("@")
    if not at:
        return text
    if _ADDRESS.fullmatch(after):
        prefix, userinfo = "", before
    else:
        prefix, slash, userinfo = before.rpartition("/")
        prefix += slash
    if ":" in userinfo or not prefix:
        user, colon, _password = userinfo.partition(":")
        return f"{prefix}{user}:***@{after}" if colon and "/" not in user else f"{prefix}***@{after}"
    return text


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` holds, to scrub from messages: its password and its ``password=``-like
    query values, each as written, percent-decoded and percent-encoded (:func:`encode_component`,
    as a backend gets it); those of at least 3 characters.

    Works on malformed URLs too (it does not parse them). Never raises. User info without a colon is
    a password to Redis (``redis://secret@host``) but a user name to PostgreSQL
    (``postgresql://postgres@host``): scrubbing a user name would mangle every message that holds
    the word.
    """
    text = str(url)
    parts = split_url(text)
    found: list[str] = []
    if parts is None:
        before, at, after = text.rpartition("@")
        userinfo = before if _ADDRESS.fullmatch(after) else before.rpartition("/")[2]
        _user, colon, password = userinfo.partition(":")
        if at and colon:
            found += [password, unquote(password), encode_component(password)]
        query = text.partition("?")[2]
    else:
        secret = parts.password()
        if secret is not None:
            found += [secret, unquote(secret), encode_component(secret)]
        query = parts.query or ""
    for match in _SECRET_QUERY.finditer(query):
        value = match.group(0)[len(match.group(1)) :]
        found += [value, unquote_plus(value), unquote(value), encode_component(value)]
    return [s for s in dict.fromkeys(found) if len(s) >= 3]


def without_query_parameter(url: str, name: str) -> str:
    """``url`` without the query parameter ``name`` (every occurrence); the rest kept as written.

    The query is the one :class:`UrlParts` cuts (a ``?`` in a raw password does not start it), so a
    backend never finds a parameter this removed."""
    parts = split_url(url)
    if parts is None or parts.query is None:
        return url
    kept = [f"{key}={value}" for key, value in query_pairs(parts.query) if key != name]
    userinfo = "" if parts.userinfo is None else parts.userinfo + "@"
    return f"{parts.prefix}{userinfo}{parts.location}" + ("?" + "&".join(kept) if kept else "")


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


EXPECTED_URLS = (
    "redis://, rediss://, unix://, redis[s]+sentinel://, redis[s]+cluster://, postgresql://, postgres://, "
    "file:// or a path ending in .json"
)
"""What a registry URL may be, as the one-line refusals say it."""


def registry_url_scheme(url: str) -> str:
    """The lower-case scheme of a registry URL :class:`~promptreg.PromptRegistryFactory` accepts;
    ``""`` for a bare path ending in ``.json``.

    Accepted: ``SCHEME://...`` with a scheme of :data:`REGISTRY_SCHEMES`, ``file:PATH``, and a bare
    path ending in ``.json``. Anything else (``127.0.0.1:6379``, ``redis//host:6379/0``, ``ftp://x``)
    raises :class:`~promptreg.InvalidInputError`: one line saying what was expected, with a "did you
    mean" where the value looks like a mistyped URL; so is a file URL or path holding a password
    (``file://user:pw@/srv/x.json``, ``?password=``), which a file registry does not take and a
    path would show. The message never holds the password. A value that is not refused here may
    still be malformed (the backend checks the rest).
    """
    shown = redact_url(url)
    match = _SCHEME_PREFIX.match(url)
    if match:
        scheme = match.group(1).lower()
        if scheme in REGISTRY_SCHEMES - {FILE_SCHEME}:
            return scheme
        if scheme != FILE_SCHEME:
            close = difflib.get_close_matches(scheme, sorted(REGISTRY_SCHEMES), n=1, cutoff=0.75)
            hint = f" (did you mean {redact_url(close[0] + url[match.end(1) :])}?)" if close else ""
            raise InvalidInputError(
                f"unsupported registry URL scheme {scheme!r} in {shown!r}{hint}: expected {EXPECTED_URLS}"
            )
    is_file_url = url[:5].lower() == "file:"
    if is_file_url or url.lower().endswith(".json"):
        if shown != url:  # "file://user:pw@/x.json" or "?password=": a path, where it would be shown
            raise InvalidInputError(f"a file registry takes no password: {shown!r} (percent-encode an '@' in its path)")
        return FILE_SCHEME if is_file_url else ""
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
    Raises :class:`~promptreg.InvalidInputError` naming the problem and the redacted URL. redis-py
    reads the user info up to the first ``/``: give it :meth:`UrlParts.with_encoded_userinfo`.
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
    # Only the hosts and path are parsed: urlsplit's words about a port would quote a password
    # holding "/" ("port could not be cast to integer value as 'pa'").
    cut = split_url(url)
    problem = ""
    try:
        parts = urlsplit("//" + (cut.location if cut is not None else ""))
        port = parts.port
    except ValueError as exc:
        problem = str(exc)
    if problem:  # raised outside the handler: no context to chain
        raise InvalidInputError(f"malformed registry URL {shown!r}: {problem}")
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
