"""The Redis registry of the start-up benchmark: the data of :mod:`benchmarks._startup_data` written
with pipelines in the exact layout of :mod:`promptreg.registry.redis.keys`.

Each version's hash has the fields ``add_version.lua`` writes (built from the same ARGV,
:func:`~promptreg.registry.redis.chat.content_args`), with its packed record beside it
(:func:`~promptreg.registry.redis.packed.pack_fields`); then the label keys and label sets, and the
index (``{ns}:ix:*``, its marker last). Writing 100k prompts through the scripts would take minutes
and is not what is measured. No audit stream: a start-up reads only its newest entry.
"""

from __future__ import annotations

from typing import Any

import msgpack
import redis

from benchmarks._startup_data import LABELS, VERSIONS, VersionData, generate, prompt_name
from promptreg.registry.redis.chat import content_args
from promptreg.registry.redis.index import INDEX_FORMAT
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.packed import pack_fields

CHUNK = 1000
"""Prompts per pipeline, keys per ``UNLINK``."""


def _version_hash(v: VersionData) -> dict[str, Any]:
    """The fields ``add_version.lua`` writes for ``v`` (from the ARGV ``content_args`` builds)."""
    inputs, messages, config, placeholders = content_args(v.messages, v.config, v.variables)
    fields = {"prompt_text": v.prompt_text, "created_at": v.created_at, "metadata": msgpack.packb(v.metadata),
              "sha256": v.sha256, "inputs": inputs}  # fmt: skip
    if messages != "":
        fields.update(type="chat", messages=messages, placeholders=placeholders)
    if config != "":
        fields["config"] = config
    if v.author is not None:
        fields["author"] = v.author
    if v.message is not None:
        fields["message"] = v.message
    return fields


def populate(url: str, namespace: str, prompts: int) -> None:
    """Write ``prompts`` prompts (module docstring): version hashes and packed records, labels, index."""
    keys = Keyspace(namespace)
    with redis.Redis.from_url(url) as conn:
        pipe: Any = conn.pipeline(transaction=False)
        names: list[str] = []
        for prompt in generate(prompts):
            name = prompt.name
            names.append(name)
            pipe.hset(keys.prompt(name), mapping={"created_at": prompt.created_at, "latest": VERSIONS})
            for v in prompt.versions:
                pipe.hset(keys.version(name, v.number), mapping=_version_hash(v))
                record = pack_fields(v.prompt_text, v.created_at, v.author, v.message, v.metadata, v.messages, v.config)
                pipe.set(keys.packed(name, v.number), record)
            for label, number in LABELS.items():
                pipe.set(keys.label(name, label), number)
            pipe.sadd(keys.labels(name), *LABELS)
            if len(names) == CHUNK:
                _send_with_index(pipe, keys, names)
                names = []
        _send_with_index(pipe, keys, names)
        conn.sadd(keys.index_labels, *LABELS)
        conn.set(keys.rev, prompts * (1 + VERSIONS + len(LABELS)))
        conn.set(keys.index_format, INDEX_FORMAT)


def _send_with_index(pipe: Any, keys: Keyspace, names: list[str]) -> None:
    """Add the index entries of ``names`` to the pipeline, and send it."""
    if names:
        pipe.sadd(keys.prompts, *names)
        pipe.hset(keys.index_latest, mapping=dict.fromkeys(names, VERSIONS))
        for label, number in LABELS.items():
            pipe.hset(keys.index_label(label), mapping=dict.fromkeys(names, number))
    pipe.execute()


def unlink_packed(url: str, namespace: str, prompts: int) -> int:
    """Delete every packed record (``UNLINK``, :data:`CHUNK` keys a command); returns how many."""
    keys = Keyspace(namespace)
    records = [keys.packed(prompt_name(i), n) for i in range(prompts) for n in range(1, VERSIONS + 1)]
    with redis.Redis.from_url(url) as conn:
        pipe: Any = conn.pipeline(transaction=False)
        for start in range(0, len(records), CHUNK):
            pipe.unlink(*records[start : start + CHUNK])
        return sum(pipe.execute())
