"""Redis topologies: the URL forms for one server, Sentinel and Cluster, and the redis-py clients for them.

==========================================================================  ===========================
URL                                                                         redis-py client
==========================================================================  ===========================
``redis://[user:password@]host:port/DB`` (``rediss://``, ``unix://``)       ``redis.Redis.from_url``
``redis+sentinel://[user:password@]host:port[,host:port...]/SERVICE[/DB]``   ``Sentinel.master_for``
``redis+cluster://[user:password@]host:port[,host:port...]/``              ``RedisCluster``
==========================================================================  ===========================

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS. Query options of promptreg (taken out
before redis-py sees the URL; the rest are redis-py's own, such as ``socket_timeout``):

- ``sentinel_password``, ``sentinel_username``: credentials for the sentinels (the user info before
  ``@`` is for the data nodes);
- ``read_from=primary|replica`` (Sentinel only): where :class:`~promptreg.PromptClient` reads and
  subscribes; ``replica`` uses ``Sentinel.slave_for``;
- ``wait_replicas=N``, ``wait_timeout=S``: after each write, ``WAIT N`` (see
  :class:`~promptreg.RedisPromptRegistry`).

Everything here is redis-py's own machinery (``redis.sentinel.Sentinel``,
``redis.cluster.RedisCluster``); this module only parses and checks the URL. One thing redis-py does
not do: tell whether a node is *still* the primary. ``Sentinel.master_for`` asks the sentinels only
when it opens a connection, and takes the first sentinel's answer; after a graceful ``SENTINEL
FAILOVER`` the old primary keeps answering as a primary for ~10 s, and a sentinel may still name it
for a moment. :class:`SentinelService` asks every sentinel at once and keeps the answer of the
newest configuration epoch (:class:`SentinelView`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote_plus, urlencode, urlsplit

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import Connection, SSLConnection, parse_url
from redis.exceptions import RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.redis.errors import RedisTarget, translate_redis_error
from promptreg.registry.urls import (
    check_redis_url,
    encode_userinfo,
    query_pairs,
    redact_url,
    registry_url_scheme,
    split_url,
)

SENTINEL_SCHEMES = frozenset({"redis+sentinel", "rediss+sentinel"})
"""URL schemes naming a Sentinel-managed primary."""
CLUSTER_SCHEMES = frozenset({"redis+cluster", "rediss+cluster"})
"""URL schemes naming a Redis Cluster."""
READ_FROM = ("primary", "replica")
"""Where a client may read from (``replica``: Sentinel only)."""

RedisClient = redis.Redis | RedisCluster
"""The redis-py clients the registry runs on."""
Kind = Literal["single", "sentinel", "cluster"]

_OWN_OPTIONS = ("read_from", "wait_replicas", "wait_timeout", "sentinel_password", "sentinel_username")
_DEFAULT_PORT = {"sentinel": 26379, "cluster": 6379}


@dataclass(frozen=True)
class RedisUrl:
    """A registry URL parsed and checked once: where the servers are and the promptreg options."""

    kind: Kind
    url: str
    """The URL as given (show it with :func:`~promptreg.registry.urls.redact_url`)."""
    hosts: tuple[tuple[str, int], ...] = ()
    """Sentinels (``sentinel``) or startup nodes (``cluster``)."""
    service: str | None = None
    connection: dict[str, Any] = field(default_factory=dict)
    """redis-py keyword arguments for the data nodes (credentials, db, TLS, query options)."""
    sentinel_kwargs: dict[str, Any] = field(default_factory=dict)
    read_from: str = "primary"
    wait_replicas: int = 0
    wait_timeout: float = 1.0
    plain_url: str = ""
    """For ``single``: the URL without promptreg's query options, as redis-py takes it."""

    @property
    def target(self) -> RedisTarget:
        """Where this URL points, as error messages name it (no credentials)."""
        if self.kind != "single":
            addresses = tuple(host_port(host, port) for host, port in self.hosts)
            return RedisTarget(kind=self.kind, addresses=addresses, service=self.service)
        parts = urlsplit(self.plain_url)
        if parts.scheme.lower() == "unix":
            return RedisTarget(addresses=(parts.path,))
        return RedisTarget(addresses=(host_port(parts.hostname or "localhost", parts.port or 6379),))


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _invalid(url: str, reason: str) -> InvalidInputError:
    return InvalidInputError(f"malformed registry URL {redact_url(url)!r}: {reason}")


def _own_options(query: str) -> tuple[dict[str, str], str]:
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, raw in query_pairs(query):  # decoded as redis-py decodes a query (parse_qs)
        value = unquote_plus(raw)
        (own.__setitem__(key, value) if key in _OWN_OPTIONS else rest.append((unquote_plus(key), value)))
    return own, urlencode(rest)


