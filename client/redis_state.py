"""Reading the registry's state from Redis: labels at one revision, and immutable versions.

The label state is read inside ``MULTI``/``EXEC`` so it is one consistent cut at one revision. A
transaction can only read keys it names, and the keys depend on the prompt and label sets, so the
read is repeated with the sets the previous round found until the sets it asked for are the sets it
got (one round when the client already knows the prompts, three from cold). Versions never change,
so they are fetched afterwards, outside the transaction, and only those not cached yet.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis

from registry.errors import PromptRegistryError, RegistryCorruptError
from registry.keys import Keyspace
from registry.models import PromptVersion
from registry.redis_store import version_from_hash
from registry.validation import LATEST

MAX_ROUNDS = 8
"""Rounds of :func:`read_state` before giving up (only when prompts or labels are created non-stop)."""


class StateReadError(PromptRegistryError):
    """The prompt and label sets kept changing while the state was read; the feed retries later."""


def read_rev(client: redis.Redis, keys: Keyspace) -> int:
    """The registry's current revision (0 if nothing was ever written)."""
    raw: Any = client.get(keys.rev)
    return int(raw or 0)


def read_state(
    client: redis.Redis, keys: Keyspace, hint: Mapping[str, Iterable[str]] | None = None
) -> tuple[int, dict[str, dict[str, int]]]:
    """``(rev, {name: {label: number}})``: every prompt's labels and ``latest`` at one revision.

    ``hint`` is what the caller believes the prompts and their labels are (the cache's current
    pointers); a correct hint makes this one round trip. Raises redis-py errors on I/O failure,
    :class:`StateReadError` if the sets never settle, :class:`~registry.RegistryCorruptError` for
    unreadable values.
    """
    wanted: dict[str, list[str]] = {
        name: sorted(label for label in labels if label != LATEST) for name, labels in (hint or {}).items()
    }
    for _ in range(MAX_ROUNDS):
        names = sorted(wanted)
        pipe: Any = client.pipeline(transaction=True)
        pipe.get(keys.rev)
        pipe.smembers(keys.prompts)
        for name in names:
            pipe.smembers(keys.labels(name))
            pipe.hget(keys.prompt(name), "latest")
            for label in wanted[name]:
                pipe.get(keys.label(name, label))
        results = iter(pipe.execute())
        try:
            rev = int(next(results) or 0)
            found_names = {raw.decode("utf-8") for raw in next(results)}
            settled = found_names == set(names)
            pointers: dict[str, dict[str, int]] = {}
            found: dict[str, list[str]] = {}
            for name in names:
                label_set = sorted(raw.decode("utf-8") for raw in next(results))
                latest = int(next(results) or 0)
                values = [next(results) for _label in wanted[name]]
                found[name] = label_set
                settled = settled and label_set == wanted[name]
                labels = {label: int(value) for label, value in zip(wanted[name], values, strict=True) if value}
                if latest > 0:
                    labels[LATEST] = latest
                pointers[name] = labels
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryCorruptError(f"unreadable registry state in redis: {exc!r}") from exc
        if settled:
            return rev, pointers
        wanted = {name: found.get(name, []) for name in found_names}
    raise StateReadError(f"prompts or labels kept changing during {MAX_ROUNDS} reads of the state")


def fetch_versions(
    client: redis.Redis, keys: Keyspace, pairs: Iterable[tuple[str, int]]
) -> dict[tuple[str, int], PromptVersion | None]:
    """Read versions by ``(name, number)`` in one pipeline; ``None`` for a version that does not exist.

    Raises redis-py errors on I/O failure and :class:`~registry.RegistryCorruptError` for a hash that
    is not a version.
    """
    wanted = sorted(set(pairs))
    if not wanted:
        return {}
    pipe: Any = client.pipeline(transaction=False)
    for name, number in wanted:
        pipe.hgetall(keys.version(name, number))
    return {
        (name, number): version_from_hash(name, number, fields) if fields else None
        for (name, number), fields in zip(wanted, pipe.execute(), strict=True)
    }
