"""The alternatives ``PromptClient.get`` is measured against, each implemented as fairly as we can.

Every contender has the same call shape, ``get(name, label=None, *, version=None) -> PromptVersion``,
and is timed by the same loop, so the call overhead is the same for all of them.

* :class:`DictFloor`: the CPython floor, a method doing one dict lookup.
* :class:`RedisLabelRead`: a Redis read per lookup, the cheapest honest one: ``GET`` the label key
  (one round trip); the version it names comes from an in-process dict (versions are immutable).
* :class:`RedisFullRead`: a Redis read per lookup with nothing cached: the label and the version hash
  in one round trip (one ``EVALSHA``; a pipeline cannot do it, the version key depends on the label's
  value), parsed into a ``PromptVersion`` every time.
* :class:`TtlCache`: the peers' cache. Modelled on Langfuse's Python ``PromptCache`` (and MLflow >= 3.8,
  which caches label/alias lookups for 60 s): a dict of items with an expiry, read under a lock; an
  expired item is still served (stale-while-revalidate) and one background worker refetches it, at
  most one refresh per key at a time; a cold miss fetches synchronously. We read ``time.monotonic()``
  where Langfuse builds ``datetime.now()``: cheaper, so the comparison favours the baseline.
* :class:`ClientSideCacheRead`: redis-py's own client-side caching (RESP3 + ``CLIENT TRACKING``),
  ``GET`` of the label key answered from redis-py's local cache; versions from an in-process dict.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable
from importlib import metadata
from typing import Any, cast

import redis

from promptreg.registry.errors import LabelNotFoundError, PromptNotFoundError
from promptreg.registry.models import PromptVersion
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.records import version_from_hash

DEFAULT_LABEL = "production"
TTL_SECONDS = 60.0

# KEYS[1]: the label key; ARGV[1]: the version key prefix. The version key is built here because it
# depends on the label's value; it shares the label's hash tag, so it is in the same slot.
_READ_LABEL_AND_VERSION = """
local number = redis.call('GET', KEYS[1])
if not number then return false end
return {number, redis.call('HGETALL', ARGV[1] .. number)}
"""


class DictFloor:
    """The CPython floor: a method whose body is one dict lookup."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, PromptVersion]) -> None:
        self._data = data

    def get(self, name: str, label: str | None = None, *, version: int | None = None) -> PromptVersion:
        return self._data[name]


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisLabelRead:
    """One ``GET`` of the label key per lookup; version objects cached in-process (they never change)."""

    def __init__(self, conn: redis.Redis, keys: Keyspace, default_label: str = DEFAULT_LABEL) -> None:
        self._redis = conn
        self._keys = keys
        self._default = default_label
        self._versions: dict[tuple[str, int], PromptVersion] = {}

    def get(self, name: str, label: str | None = None, *, version: int | None = None) -> PromptVersion:
        label = label or self._default
        raw = self._redis.get(self._keys.label(name, label))
        if raw is None:
            raise LabelNotFoundError(name, label)
        number = int(raw)
        found = self._versions.get((name, number))
        if found is None:
            fields = cast(dict[bytes, bytes], self._redis.hgetall(self._keys.version(name, number)))
            found = self._versions[name, number] = version_from_hash(name, number, fields)
        return found


class RedisFullRead:
    """Label and version hash in one round trip (``EVALSHA``), parsed into a ``PromptVersion`` each time."""

    def __init__(self, conn: redis.Redis, keys: Keyspace, default_label: str = DEFAULT_LABEL) -> None:
        self._script = conn.register_script(_READ_LABEL_AND_VERSION)
        self._keys = keys
        self._default = default_label

    def get(self, name: str, label: str | None = None, *, version: int | None = None) -> PromptVersion:
        label = label or self._default
        reply = self._script(keys=[self._keys.label(name, label)], args=[self._keys.version_prefix(name)])
        if not reply:
            raise LabelNotFoundError(name, label)
        number = int(reply[0])
        return version_from_hash(name, number, _pairs(reply[1]))


def fetch_pointed_versions(
    conn: redis.Redis, keys: Keyspace, names: Iterable[str], label: str = DEFAULT_LABEL, batch: int = 2000
) -> dict[str, PromptVersion]:
    """For each name, the version ``label`` points at, read in pipelined batches (setup, not timed)."""
    names = list(names)
    found: dict[str, PromptVersion] = {}
    for start in range(0, len(names), batch):
        chunk = names[start : start + batch]
        pipe = conn.pipeline(transaction=False)
        for name in chunk:
            pipe.get(keys.label(name, label))
        numbers = pipe.execute()
        pipe = conn.pipeline(transaction=False)
        for name, raw in zip(chunk, numbers, strict=True):
            if raw is None:
                raise LabelNotFoundError(name, label)
            pipe.hgetall(keys.version(name, int(raw)))
        for name, raw, fields in zip(chunk, numbers, pipe.execute(), strict=True):
            found[name] = version_from_hash(name, int(raw), fields)
    return found