def _number(url: str, own: dict[str, str], key: str, kind: type[int] | type[float], default: float) -> Any:
    if key not in own:
        return kind(default)
    try:
        value = kind(own[key])
    except ValueError:
        raise _invalid(url, f"{key}={own[key]!r} is not a number") from None
    if value < 0 or (kind is float and value == 0):
        raise _invalid(url, f"{key} must be {'> 0' if kind is float else '>= 0'}, got {own[key]!r}")
    return value


def _hosts(url: str, hostlist: str, default_port: int) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in hostlist.split(","):
        try:
            parts = urlsplit("//" + item.strip())
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise _invalid(url, f"host {item!r}: {exc}") from None
        if not host or port == 0:
            raise _invalid(url, f"bad host {item!r} (want host:port)")
        hosts.append((host, port or default_port))
    return tuple(hosts)


def parse_redis_url(url: str) -> RedisUrl:
    """Parse a ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or ``redis+cluster://`` URL.

    Raises :class:`~promptreg.InvalidInputError` naming the problem (never the password).
    """
    if not isinstance(url, str):
        raise InvalidInputError(f"registry URL must be a string, got {type(url).__name__}")
    scheme = registry_url_scheme(url)
    # Cut where the user info ends (UrlParts), then encoded: redis-py's parser would end it at the
    # first "/" or "?", and quote the rest of a password as a port or a query.
    parts = split_url(url)
    if parts is None:  # a bare path ending in .json
        raise InvalidInputError(f"not a Redis URL: {redact_url(url)!r} (use redis://, rediss:// or unix://)")
    own, rest_query = _own_options(parts.query or "")
    read_from = own.get("read_from", "primary")
    if read_from not in READ_FROM:
        raise _invalid(url, f"read_from must be 'primary' or 'replica', got {read_from!r}")
    common: dict[str, Any] = {
        "url": url,
        "read_from": read_from,
        "wait_replicas": _number(url, own, "wait_replicas", int, 0),
        "wait_timeout": _number(url, own, "wait_timeout", float, 1.0),
    }
    if scheme not in SENTINEL_SCHEMES | CLUSTER_SCHEMES:
        if read_from == "replica" or "sentinel_password" in own or "sentinel_username" in own:
            raise _invalid(url, "read_from=replica and sentinel_* options need a redis+sentinel:// URL")
        plain = parts.with_encoded_userinfo(rest_query or None)
        return RedisUrl(kind="single", plain_url=check_redis_url(plain), **common)
    kind: Kind = "sentinel" if scheme in SENTINEL_SCHEMES else "cluster"
    tls = scheme.startswith("rediss")
    userinfo = "" if parts.userinfo is None else encode_userinfo(parts.userinfo) + "@"
    hostlist, _slash, path = parts.location.partition("/")
    hosts = _hosts(url, hostlist, _DEFAULT_PORT[kind])
    segments = [s for s in path.split("/") if s]
    service = None
    if kind == "sentinel":
        if not segments or len(segments) > 2:
            raise _invalid(url, "want redis+sentinel://host:port[,host:port...]/SERVICE[/DB]")
        service, db = segments[0], segments[1] if len(segments) == 2 else "0"
    else:
        if read_from == "replica":
            raise _invalid(url, "read_from=replica is for redis+sentinel:// URLs")
        if segments and segments != ["0"]:
            raise _invalid(url, "a cluster has only database 0")
        db = "0"
    if not (db.isascii() and db.isdigit()):
        raise _invalid(url, f"database {db!r} is not a number")
    # redis-py parses the rest (credentials, db, its own query options) from an equivalent URL.
    equivalent = f"{'rediss' if tls else 'redis'}://{userinfo}{host_port(*hosts[0])}/{db}"
    try:
        connection = parse_url(equivalent + (f"?{rest_query}" if rest_query else ""))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise _invalid(url, str(exc)) from None
    connection.pop("host", None)
    connection.pop("port", None)
    if connection.pop("connection_class", None) is SSLConnection:
        connection["ssl"] = True
    if kind == "cluster":
        connection.pop("db", None)
    sentinel_kwargs: dict[str, Any] = {k: v for k, v in connection.items() if k.startswith(("socket_", "ssl"))}
    for key in ("password", "username"):
        if f"sentinel_{key}" in own:
            sentinel_kwargs[key] = own[f"sentinel_{key}"]
    return RedisUrl(
        kind=kind, hosts=hosts, service=service, connection=connection, sentinel_kwargs=sentinel_kwargs, **common
    )


