"""The Redis connections of one client listener: where it subscribes and where it reads the state.

- One server: SUBSCRIBE on a client of its own (no retries, RESP2,
  :func:`~promptreg.registry.redis.topology.subscriber_for`); the state is read through the registry's client.
- Sentinel (``Sentinel.master_for``, or ``Sentinel.slave_for`` with ``read_from="replica"``): the
  subscriber goes to the primary or a replica Sentinel names, and the state is read from *that same*
  node (a client pinned to its address), so the messages and the state come from one server, the
  backlog marker holds, and the node the listener checks (:class:`~promptreg.client.redis.replica.TrustCheck`) is
  the one it reads. The registry's own pool may still hold connections to a primary Sentinel
  replaced (redis-py asks Sentinel only when it opens a connection). :attr:`FeedLinks.sentinels`
  are the service's sentinels, asked by the listener and watched for failovers; a client of the
  primary subscribes on the node they name (:meth:`~promptreg.registry.redis.sentinel.SentinelService.view`),
  through ``master_for`` only when no sentinel answers.
- Redis Cluster: sharded pub/sub. SSUBSCRIBE on the node that owns the channel's slot (the
  channel has the registry's hash tag, so it lives with the keys), through redis-py's client for
  that node; the state is read through the ``RedisCluster``. When the slot moves, the node sends
  ``sunsubscribe`` (Redis 7.0.? and later) or the safety poll sees the owner changed: the listener
  reconnects, which finds the new owner and resyncs.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.sentinel import SentinelConnectionPool

from promptreg.registry.redis.sentinel import SentinelService, sentinel_service
from promptreg.registry.redis.store import RedisPromptRegistry
from promptreg.registry.redis.topology import pinned_client, subscriber_for

SUBSCRIBED = frozenset({"subscribe", "ssubscribe"})
"""Message types confirming a subscription."""
UNSUBSCRIBED = frozenset({"unsubscribe", "sunsubscribe"})
"""Message types ending one (a ``sunsubscribe`` we did not ask for: the slot moved)."""
CHANGES = frozenset({"message", "smessage"})
"""Message types carrying a change message."""


class FeedLinks:
    """Opens the listener's subscription and says which client reads the state."""

    def __init__(self, registry: RedisPromptRegistry) -> None:
        self.registry = registry
        self.channel = registry.keys.channel
        self.cluster = registry.cluster
        pool: Any = None if self.cluster else registry.redis.connection_pool
        self.on_replica = isinstance(pool, SentinelConnectionPool) and not pool.is_master
        self.sentinels: SentinelService | None = None if self.cluster else sentinel_service(registry.redis)
        """The service's sentinels (Sentinel-managed clients only)."""
        self.node: tuple[str, int] | None = None
        """On Sentinel: the address of the node the subscription is on, and the state is read from."""
        # The subscriber of a single server or a Sentinel service lives as long as the feed; on a
        # cluster it is made for the slot's owner at each (re)connect.
        self._subscriber: redis.Redis | None = None if self.cluster else subscriber_for(registry.redis)
        self._node_subscriber: redis.Redis | None = None
        self._node: str | None = None
        self._pinned: redis.Redis | None = None
        self._pinned_at: tuple[str, int] | None = None
        self._primary: redis.Redis | None = None
        self._primary_at: tuple[str, int] | None = None
        self.reader: Any = registry.redis
        """The client the state is read from (the registry's, or a replica's pinned client)."""

    def subscribe(self) -> Any:
        """A new pubsub, subscribed (the confirmation is still to be read)."""
        if not self.cluster:
            assert self._subscriber is not None
            pubsub: Any = self._primary_subscriber().pubsub(ignore_subscribe_messages=False)
            pubsub.subscribe(self.channel)
            return pubsub
        cluster = self.registry.redis
        # A keyed read goes through redis-py's routing: a moved slot is followed and the slot map
        # refreshed, so the owner found next is the current one.
        cluster.exists(self.registry.keys.rev)
        node = cluster.get_node_from_key(self.channel)
        self._close_node_subscriber()
        self._node_subscriber = subscriber_for(cluster.get_redis_connection(node))
        self._node = node.name
        pubsub = self._node_subscriber.pubsub(ignore_subscribe_messages=False)
        pubsub.ssubscribe(self.channel)
        return pubsub

    def _primary_subscriber(self) -> redis.Redis:
        """On Sentinel, for a client of the primary: a subscriber on the node the sentinels name."""
        assert self._subscriber is not None
        if self.sentinels is None or not self.sentinels.primary:
            return self._subscriber
        address = self.sentinels.view().primary
        if address is None:  # no sentinel answers, or the primary is in question: redis-py decides
            return self._subscriber
        if address != self._primary_at:
            if self._primary is not None:
                self._primary.close()
            self._primary = pinned_client(self.registry.redis, *address, subscriber=True)
            self._primary_at = address
        assert self._primary is not None
        return self._primary

    def subscribed(self, pubsub: Any) -> None:
        """After the confirmation: on Sentinel, pin the reader to the node the subscription is on."""
        if self.sentinels is None or pubsub.connection is None:
            return
        address = (str(pubsub.connection.host), int(pubsub.connection.port))
        self.node = address
        if address != self._pinned_at:
            if self._pinned is not None:
                self._pinned.close()
            self._pinned = pinned_client(self.registry.redis, *address)
            self._pinned_at = address
        self.reader = self._pinned

    def slot_moved(self) -> bool:
        """On a cluster: whether the channel's slot now belongs to another node than the subscription's."""
        if not self.cluster or self._node is None:
            return False
        return bool(self.registry.redis.get_node_from_key(self.channel).name != self._node)

    def forked(self) -> FeedLinks:
        """New links (new connections) for a forked child."""
        return FeedLinks(self.registry)

    def _close_node_subscriber(self) -> None:
        if self._node_subscriber is not None:
            self._node_subscriber.close()
            self._node_subscriber = None

    def close(self) -> None:
        """Close the connections these links made (the registry's client is closed by its owner)."""
        if self._subscriber is not None:
            self._subscriber.close()
        self._close_node_subscriber()
        if self._pinned is not None:
            self._pinned.close()
        if self._primary is not None:
            self._primary.close()
        if self.sentinels is not None:
            self.sentinels.close()
