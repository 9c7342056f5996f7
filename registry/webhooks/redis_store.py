"""The webhooks of a Redis registry: keys under ``{ns}:wh:``, in the registry's hash tag.

==================================  ======  ====================================================
key                                 type    what
==================================  ======  ====================================================
``{ns}:wh:endpoints``               hash    ``endpoint id -> endpoint`` (JSON)
``{ns}:wh:cursor:<id>``             string  the endpoint's cursor (JSON)
``{ns}:wh:dead:<id>``               stream  its dead letters (field ``d``: JSON), ~1,000 kept
``{ns}:wh:lease``                   string  the delivery worker's id, with a TTL (``PX``)
==================================  ======  ====================================================

The lease is taken with ``SET NX PX`` and renewed compare-and-set: ``WATCH`` it, ``GET`` it, and
only if it is still ours ``MULTI`` / ``SET PX`` / ``EXEC``. A cursor moves the same way, in a
transaction watching the lease (and the endpoints, so a removed endpoint gets no cursor back). No
script: the writer role runs no EVAL. The commands sent: :data:`COMMANDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from redis.exceptions import WatchError

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.redis.errors import map_redis_errors
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.webhooks.errors import LeaseLostError, WebhookNotFoundError
from promptreg.registry.webhooks.models import (
    MAX_DEAD_LETTERS,
    MAX_ENDPOINTS,
    Cursor,
    DeadLetter,
    Lease,
    WebhookEndpoint,
    parse_record,
)

COMMANDS: Final = (
    "hset", "hdel", "hgetall", "hexists", "hlen",  # {ns}:wh:endpoints
    "get", "set", "del", "pttl",  # cursors and the lease (SET ... NX PX, SET ... PX)
    "xadd", "xrevrange",  # dead letters (XADD ... MAXLEN ~ 1000)
    "watch", "unwatch", "multi", "exec",  # compare-and-set of the lease and the cursors
)  # fmt: skip
"""Every Redis command this store sends (the writer role needs them on ``{ns}:wh:*``)."""
_ATTEMPTS = 5  # a transaction aborted by a concurrent change (a lease renewal) is tried again


@dataclass(frozen=True, slots=True)
class WebhookKeys:
    """The webhooks' keys of one namespace, built in one place (as :class:`~promptreg.registry.redis.keys.Keyspace`)."""

    namespace: str

    @property
    def prefix(self) -> str:
        """``{ns}:wh:``: every webhooks key starts with it (in the registry's hash tag)."""
        return f"{Keyspace(self.namespace).prefix}:wh:"

    @property
    def endpoints(self) -> str:
        """The hash of endpoints."""
        return f"{self.prefix}endpoints"

    @property
    def lease(self) -> str:
        """The delivery worker's lease."""
        return f"{self.prefix}lease"

    def cursor(self, endpoint_id: str) -> str:
        """One endpoint's cursor."""
        return f"{self.prefix}cursor:{endpoint_id}"

    def dead(self, endpoint_id: str) -> str:
        """One endpoint's dead letters."""
        return f"{self.prefix}dead:{endpoint_id}"