def connect(parsed: RedisUrl, *, read_from: str | None = None, **kwargs: Any) -> RedisClient:
    """The redis-py client for ``parsed``: the primary, or with ``read_from="replica"`` a replica.

    ``kwargs`` are redis-py connection options (the URL's own options win over them). Raises
    :class:`~promptreg.InvalidInputError` for options redis-py refuses, and for a cluster (whose
    client connects at once) the promptreg error of a failed first connection
    (:class:`~promptreg.RegistryAuthError` for a refused password,
    :class:`~promptreg.RegistryUnavailableError` otherwise).
    """
    where = read_from or parsed.read_from
    if where not in READ_FROM or (where == "replica" and parsed.kind != "sentinel"):
        raise InvalidInputError(f"read_from={where!r} needs a redis+sentinel:// URL, not {redact_url(parsed.url)!r}")
    try:
        if parsed.kind == "single":
            return redis.Redis.from_url(parsed.plain_url, **kwargs)
        options = {**kwargs, **parsed.connection}
        if parsed.kind == "cluster":
            options.pop("health_check_interval", None)
            nodes = [ClusterNode(host, port) for host, port in parsed.hosts]  # type: ignore[no-untyped-call]
            return RedisCluster(startup_nodes=nodes, **options)
        sentinel_kwargs = {
            **{k: v for k, v in kwargs.items() if k.startswith("socket_")},
            **parsed.sentinel_kwargs,
        }
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)
        assert parsed.service is not None
        make = sentinel.slave_for if where == "replica" else sentinel.master_for
        client: redis.Redis = make(parsed.service, **options)
        return client
    except (ValueError, TypeError) as exc:  # e.g. an unknown value in the URL's query
        raise InvalidInputError(f"malformed registry URL {redact_url(parsed.url)!r}: {exc}") from None
    except (redis.RedisError, RedisClusterException) as exc:  # RedisCluster() reads the slots at once
        raise translate_redis_error(exc, parsed.target) from exc


# Connection arguments redis-py adds for itself (pool links, RESP3 maintenance notifications):
# a new pool makes its own.
_INTERNAL_KWARGS = ("connection_pool", "maint_notifications", "orig_", "himport_registry")


def copyable_kwargs(connection_kwargs: dict[str, Any]) -> dict[str, Any]:
    """A pool's connection arguments without those redis-py adds for itself (a new pool makes its own)."""
    return {k: v for k, v in connection_kwargs.items() if not k.startswith(_INTERNAL_KWARGS)}


SUBSCRIBER_OPTIONS: dict[str, Any] = {"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "protocol": 2}
"""How the client's subscriber connection differs from the reader's (plus no retries)."""


def subscriber_for(client: redis.Redis, *, replica: bool | None = None) -> redis.Redis:
    """A new client to the same server as ``client`` (or the same Sentinel service), for pub/sub.

    No automatic retries (every reconnect must go through the listener's resync) and RESP2.
    ``replica`` overrides whether a Sentinel-managed client's subscriber follows the primary or a
    replica (default: as ``client`` does).
    """
    options = {**SUBSCRIBER_OPTIONS, "retry": Retry(NoBackoff(), 0)}
    pool: Any = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        kwargs = copyable_kwargs(pool.connection_kwargs)
        kwargs["connection_class"] = pool.connection_class  # keeps TLS
        on_replica = (not pool.is_master) if replica is None else replica
        manager: Sentinel = pool.sentinel_manager
        make = manager.slave_for if on_replica else manager.master_for
        subscriber: redis.Redis = make(pool.service_name, **{**kwargs, **options})
        return subscriber
    kwargs = {**copyable_kwargs(pool.connection_kwargs), **options}
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))


def pinned_client(
    client: redis.Redis, host: str, port: int, *, subscriber: bool = False, retries: int = 1
) -> redis.Redis:
    """A client to the server at ``host:port`` with ``client``'s options (credentials, TLS, timeouts).

    On Sentinel, the listener reads the state from the very node its subscription is on, and the
    writer writes to the primary the sentinels name (:class:`promptreg.registry.redis.sentinel.WriteRoute`).
    ``retries`` retries, no backoff (the listener has its own backoff; the writer takes 0). With
    ``subscriber``: the options of :func:`subscriber_for` (no retries, RESP2), for a subscription
    on the primary the sentinels name (:class:`SentinelService`): redis-py's ``master_for`` takes the
    first sentinel's ``SENTINEL MASTERS`` answer, which until a failover ends is still the old
    primary's address at the leader.
    """
    pool: Any = client.connection_pool
    kwargs = copyable_kwargs(pool.connection_kwargs)
    kwargs.update(host=host, port=port, retry=Retry(NoBackoff(), retries))
    if subscriber:
        kwargs.update(SUBSCRIBER_OPTIONS, retry=Retry(NoBackoff(), 0))
    tls = issubclass(pool.connection_class, SSLConnection)
    connection_class = SSLConnection if tls else Connection
    return redis.Redis(connection_pool=redis.ConnectionPool(connection_class=connection_class, **kwargs))


def is_cluster(client: object) -> bool:
    """Whether ``client`` is a :class:`redis.cluster.RedisCluster`."""
    return isinstance(client, RedisCluster)