class _Item:
    __slots__ = ("expires", "value")

    def __init__(self, value: PromptVersion, expires: float) -> None:
        self.value = value
        self.expires = expires


class TtlCache:
    """A 60 s TTL cache with stale-while-revalidate and one background refresh worker (see module doc).

    ``fetch(name, label)`` reads the current version from the source of truth. ``refreshes`` counts
    background refetches, so a benchmark can show none happened while it was timing.
    """

    def __init__(
        self,
        fetch: Callable[[str, str], PromptVersion],
        *,
        ttl: float = TTL_SECONDS,
        default_label: str = DEFAULT_LABEL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._default = default_label
        self._clock = clock
        self._items: dict[str, _Item] = {}
        self._lock = threading.RLock()
        self._refreshing: set[str] = set()
        self._tasks: queue.Queue[tuple[str, str, str] | None] = queue.Queue()
        self.refreshes = 0
        self._worker = threading.Thread(target=self._refresh_loop, name="ttl-cache-refresh", daemon=True)
        self._worker.start()

    def get(self, name: str, label: str | None = None, *, version: int | None = None) -> PromptVersion:
        label = label or self._default
        key = f"{name}-label:{label}"
        with self._lock:
            item = self._items.get(key)
        if item is None:  # cold miss: the caller waits for the network
            value = self._fetch(name, label)
            self.put(key, value)
            return value
        if self._clock() > item.expires:
            self._schedule(key, name, label)
        return item.value

    def put(self, key: str, value: PromptVersion) -> None:
        with self._lock:
            self._items[key] = _Item(value, self._clock() + self._ttl)

    def prefill(self, versions: dict[str, PromptVersion], label: str | None = None) -> None:
        """Pre-fetch on start (what the peers recommend), from versions read in bulk."""
        label = label or self._default
        for name, value in versions.items():
            self.put(f"{name}-label:{label}", value)

    def _schedule(self, key: str, name: str, label: str) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
        self._tasks.put((key, name, label))

    def _refresh_loop(self) -> None:
        while (task := self._tasks.get()) is not None:
            key, name, label = task
            try:
                self.put(key, self._fetch(name, label))
                self.refreshes += 1
            except Exception:  # the peers log and keep serving the stale item
                pass
            finally:
                with self._lock:
                    self._refreshing.discard(key)

    def __len__(self) -> int:
        return len(self._items)

    def close(self) -> None:
        self._tasks.put(None)
        self._worker.join(timeout=5)


def redis_fetch(conn: redis.Redis, keys: Keyspace) -> Callable[[str, str], PromptVersion]:
    """``fetch(name, label)`` for :class:`TtlCache`: label then version, two round trips."""

    def fetch(name: str, label: str) -> PromptVersion:
        raw = conn.get(keys.label(name, label))
        if raw is None:
            if not conn.exists(keys.prompt(name)):
                raise PromptNotFoundError(name)
            raise LabelNotFoundError(name, label)
        number = int(raw)
        fields = cast(dict[bytes, bytes], conn.hgetall(keys.version(name, number)))
        return version_from_hash(name, number, fields)

    return fetch


def open_client_side_cache(url: str) -> tuple[redis.Redis | None, str]:
    """A redis-py client with client-side caching on (RESP3), or ``None`` and why it is not available.

    redis-py checks the server when it connects: its ``CacheProxyConnection`` refuses servers older
    than its ``MIN_ALLOWED_VERSION`` (7.4.0 in redis-py 5.1 to 8.x), although Redis itself has had
    ``CLIENT TRACKING`` since 6.0.
    """
    version = metadata.version("redis")
    try:
        from redis.cache import CacheConfig
    except ImportError:
        return None, f"redis-py {version} has no client-side caching (it arrived in redis-py 5.1)"
    conn: redis.Redis | None = None
    try:
        conn = redis.Redis.from_url(url, protocol=3, cache_config=CacheConfig())
        conn.ping()  # connects; the version check happens here
    except (redis.RedisError, ValueError) as exc:
        if conn is not None:
            conn.close()
        minimum = _csc_minimum()
        where = f" (redis-py requires server >= {minimum})" if minimum else ""
        return None, f"redis-py {version} refused: {exc}{where}"
    return conn, f"redis-py {version}, RESP3, CacheConfig() defaults"


def _csc_minimum() -> str | None:
    try:
        from redis.connection import CacheProxyConnection
    except ImportError:
        return None
    return str(getattr(CacheProxyConnection, "MIN_ALLOWED_VERSION", "")) or None


class ClientSideCacheRead(RedisLabelRead):
    """:class:`RedisLabelRead` on a redis-py client with client-side caching: the label ``GET`` is
    answered from redis-py's local cache until Redis invalidates the key."""

    def cache_stats(self) -> dict[str, Any]:
        cache = self._redis.get_cache()
        return {"entries": cache.size if cache is not None else None}