class RedisWebhookStore:
    """The :class:`~promptreg.registry.webhooks.store.WebhookStore` of a Redis registry, on its client."""

    def __init__(self, client: Any, namespace: str) -> None:
        self.redis = client
        self.keys = WebhookKeys(namespace)

    @contextmanager
    def _translate(self) -> Iterator[None]:
        with map_redis_errors():
            yield

    def add_endpoint(self, endpoint: WebhookEndpoint, cursor: Cursor) -> None:
        with self._translate():
            if int(self.redis.hlen(self.keys.endpoints)) >= MAX_ENDPOINTS:
                raise InvalidInputError(f"this registry has {MAX_ENDPOINTS} webhook endpoints, the most it may have")
            pipe = self.redis.pipeline(transaction=True)
            pipe.hset(self.keys.endpoints, endpoint.id, endpoint.model_dump_json())
            pipe.set(self.keys.cursor(endpoint.id), cursor.model_dump_json())
            pipe.execute()

    def remove_endpoint(self, endpoint_id: str) -> None:
        with self._translate():
            pipe = self.redis.pipeline(transaction=True)
            pipe.hdel(self.keys.endpoints, endpoint_id)
            pipe.delete(self.keys.cursor(endpoint_id), self.keys.dead(endpoint_id))
            removed, _deleted = pipe.execute()
        if not removed:
            raise WebhookNotFoundError(endpoint_id)

    def endpoints(self) -> list[WebhookEndpoint]:
        with self._translate():
            raw = self.redis.hgetall(self.keys.endpoints)
        found = [parse_record(WebhookEndpoint, value, f"{self.keys.endpoints} {key!r}") for key, value in raw.items()]
        return sorted(found, key=lambda e: (e.created_at, e.id))

    def cursor(self, endpoint_id: str) -> Cursor | None:
        with self._translate():
            raw = self.redis.get(self.keys.cursor(endpoint_id))
        return None if raw is None else parse_record(Cursor, raw, self.keys.cursor(endpoint_id))

    def save_cursor(self, endpoint_id: str, cursor: Cursor, holder: str) -> None:
        self._fenced(
            holder, endpoint_id, lambda pipe: pipe.set(self.keys.cursor(endpoint_id), cursor.model_dump_json())
        )

    def add_dead_letter(self, letter: DeadLetter, cursor: Cursor, holder: str) -> None:
        def queue(pipe: Any) -> None:
            pipe.xadd(self.keys.dead(letter.endpoint), {"d": letter.model_dump_json()}, maxlen=MAX_DEAD_LETTERS,
                      approximate=True)  # fmt: skip
            pipe.set(self.keys.cursor(letter.endpoint), cursor.model_dump_json())

        self._fenced(holder, letter.endpoint, queue)

    def dead_letters(self, endpoint_id: str | None = None, limit: int = 100) -> list[DeadLetter]:
        ids = [endpoint_id] if endpoint_id is not None else [e.id for e in self.endpoints()]
        found: list[DeadLetter] = []
        with self._translate():
            for one in ids:
                for _entry_id, fields in self.redis.xrevrange(self.keys.dead(one), count=limit):
                    found.append(parse_record(DeadLetter, fields.get(b"d", b""), self.keys.dead(one)))
        return sorted(found, key=lambda letter: letter.at, reverse=True)[:limit]

    def acquire_lease(self, holder: str, ttl: float) -> bool:
        ms = max(1, int(ttl * 1000))
        with self._translate():
            if self.redis.set(self.keys.lease, holder, nx=True, px=ms):
                return True
            for _ in range(_ATTEMPTS):
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self.keys.lease)
                        if pipe.get(self.keys.lease) != holder.encode():
                            return False  # another worker's, or it expired just now: the next try takes it
                        pipe.multi()
                        pipe.set(self.keys.lease, holder, px=ms)
                        pipe.execute()
                        return True
                    except WatchError:
                        continue
        return False

    def release_lease(self, holder: str) -> None:
        with self._translate(), self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(self.keys.lease)
                if pipe.get(self.keys.lease) == holder.encode():
                    pipe.multi()
                    pipe.delete(self.keys.lease)
                    pipe.execute()
            except WatchError:
                pass  # it changed hands meanwhile: not ours to release

    def lease(self) -> Lease | None:
        with self._translate():
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.keys.lease)
            pipe.pttl(self.keys.lease)
            holder, ttl_ms = pipe.execute()
        if holder is None or ttl_ms is None or ttl_ms < 0:
            return None
        expires = datetime.now(UTC) + timedelta(milliseconds=int(ttl_ms))
        return Lease(holder=holder.decode("utf-8", "replace")[:256], expires_at=expires)

    def close(self) -> None:
        """Nothing to release: the connections are the registry's."""

    def _fenced(self, holder: str, endpoint_id: str, queue: Callable[[Any], object]) -> None:
        """Run ``queue``'s commands in one transaction, only while ``holder`` holds the lease and the
        endpoint exists."""
        with self._translate():
            for _ in range(_ATTEMPTS):
                with self.redis.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(self.keys.lease, self.keys.endpoints)
                        if pipe.get(self.keys.lease) != holder.encode():
                            raise LeaseLostError(holder)
                        if not pipe.hexists(self.keys.endpoints, endpoint_id):
                            raise WebhookNotFoundError(endpoint_id)
                        pipe.multi()
                        queue(pipe)
                        pipe.execute()
                        return
                    except WatchError:
                        continue
        raise LeaseLostError(holder)  # the lease or the endpoints kept changing: let the worker re-check
