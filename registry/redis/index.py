"""The Redis index (``{ns}:ix:*``, see :mod:`promptreg.registry.redis.keys`): building it for a 0.1.0 registry.

The write scripts keep the index equal to the per-prompt keys in the same script. A registry written
by 0.1.0 has none; :func:`build_index` (``PromptRegistry.migrate()``, ``promptreg migrate``) builds
it in batches of :data:`BATCH` prompts, each batch one short ``index_prompts`` script that rebuilds
those prompts' entries from their own keys, so no single command blocks the server for long and
writes made meanwhile (by scripts that keep the index) are never overwritten with older values. The
``{ns}:ix:format`` marker is set last: a client trusts the index only once it is complete.

Run it after every writer runs this version: a 0.1.0 writer does not keep the index, so writes it
makes after the migration are missing from it (run ``promptreg migrate --rebuild`` to repair).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.migration import MigrationResult
from promptreg.registry.redis.calls import IndexPrompts
from promptreg.registry.redis.keys import Keyspace

INDEX_FORMAT = 1
"""The value of ``{ns}:ix:format`` this version writes and reads."""
BATCH = 200
"""Prompts per ``index_prompts`` script: ~1 ms of server time each at 2 labels per prompt."""
SCAN_COUNT = 1000
"""``COUNT`` of each ``SSCAN`` / ``HSCAN`` step: bounded work per command at any size."""
MAX_RETRIES = 8


def index_format(client: redis.Redis, keys: Keyspace) -> int | None:
    """The index format the registry holds (``None``: no complete index, a 0.1.0 registry)."""
    raw: Any = client.get(keys.index_format)
    return None if raw is None else int(raw)


def build_index(
    client: redis.Redis, keys: Keyspace, script: Callable[..., Any], *, rebuild: bool = False
) -> MigrationResult:
    """Build the index of every prompt; idempotent. Without ``rebuild``, a complete index is left as is.

    Raises redis-py errors (the caller translates them) and :class:`~promptreg.RegistryCorruptError`
    when a prompt's label set keeps changing for :data:`MAX_RETRIES` attempts.
    """
    found = index_format(client, keys)
    if found is not None and not rebuild:
        return MigrationResult(False, 0, f"the index is already there (format {found}): nothing to do")
    if not client.exists(keys.rev) and not client.exists(keys.prompts):
        return MigrationResult(False, 0, "the registry is empty: nothing to migrate")
    done = 0
    batch: list[str] = []
    for raw in client.sscan_iter(keys.prompts, count=SCAN_COUNT):
        batch.append(raw.decode("utf-8"))
        if len(batch) >= BATCH:
            done += _index_batch(client, keys, script, batch)
            batch = []
    if batch:
        done += _index_batch(client, keys, script, batch)
    client.set(keys.index_format, INDEX_FORMAT)
    return MigrationResult(True, done, f"indexed {done} prompts (index format {INDEX_FORMAT})")


def _index_batch(client: redis.Redis, keys: Keyspace, script: Callable[..., Any], names: list[str]) -> int:
    pending = names
    for _ in range(MAX_RETRIES):
        pipe: Any = client.pipeline(transaction=False)
        pipe.smembers(keys.index_labels)
        for name in pending:
            pipe.smembers(keys.labels(name))
        indexed, *label_sets = pipe.execute()
        labels = {
            name: sorted(raw.decode("utf-8") for raw in found) for name, found in zip(pending, label_sets, strict=True)
        }
        index_labels = sorted({raw.decode("utf-8") for raw in indexed}.union(*labels.values()))
        call = IndexPrompts(keys, labels, index_labels)
        pending = call.changed(script(keys=call.script_keys(), args=call.script_args(), client=client))
        if not pending:
            return len(names)
    raise RegistryCorruptError(f"the labels of {pending[:5]} kept changing while they were indexed")
