"""Where the propagation benchmark's processes connect (``benchmarks/propagation.py``): the writer,
the clients and the raw subscribers of each topology, found from a URL (replicas from Sentinel, the
slot owner from the cluster)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis.cluster import RedisCluster
from redis.sentinel import Sentinel

from benchmarks import _harness
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.topology import connect, parse_redis_url


@dataclass(frozen=True)
class Paths:
    """Where one run's processes connect: the writer, the clients (cycled), the raw subscribers (cycled)."""

    backend: str
    topology: str
    writer_url: str
    client_urls: list[str]
    raw_kind: str
    raw_addresses: list[str]
    raw_channel: str
    where: str
    """One sentence for the report: where the clients and the raw subscribers are."""


def node_url(original: str, host: str, port: int) -> str:
    """A plain ``redis://`` URL of one data node, with ``original``'s credentials and TLS."""
    parts = urlsplit(original)
    userinfo = parts.netloc.rpartition("@")[0]
    scheme = "rediss" if parts.scheme.startswith("rediss") else "redis"
    return f"{scheme}://{userinfo + '@' if userinfo else ''}{host}:{port}/0"


def cluster_url(original: str, host: str, port: int) -> str:
    """``original`` (a ``redis+cluster://`` URL) with ``host:port`` as its only startup node."""
    parts = urlsplit(original)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo + '@' if userinfo else ''}{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, parts.fragment))


def _with_query(url: str, option: str) -> str:
    return url + ("&" if "?" in url else "?") + option


def discover(url: str, namespace: str, topology: str) -> Paths:
    """The :class:`Paths` of a run on ``url``: replicas from Sentinel, the slot owner from the cluster.

    Raises ``SystemExit`` when ``topology`` does not fit the URL.
    """
    channel = Keyspace(namespace).prefix + ":bench-raw"  # same slot as the registry's channel
    if _harness.backend_of(url) == "postgres":
        from promptreg.registry.postgres.conn import parse_postgres_url

        where = "clients and raw listeners on one PostgreSQL"
        return Paths("postgres", "primary", url, [url], "notify", [parse_postgres_url(url)[0]],
                     f"bench_raw_{namespace}", where)  # fmt: skip
    parsed = parse_redis_url(url)
    kind = {"single": "primary", "sentinel": "replicas", "cluster": "cluster"}[parsed.kind]
    if topology != kind and not (topology == "primary" and parsed.kind == "sentinel"):
        raise SystemExit(f"--topology {topology} does not fit the URL (a {parsed.kind} URL)")
    if parsed.kind == "single":
        return Paths("redis", "primary", url, [url], "publish", [url], channel, "every process on one redis-server")
    if parsed.kind == "sentinel":
        assert parsed.service is not None
        sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=parsed.sentinel_kwargs)
        if topology == "primary":
            host, port = sentinel.discover_master(parsed.service)
            where = "clients through Sentinel on the primary, raw subscribers on the primary"
            return Paths("redis", "primary", url, [url], "publish", [node_url(url, host, port)], channel, where)
        replicas = sentinel.discover_slaves(parsed.service)
        if not replicas:
            raise SystemExit("Sentinel names no replica: --topology replicas needs at least one")
        raw = [node_url(url, str(host), int(port)) for host, port in replicas]
        where = (
            f"writer and raw PUBLISH on the primary; clients read_from=replica (Sentinel's slave_for picks one of "
            f"{len(replicas)} replicas), raw subscribers alternate over the {len(replicas)} replicas"
        )
        return Paths("redis", "replicas", url, [_with_query(url, "read_from=replica")], "publish", raw, channel, where)
    cluster = connect(parsed)
    try:
        assert isinstance(cluster, RedisCluster)
        nodes = [(n.host, n.port) for n in cluster.get_nodes()]  # type: ignore[no-untyped-call]
        owner = cluster.get_node_from_key(channel)  # type: ignore[no-untyped-call]
    finally:
        cluster.close()
    clients = [cluster_url(url, host, port) for host, port in sorted(nodes)]
    where = (f"clients start from the {len(nodes)} nodes in turn and SSUBSCRIBE on the slot's owner; raw "
             f"subscribers SSUBSCRIBE on the owner, the raw SPUBLISH goes through RedisCluster")  # fmt: skip
    return Paths("redis", "cluster", url, clients, "spublish", [node_url(url, owner.host, owner.port)], channel, where)


def url_topology(url: str) -> str:
    """The topology a URL names: ``primary`` (one server, or PostgreSQL), ``replicas`` (Sentinel), ``cluster``."""
    if _harness.backend_of(url) == "postgres":
        return "primary"
    return {"single": "primary", "sentinel": "replicas", "cluster": "cluster"}[parse_redis_url(url).kind]
