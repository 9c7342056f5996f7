"""Where a :class:`~promptreg.PromptClient` gets its state: a registry and the feed that follows it.

A Redis URL in any form of :mod:`promptreg.registry.redis.topology` or a redis-py client the application built gives
a :class:`~promptreg.RedisPromptRegistry` and a :class:`~promptreg.client.redis.feed.RedisFeed`; a file URL
gives a :class:`~promptreg.JsonFilePromptRegistry` and a :class:`~promptreg.client.file_feed.FileFeed`; a
``postgresql://`` URL a :class:`~promptreg.PostgresPromptRegistry` and a
:class:`~promptreg.client.postgres.feed.PostgresFeed` (LISTEN/NOTIFY). Without a URL, the environment names
the registry as it does for :meth:`~promptreg.PromptRegistryFactory.create_from_config`
(:func:`registry_from_environment`).
"""

from __future__ import annotations

import os

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from promptreg.client.feeds import Feed, FeedContext
from promptreg.client.file_feed import FileFeed
from promptreg.client.postgres.feed import PostgresFeed
from promptreg.client.redis.feed import RedisFeed
from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import InvalidInputError
from promptreg.registry.factory import (
    DEFAULT_URL,
    NAMESPACE_ENV,
    POSTGRES_SCHEMES,
    REDIS_SCHEMES,
    URL_ENV,
    PromptRegistryFactory,
    redact_url,
)
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.postgres.store import PostgresPromptRegistry
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.redis.topology import RedisClient
from promptreg.registry.urls import url_scheme


def open_source(
    url: str | RedisClient, namespace: str, context: FeedContext, poll_interval: float, read_from: str | None
) -> tuple[PromptRegistry, Feed]:
    """The registry and its feed for ``url`` (a URL or a redis-py client). Raises
    :class:`~promptreg.InvalidInputError` for an unsupported URL or option."""
    if isinstance(url, redis.Redis | RedisCluster):
        if read_from not in (None, "primary"):
            raise InvalidInputError("read_from='replica' with a client: pass one from Sentinel.slave_for")
        injected = RedisPromptRegistry(url, namespace=namespace)
        return injected, RedisFeed(injected, context, poll_interval=poll_interval)
    if not isinstance(url, str):
        raise InvalidInputError(f"registry URL must be a string or a redis-py client, got {type(url).__name__}")
    url = url.strip()
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in REDIS_SCHEMES:
        # Fail fast (one retry, no backoff): the listener has its own backoff, and a pinned
        # lookup during an outage should raise, not hang.
        redis_registry = RedisPromptRegistry.from_url(
            url,
            namespace=namespace,
            read_from=read_from,
            socket_timeout=5.0,
            socket_connect_timeout=5.0,
            retry=Retry(NoBackoff(), 1),
        )
        return redis_registry, RedisFeed(redis_registry, context, poll_interval=poll_interval)
    if read_from not in (None, "primary"):
        raise InvalidInputError(f"read_from={read_from!r} needs a redis+sentinel:// URL")
    if scheme in POSTGRES_SCHEMES:
        # A pinned lookup during an outage should raise soon, not wait for libpq's default.
        pg_registry = PostgresPromptRegistry.from_url(url, namespace=namespace, auto_migrate=False, connect_timeout=3)
        return pg_registry, PostgresFeed(pg_registry, context, poll_interval=poll_interval)
    registry = PromptRegistryFactory.from_url(url)
    if not isinstance(registry, JsonFilePromptRegistry):
        raise InvalidInputError(f"PromptClient does not support the registry URL {redact_url(url)!r}")
    return registry, FileFeed(registry, context)


def registry_from_environment(namespace: str | None) -> tuple[str, str | None]:
    """``(url, namespace)`` as :meth:`~promptreg.PromptRegistryFactory.create_from_config` reads them:
    ``$PROMPTREG_URL`` or :data:`~promptreg.registry.factory.DEFAULT_URL`; ``namespace`` if given, else a set
    ``$PROMPTREG_NAMESPACE`` for a Redis or PostgreSQL URL (``None``: the default)."""
    url = os.environ.get(URL_ENV) or DEFAULT_URL
    if not namespace:
        from_env = os.environ.get(NAMESPACE_ENV)
        if from_env and url_scheme(url.strip()) in REDIS_SCHEMES | POSTGRES_SCHEMES:
            namespace = from_env
    return url, namespace
