"""Reading the client's state from the index (``{ns}:ix:*``): O(labels) commands, bounded chunks.

1. One short ``MULTI``/``EXEC``: the revision, the newest audit entries (the fingerprint, and the
   write ids that place the cache in the registry's history), the last write's id, whether the
   caller's anchor entry is still there, the index format marker and the label names in use.
2. Then the set of prompt names in steps of ``SSCAN ... COUNT`` :data:`~promptreg.client.redis.state.CHUNK`,
   each page's entries of the index hashes by ``HMGET`` in the pipeline of the next step (a subset
   client: ``HSCAN ... MATCH`` of its prefixes, ``HMGET`` / ``SMISMEMBER`` of its names): no single
   command or transaction does O(prompts) work, so a 100k-prompt start-up never stalls the server
   for other clients.
3. Then the revision again. Unchanged: the chunks are exactly the state at that revision. Changed (a
   write landed during the read, so the chunks mix values from before and after it): every write
   since the first revision is read from the audit stream ``{ns}:log`` (one entry per write, with
   its revision) and replayed onto the chunks. Each write sets a value absolutely (a label's
   version, ``latest``, a new prompt), so the result is exactly the registry's state at the last
   of them, and that revision is returned (:func:`catch_up`). The client never serves the mixed
   read, in which a label could be seen at a later version and then, while the backlog is applied,
   at an earlier one. Only when the stream cannot cover the writes (trimmed during a flood) is the
   index read again, up to :data:`ATTEMPTS` times; after that the mixed state is returned with the
   *first* revision and the change messages of the backlog complete it.

A registry without the ``{ns}:ix:format`` marker (written by 0.1.0, not migrated) has no complete
index: :func:`read_indexed` returns ``None`` and the caller reads it the old way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from sys import intern
from typing import Any

import redis

from promptreg.client.cache import StatePointers, pointer_change, with_change
from promptreg.client.pointers import Rollouts, share_equal_maps
from promptreg.client.redis.state import (
    CHUNK,
    HISTORY_WINDOW,
    LogHead,
    RegistryState,
    held_connection,
    parse_log_head,
    read_registry,
    streams,
    write_history,
)
from promptreg.client.subset import PromptSubset
from promptreg.registry.errors import InvalidInputError, RegistryCorruptError
from promptreg.registry.redis.governance import overlay
from promptreg.registry.redis.index import INDEX_FORMAT
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.redis.rollouts import parse_rollout_index
from promptreg.registry.validation import LATEST
from promptreg.registry.wire import ROLLOUT_OPERATIONS, ChangeMessage

ATTEMPTS = 3
"""Reads of the index before a read that overlapped writes is taken (and the writes replayed)."""


def read_indexed(
    client: redis.Redis, keys: Keyspace, anchor: bytes | None = None, subset: PromptSubset | None = None
) -> RegistryState | None:
    """The registry's state from its index, or ``None`` when it has no complete index (0.1.0 layout).

    ``anchor`` and the returned :class:`~promptreg.client.redis.state.RegistryState` are as in
    :func:`~promptreg.client.redis.state.read_registry`; ``subset`` limits the read to the prompts it holds.
    Raises redis-py errors on I/O failure and :class:`~promptreg.RegistryCorruptError` for
    unreadable values or an index format this version does not know.
    """
    for attempt in range(ATTEMPTS):
        pipe: Any = client.pipeline(transaction=True)
        pipe.get(keys.rev)
        pipe.xrevrange(keys.log, count=HISTORY_WINDOW)
        pipe.get(keys.revid)
        if anchor is not None:
            pipe.xrange(keys.log, min=anchor, max=anchor, count=1)
        pipe.get(keys.index_format)
        pipe.smembers(keys.index_labels)
        pipe.hgetall(keys.index_rollouts)
        results = iter(pipe.execute())
        try:
            rev = int(next(results) or 0)
            window = next(results)
            head = parse_log_head(window)
            history = write_history(rev, next(results), window)
            anchor_found = anchor is not None and bool(next(results))
            marker = next(results)
            labels = sorted(raw.decode("utf-8") for raw in next(results))
            rollouts = read_rollouts(next(results))
            if marker is None:
                return None
            if int(marker) != INDEX_FORMAT:
                raise RegistryCorruptError(
                    f"the registry's index has format {int(marker)}, this promptreg reads format {INDEX_FORMAT}"
                )
            pointers = _read_pointers(client, keys, labels, subset)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RegistryCorruptError(f"unreadable registry index in redis: {exc!r}") from exc
        final: Any = client.pipeline(transaction=True)
        settled, protected, governed = final.get(keys.rev).hgetall(keys.protected).hgetall(keys.governed).execute()
        if protected:  # protected labels point where {ns}:gov:ix says (registry/redis/governance.py)
            overlay(pointers, protected, governed)
            rollouts = without_protected(rollouts, protected)
        if int(settled or 0) == rev:
            return RegistryState(rev, StatePointers(pointers, history, rollouts), head, anchor_found)
        caught = catch_up(client, keys, rev, pointers, subset)
        if caught is not None:
            if protected:  # read again: the writes replayed may have moved a protected label
                again: Any = client.pipeline(transaction=True)
                protected, governed = again.hgetall(keys.protected).hgetall(keys.governed).execute()
                overlay(pointers, protected, governed)
                caught = (caught[0], caught[1], without_protected(caught[2], protected))
            caught_head = caught[1]
            if caught_head is not None and caught_head.write_id is not None:
                history[caught[0]] = caught_head.write_id
            state = StatePointers(pointers, history, caught[2])
            return RegistryState(caught[0], state, caught_head, anchor_found)
        if attempt + 1 == ATTEMPTS:
            return RegistryState(rev, StatePointers(pointers, history, rollouts), head, anchor_found)
    raise AssertionError("unreachable")  # the last attempt always returns


CATCH_UP_MAX = 4096
"""The most writes during one state read that :func:`catch_up` replays from the audit stream."""


def catch_up(
    client: redis.Redis,
    keys: Keyspace,
    rev: int,
    pointers: dict[str, dict[str, int]],
    subset: PromptSubset | None = None,
) -> tuple[int, LogHead | None, Rollouts] | None:
    """Replay onto ``pointers`` (read while writes landed) every write after revision ``rev``.

    Reads the newest entries of ``{ns}:log`` with the revision and the rollouts, in one transaction;
    returns ``(the revision reached, its audit entry, the rollouts then)``, or ``None`` when the stream
    does not hold exactly one entry per write since ``rev`` (trimmed, or the registry went back): then
    the caller reads again. ``pointers`` must be the caller's own (it is changed in place); with
    ``subset`` only its prompts are replayed. Raises :class:`~promptreg.RegistryCorruptError` for an
    unreadable entry and redis-py errors on I/O failure.
    """
    count = 64
    while True:
        pipe: Any = client.pipeline(transaction=True)
        now_raw, raw, rollouts_raw = (
            pipe.get(keys.rev).xrevrange(keys.log, count=count).hgetall(keys.index_rollouts).execute()
        )
        now = int(now_raw or 0)
        writes = now - rev
        if writes <= 0 or writes > CATCH_UP_MAX:
            return None
        if len(raw) < writes and (len(raw) < count or count >= CATCH_UP_MAX):
            return None  # the stream is shorter than the writes it should hold
        if len(raw) >= writes:
            break
        count = min(count * 4, CATCH_UP_MAX)
    entries = [parse_log_head([item]) for item in raw[:writes]]  # newest first
    if [entry.rev if entry else None for entry in entries] != list(range(now, rev, -1)):
        return None
    for entry in reversed(entries):
        assert entry is not None  # checked with the revisions above
        _replay(pointers, entry, subset)
    return now, entries[0], read_rollouts(rollouts_raw)


def without_protected(rollouts: Rollouts, protected: dict[bytes, bytes]) -> Rollouts:
    """``rollouts`` without those on protected labels: none can run there (the scripts refuse it), so
    an entry the writer role wrote into ``{ns}:ix:rollouts`` is not served."""
    if not rollouts:
        return rollouts
    kept: Rollouts = {}
    for name, labels in rollouts.items():
        left = {label: split for label, split in labels.items() if f"{name}:{label}".encode() not in protected}
        if left:
            kept[name] = left
    return kept


def read_rollouts(raw: dict[bytes, bytes]) -> Rollouts:
    """The rollouts of ``{ns}:ix:rollouts`` as :data:`~promptreg.client.pointers.Rollouts`."""
    rollouts: Rollouts = {}
    for name, label, candidate, points in parse_rollout_index(raw):
        rollouts.setdefault(intern(name), {})[intern(label)] = (candidate, points)
    return rollouts


def _replay(pointers: dict[str, dict[str, int]], entry: LogHead, subset: PromptSubset | None) -> None:
    """Apply one audit entry to ``pointers`` by the rule a change message follows (:func:`pointer_change`)."""
    if entry.prompt is None or entry.action is None or entry.rev is None:
        raise RegistryCorruptError(f"audit entry {entry.entry_id!r} names no prompt or action")
    if subset is not None and entry.prompt not in subset:
        return
    if entry.action in ROLLOUT_OPERATIONS and entry.action != "promote_rollout":
        return  # the label keeps its version (the rollouts are read at the revision reached); a
        # promotion is a label move to its version, which pointer_change makes as for set_label
    change = ChangeMessage(entry.rev, entry.action, entry.prompt, entry.label, entry.version, None, None, 0.0)
    known = pointers.get(entry.prompt)
    try:
        label, number = pointer_change(change, known)
    except InvalidInputError as exc:
        raise RegistryCorruptError(f"audit entry {entry.entry_id!r} cannot be replayed: {exc}") from exc
    pointers[entry.prompt] = with_change(known, label, number)


def _read_pointers(
    client: redis.Redis, keys: Keyspace, labels: list[str], subset: PromptSubset | None
) -> dict[str, dict[str, int]]:
    hashes = [keys.index_latest, *(keys.index_label(label) for label in labels)]
    if subset is None:
        return _scan_names(client, keys.prompts, hashes, [LATEST, *labels])
    names: set[str] = set()
    entries: list[dict[str, int]] = [{} for _ in hashes]
    for prefix in subset.prefixes:
        _scan(client, keys.prompts, hashes, prefix + "*", names, entries)
    _by_name(client, keys.prompts, hashes, sorted(subset.names), names, entries)
    pointers: dict[str, dict[str, int]] = {name: {} for name in names}
    for label, found in zip((LATEST, *labels), entries, strict=True):
        for name, number in found.items():
            labels_of = pointers.get(name)
            if labels_of is None:  # created during the read: the change messages complete it
                labels_of = pointers[name] = {}
            labels_of[label] = number
    return pointers


def _scan_names(client: redis.Redis, names_key: str, hashes: list[str], labels: list[str]) -> dict[str, dict[str, int]]:
    """Every prompt's pointers: ``SSCAN`` the name set, ``HMGET`` each index hash for each page of names.

    The ``HMGET`` s of a page go in the round trip of the next ``SSCAN`` step, and each name is
    decoded once: reading the hashes by name costs the client a quarter of ``HSCAN`` ing them (which
    returns, and decodes, every name once per hash). Each round trip is sent as soon as the previous
    one's reply is in, before that reply's values are turned into pointers, so the server works
    while this thread does. On one server the commands are packed by hand and sent on one
    connection (:func:`_exchanger`): redis-py's packer checks every argument in Python, which was a
    third of a 100k-prompt index read.
    """
    pointers: dict[str, dict[str, int]] = {}
    shared: dict[tuple[tuple[str, int], ...], dict[str, int]] = {}
    with _exchanger(client, names_key, hashes) as (send, receive):
        in_flight = send(0, [])
        page: list[str] = []  # the names whose HMGETs are in flight
        while in_flight:
            step, columns = receive()
            cursor, raw_page = None, []
            if step is not None:
                following, items = step
                raw_page = list(items)
                cursor = int(following) or None
            in_flight = send(cursor, raw_page) if cursor is not None or raw_page else False
            for label, column in zip(labels if page else (), columns, strict=True):
                if None in column:  # a prompt without this label (or without versions)
                    for name, value in zip(page, column, strict=True):
                        if value is not None:
                            pointers[name][label] = int(value)
                else:
                    for name, number in zip(page, map(int, column), strict=True):
                        pointers[name][label] = number
            share_equal_maps(pointers, page, shared)
            page = [intern(raw.decode("utf-8")) for raw in raw_page]  # interned: the lookup view's keys
            # A name SSCAN returns twice gets a fresh dict: the HMGETs of its second page fill it again.
            pointers.update({name: {} for name in page})
    return pointers


Send = Callable[[int | None, list[bytes]], bool]
"""Sends one round trip of :func:`_scan_names`: ``SSCAN`` from the cursor (``None``: none) and the
``HMGET`` s of the names; ``True``."""
Receive = Callable[[], tuple[Any, list[Any]]]
"""Reads the replies of the round trip sent last: ``(SSCAN reply or None, HMGET replies)``."""


@contextmanager
def _exchanger(client: redis.Redis, names_key: str, hashes: list[str]) -> Iterator[tuple[Send, Receive]]:
    """The round trips of one index read: pipelines on a cluster (sent when received); on one server,
    commands packed by hand on one connection held for the read (dropped, not reused, if anything
    fails mid-reply)."""
    sent: list[tuple[int | None, list[bytes]]] = []
    if not streams(client):  # a cluster client: plain pipelines

        def send_later(cursor: int | None, names: list[bytes]) -> bool:
            sent.append((cursor, names))
            return True

        def execute() -> tuple[Any, list[Any]]:
            cursor, names = sent.pop()
            pipe: Any = client.pipeline(transaction=False)
            if cursor is not None:
                pipe.sscan(names_key, cursor, count=CHUNK)
            for key in hashes if names else ():
                pipe.hmget(key, names)
            results = pipe.execute()
            return (results.pop(0) if cursor is not None else None), results

        yield send_later, execute
        return
    heads = [b"$%d\r\n%b\r\n" % (len(key), key) for key in (k.encode() for k in hashes)]

    with held_connection(client) as conn:

        def send(cursor: int | None, names: list[bytes]) -> bool:
            packed: list[bytes] = []
            if cursor is not None:
                packed.extend(conn.pack_command("SSCAN", names_key, cursor, "COUNT", CHUNK))
            if names:
                fields = b"".join([b"$%d\r\n%b\r\n" % (len(name), name) for name in names])
                packed.extend(b"*%d\r\n$5\r\nHMGET\r\n%b%b" % (len(names) + 2, head, fields) for head in heads)
            conn.send_packed_command(packed)
            sent.append((cursor, names))
            return True

        def receive() -> tuple[Any, list[Any]]:
            cursor, names = sent.pop()
            step = conn.read_response() if cursor is not None else None
            return step, [conn.read_response() for _ in heads] if names else []

        yield send, receive


def _scan(
    client: redis.Redis,
    names_key: str,
    hashes: list[str],
    match: str | None,
    names: set[str],
    entries: list[dict[str, int]],
) -> None:
    """``SSCAN`` the name set and ``HSCAN`` every hash, one step of each per pipeline."""
    cursors: dict[int, int] = dict.fromkeys(range(len(hashes) + 1), 0)  # 0: the name set, i+1: hashes[i]
    while cursors:
        pipe: Any = client.pipeline(transaction=False)
        for i, cursor in cursors.items():
            if i == 0:
                pipe.sscan(names_key, cursor, match=match, count=CHUNK)
            else:
                pipe.hscan(hashes[i - 1], cursor, match=match, count=CHUNK)
        following: dict[int, int] = {}
        for i, (cursor, items) in zip(list(cursors), pipe.execute(), strict=True):
            if i == 0:
                names.update(raw.decode("utf-8") for raw in items)
            else:
                entries[i - 1].update({raw.decode("utf-8"): int(value) for raw, value in items.items()})
            if int(cursor):
                following[i] = int(cursor)
        cursors = following


def _by_name(
    client: redis.Redis,
    names_key: str,
    hashes: list[str],
    wanted: list[str],
    names: set[str],
    entries: list[dict[str, int]],
) -> None:
    """``SMISMEMBER`` and ``HMGET`` the exact names, :data:`CHUNK` names per command."""
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        pipe: Any = client.pipeline(transaction=False)
        pipe.smismember(names_key, chunk)
        for key in hashes:
            pipe.hmget(key, chunk)
        exists, *values = pipe.execute()
        names.update(name for name, there in zip(chunk, exists, strict=True) if there)
        for found, row in zip(entries, values, strict=True):
            found.update({name: int(value) for name, value in zip(chunk, row, strict=True) if value is not None})


def read_client_state(
    client: redis.Redis,
    keys: Keyspace,
    hint: dict[str, dict[str, int]],
    anchor: bytes | None,
    subset: PromptSubset | None,
) -> tuple[RegistryState, bool]:
    """``(state, indexed)``: from the index when the registry has one, else the 0.1.0 way.

    The 0.1.0 way (:func:`~promptreg.client.redis.state.read_registry`) reads every prompt's keys in one
    transaction: correct, but O(prompts) commands that stall the server at scale; ``indexed`` is
    ``False`` then, so the feed can say ``promptreg migrate`` is due. Raises what the readers raise.
    """
    state = read_indexed(client, keys, anchor, subset)
    if state is not None:
        return state, True
    state = read_registry(client, keys, hint, anchor)
    if subset is not None:
        history = getattr(state.pointers, "history", {})
        pointers = {name: labels for name, labels in state.pointers.items() if name in subset}
        state = RegistryState(state.rev, StatePointers(pointers, history), state.head, state.anchor_found)
    return state, False
