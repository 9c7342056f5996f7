"""``PromptRegistryFactory``: a registry from a URL or from the environment.

==============================================  ==========================================
URL                                             backend
==============================================  ==========================================
``redis://[user:password@]host:port/db``        :class:`~promptreg.RedisPromptRegistry`
``rediss://...`` (TLS), ``unix:///path.sock``   :class:`~promptreg.RedisPromptRegistry`
``redis+sentinel://h:p[,h:p]/SERVICE[/DB]``     :class:`~promptreg.RedisPromptRegistry` (Sentinel)
``redis+cluster://h:p[,h:p]/``                  :class:`~promptreg.RedisPromptRegistry` (Cluster)
``postgresql://user@host/db?namespace=ns``      :class:`~promptreg.PostgresPromptRegistry`
``postgres://...`` (the same)                   :class:`~promptreg.PostgresPromptRegistry`
``file://./relative.json``, ``file:///abs.json``  :class:`~promptreg.JsonFilePromptRegistry`
``./relative.json``, ``/abs.json`` (no scheme)  :class:`~promptreg.JsonFilePromptRegistry`
==============================================  ==========================================

Anything else (``127.0.0.1:6379``, ``redis//host:6379/0``, ``notes.txt``) is refused with a one-line
:class:`~promptreg.InvalidInputError` saying what was expected, with a "did you mean" where it looks
like a mistyped URL: never a JSON file named after the typo. A file URL's folder must exist (the
registry creates the file, never a folder), except for :data:`DEFAULT_URL`'s ``./.promptreg/``.

:meth:`PromptRegistryFactory.create_from_config` reads ``PROMPTREG_URL`` (default
:data:`DEFAULT_URL`, a JSON file under ``./.promptreg/`` in the current directory) and
``PROMPTREG_NAMESPACE`` (the Redis or PostgreSQL namespace). Use :func:`redact_url` before showing a URL.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.urls import (
    FILE_SCHEME,
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    redact_url,
    registry_url_scheme,
    url_scheme,
)
from promptreg.registry.validation import validate_unicode

__all__ = [
    "DEFAULT_URL",
    "FILE_SCHEME",
    "NAMESPACE_ENV",
    "POSTGRES_SCHEMES",
    "REDIS_SCHEMES",
    "URL_ENV",
    "PromptRegistryFactory",
    "file_path_from_url",
    "redact_url",
]

DEFAULT_URL = "file://./.promptreg/registry.json"
"""Where ``create_from_config`` keeps the registry when ``PROMPTREG_URL`` is not set; the one file URL
whose folder (``./.promptreg/``) the first write creates."""
URL_ENV = "PROMPTREG_URL"
"""The environment variable holding the registry URL."""
NAMESPACE_ENV = "PROMPTREG_NAMESPACE"
"""The environment variable holding the Redis namespace (ignored for files)."""


def file_path_from_url(url: str) -> str:
    """The file path a ``file://`` URL (or a bare path) names; relative paths stay relative.

    ``file://./x.json`` -> ``./x.json``, ``file:///abs/x.json`` -> ``/abs/x.json``,
    ``file://x.json`` -> ``x.json``. Percent escapes are decoded. Raises
    :class:`~promptreg.InvalidInputError` for an empty path.
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
    """Builds a :class:`~promptreg.PromptRegistry` from a URL or from the environment."""

    @staticmethod
    def from_url(url: str, **options: Any) -> PromptRegistry:
        """A registry for ``url``; ``options`` go to the backend's constructor.

        ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``rediss+sentinel://``,
        ``redis+cluster://`` and ``rediss+cluster://`` give a :class:`~promptreg.RedisPromptRegistry`
        (options such as ``namespace``, ``max_text_bytes``, ``wait_replicas``, redis-py keyword
        arguments; URL forms in :mod:`promptreg.registry.redis.topology`);
        ``postgresql://`` and ``postgres://`` give a :class:`~promptreg.PostgresPromptRegistry`
        (``namespace=`` in the query or as an option, ``max_text_bytes``, ``auto_migrate``, psycopg
        connection arguments; needs the ``[postgres]`` extra);
        ``file://PATH`` or a bare path ending in ``.json`` gives a
        :class:`~promptreg.JsonFilePromptRegistry` (``max_text_bytes``, ``max_metadata_bytes``,
        ``lock_timeout``, ``create_parent``) whose folder must exist, except for :data:`DEFAULT_URL`
        (``create_parent=True``: the first write creates ``./.promptreg/``).

        Raises :class:`~promptreg.InvalidInputError` for an empty URL, a scheme it does not know, a
        value that is neither a URL nor a ``.json`` path (one line saying what was expected, with a
        "did you mean redis://HOST:PORT/0" for ``HOST:PORT``), and a file URL whose folder does not
        exist (nothing is created); the message never contains the URL's password.
        """
        if not isinstance(url, str) or not url.strip():
            raise InvalidInputError(f"registry URL must be a non-empty string, got {url!r}")
        url = validate_unicode(url.strip(), "registry URL")
        scheme = registry_url_scheme(url)
        if scheme in REDIS_SCHEMES:
            from promptreg.registry.redis.store import RedisPromptRegistry  # loaded only when used

            return RedisPromptRegistry.from_url(url, **options)
        if scheme in POSTGRES_SCHEMES:
            from promptreg.registry.postgres.store import PostgresPromptRegistry  # loaded only when used

            return PostgresPromptRegistry.from_url(url, **options)
        if url == DEFAULT_URL:
            options.setdefault("create_parent", True)
        return JsonFilePromptRegistry(file_path_from_url(url), **options)

    @classmethod
    def create_from_config(cls, environ: Mapping[str, str] | None = None, **options: Any) -> PromptRegistry:
        """The registry the environment names (``environ`` defaults to ``os.environ``).

        ``PROMPTREG_URL`` picks the backend (default :data:`DEFAULT_URL`: the JSON file
        ``./.promptreg/registry.json``, relative to the current directory, whose folder the first write
        creates). For Redis and PostgreSQL URLs a set
        ``PROMPTREG_NAMESPACE`` is the namespace unless ``options`` gives one. Raises what
        :meth:`from_url` raises.
        """
        env = os.environ if environ is None else environ
        url = env.get(URL_ENV) or DEFAULT_URL
        namespace = env.get(NAMESPACE_ENV)
        if namespace and url_scheme(url.strip()) in REDIS_SCHEMES | POSTGRES_SCHEMES:
            options.setdefault("namespace", namespace)
        return cls.from_url(url, **options)
