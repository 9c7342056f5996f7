"""``PromptRegistryFactory``: a registry from a URL or from the environment.

==============================================  ==========================================
URL                                             backend
==============================================  ==========================================
``redis://[user:password@]host:port/db``        :class:`~registry.RedisPromptRegistry`
``rediss://...`` (TLS), ``unix:///path.sock``   :class:`~registry.RedisPromptRegistry`
``file://./relative.json``, ``file:///abs.json``  :class:`~registry.JsonFilePromptRegistry`
``./relative.json``, ``/abs.json`` (no scheme)  :class:`~registry.JsonFilePromptRegistry`
==============================================  ==========================================

:meth:`PromptRegistryFactory.create_from_config` reads ``PROMPTREG_URL`` (default
:data:`DEFAULT_URL`, a JSON file under ``./.promptreg/`` in the current directory) and
``PROMPTREG_NAMESPACE`` (the Redis namespace). Use :func:`redact_url` before showing a URL.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from registry.base import PromptRegistry
from registry.errors import InvalidInputError
from registry.file_store import JsonFilePromptRegistry
from registry.redis_store import RedisPromptRegistry

DEFAULT_URL = "file://./.promptreg/registry.json"
"""Where ``create_from_config`` keeps the registry when ``PROMPTREG_URL`` is not set."""
URL_ENV = "PROMPTREG_URL"
"""The environment variable holding the registry URL."""
NAMESPACE_ENV = "PROMPTREG_NAMESPACE"
"""The environment variable holding the Redis namespace (ignored for files)."""

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
FILE_SCHEME = "file"

_SECRET_QUERY = re.compile(r"(?i)((?:^|[?&;])(?:password|passwd|pass|token|secret)=)[^&;#]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe to show in messages and logs.

    ``redis://user:secret@host`` becomes ``redis://user:***@host``; user info without a colon
    (which some clients read as a password) is hidden whole; ``password=`` query values too.
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


def file_path_from_url(url: str) -> str:
    """The file path a ``file://`` URL (or a bare path) names; relative paths stay relative.

    ``file://./x.json`` -> ``./x.json``, ``file:///abs/x.json`` -> ``/abs/x.json``,
    ``file://x.json`` -> ``x.json``. Percent escapes are decoded. Raises
    :class:`~registry.InvalidInputError` for an empty path.
    """
    prefix = url[:7].lower()
    if prefix.startswith("file://"):
        path = url[7:]
    elif prefix.startswith("file:"):
        path = url[5:]
    else:
        path = url
    path = unquote(path)
    if not path:
        raise InvalidInputError(f"no file path in registry URL {redact_url(url)!r}")
    return path


class PromptRegistryFactory:
    """Builds a :class:`~registry.PromptRegistry` from a URL or from the environment."""

    @staticmethod
    def from_url(url: str, **options: Any) -> PromptRegistry:
        """A registry for ``url``; ``options`` go to the backend's constructor.

        ``redis://``, ``rediss://`` and ``unix://`` give a :class:`~registry.RedisPromptRegistry`
        (options such as ``namespace``, ``max_text_bytes``, redis-py keyword arguments);
        ``file://PATH`` or a bare path gives a :class:`~registry.JsonFilePromptRegistry`
        (``max_text_bytes``, ``max_metadata_bytes``, ``lock_timeout``). Raises
        :class:`~registry.InvalidInputError` for any other scheme or an empty URL; the message never
        contains the URL's password.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError(f"registry URL must be a non-empty string, got {url!r}")
        url = url.strip()
        scheme = _scheme(url)
        if scheme in REDIS_SCHEMES:
            return RedisPromptRegistry.from_url(url, **options)
        if scheme in (FILE_SCHEME, ""):
            return JsonFilePromptRegistry(file_path_from_url(url), **options)
        raise InvalidInputError(
            f"unsupported registry URL scheme {scheme!r} in {redact_url(url)!r}: "
            "use redis://, rediss://, unix:// or file://"
        )

    @classmethod
    def create_from_config(cls, environ: Mapping[str, str] | None = None, **options: Any) -> PromptRegistry:
        """The registry the environment names (``environ`` defaults to ``os.environ``).

        ``PROMPTREG_URL`` picks the backend (default :data:`DEFAULT_URL`: the JSON file
        ``./.promptreg/registry.json``, relative to the current directory). For Redis URLs a set
        ``PROMPTREG_NAMESPACE`` is the namespace unless ``options`` gives one. Raises what
        :meth:`from_url` raises.
        """
        env = os.environ if environ is None else environ
        url = env.get(URL_ENV) or DEFAULT_URL
        namespace = env.get(NAMESPACE_ENV)
        if namespace and _scheme(url.strip()) in REDIS_SCHEMES:
            options.setdefault("namespace", namespace)
        return cls.from_url(url, **options)


def _scheme(url: str) -> str:
    # urlsplit would read "C:/x" or "host:6379" as a scheme too; only letters before "://" or a
    # leading "file:" count, anything else without "://" is a bare file path.
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if match:
        return match.group(1).lower()
    if url[:5].lower() == "file:":
        return FILE_SCHEME
    if re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:\S*", url) and not url.startswith(("/", ".")):
        # "localhost:6379" or "http:x": almost surely not a file name the user meant.
        return url.split(":", 1)[0].lower()
    return ""
