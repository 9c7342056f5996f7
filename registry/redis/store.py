"""``RedisPromptRegistry``: Redis is the source of truth.

Each version is an immutable hash, each label its own string key (layout in :mod:`promptreg.registry.redis.keys`).
Every write is one Lua script from ``registry/redis/lua/`` that validates, writes, appends the audit entry,
bumps the revision and publishes the change message, atomically; the scripts run as Redis Functions
(FCALL, :mod:`promptreg.registry.redis.scripts`). This module only packs arguments, calls the functions and
turns their result codes and Redis errors into typed exceptions.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NoReturn

import msgpack
from redis.backoff import NoBackoff
from redis.retry import Retry

from promptreg.registry.base import PromptRegistry
from promptreg.registry.composition import WriteGraph, uses
from promptreg.registry.composition_checks import check_move as check_graph
from promptreg.registry.composition_checks import check_new_version
from promptreg.registry.errors import (
    InvalidInputError,
    LabelNotFoundError,
    PromptNotFoundError,
    RegistryCorruptError,
    VersionNotFoundError,
)
from promptreg.registry.fleet import FleetMember
from promptreg.registry.migration import MigrationResult
from promptreg.registry.models import AuditEvent, CompatibilityMode, Prompt, PromptVersion
from promptreg.registry.redis.calls import (
    AddVersion,
    CreatePrompt,
    DeleteLabel,
    Placed,
    Reply,
    RollbackLabel,
    ScriptCall,
    SetCompatibility,
    SetLabel,
)
from promptreg.registry.redis.chat import content_args, fill_inputs
from promptreg.registry.redis.errors import map_redis_errors
from promptreg.registry.redis.fleet import read_fleet, read_members
from promptreg.registry.redis.governance import RedisGovernance, protected_of
from promptreg.registry.redis.index import build_index
from promptreg.registry.redis.keys import DEFAULT_NAMESPACE, Keyspace
from promptreg.registry.redis.packed import fill_packed, pack_fields
from promptreg.registry.redis.partials import NO_GUARD, Guard, RedisPartials, unforced
from promptreg.registry.redis.partials import forced_reply as _forced
from promptreg.registry.redis.partials import result_of as _result
from promptreg.registry.redis.records import (
    ADD_VERSION_ATTEMPTS,
    event_from_entry,
    refusal,
    text_field,
    version_from_hash,
)
from promptreg.registry.redis.replication import durable, run_and_wait
from promptreg.registry.redis.rollouts import RedisRollouts
from promptreg.registry.redis.scripts import WriteFunctions
from promptreg.registry.redis.sentinel import write_route
from promptreg.registry.redis.topology import RedisClient, connect, is_cluster, parse_redis_url
from promptreg.registry.validation import LATEST, MAX_METADATA_BYTES, MAX_TEXT_BYTES
from promptreg.registry.wire import pack_static_part


class RedisPromptRegistry(RedisGovernance, RedisRollouts, RedisPartials, PromptRegistry):
    """The production registry on Redis 7 (or anything speaking its protocol with Redis Functions).

    Pass a redis-py client (``redis.Redis``, one from ``Sentinel.master_for``, or a
    ``redis.cluster.RedisCluster``; without ``decode_responses``) or a ``url`` in any form of
    :mod:`promptreg.registry.redis.topology` (``redis://``, ``redis+sentinel://``, ``redis+cluster://``, ...); extra
    keyword arguments go to redis-py. ``namespace`` prefixes every key, inside one hash tag.

    ``wait_replicas``/``wait_timeout`` (URL query ``wait_replicas=N&wait_timeout=S``): after each
    write, ``WAIT N`` on the write's own connection; if fewer than ``N`` replicas confirmed it within
    ``wait_timeout`` seconds, :class:`~promptreg.ReplicationTimeoutError` (its ``event`` is the applied
    write). ``read_from="replica"`` (Sentinel URLs only) reads from a replica: writes are then
    refused (read-only). Connection failures and the server's refusals (read-only replica, loading,
    cluster down, ...) raise :class:`~promptreg.RegistryUnavailableError` saying which.

    Writes call this release's Redis Functions library (:mod:`promptreg.registry.redis.scripts`). With a user
    that may ``FUNCTION LOAD`` (the default user, the ACL ``admin``) the first write loads it when it
    is missing; with one that may not (``writer``) a write on a server without it raises
    :class:`~promptreg.RegistryAuthError` saying to run ``promptreg migrate`` as admin
    (:meth:`load_functions`).
    """

    def __init__(
        self,
        client: RedisClient | None = None,
        *,
        url: str | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        max_text_bytes: int = MAX_TEXT_BYTES,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        wait_replicas: int | None = None,
        wait_timeout: float | None = None,
        read_from: str | None = None,
        **redis_kwargs: Any,
    ) -> None:
        super().__init__(max_text_bytes=max_text_bytes, max_metadata_bytes=max_metadata_bytes)
        self.keys = Keyspace(namespace)
        if (client is None) == (url is None):
            raise InvalidInputError("give exactly one of a redis client or a url")
        parsed = parse_redis_url(str(url)) if client is None else None
        if client is None:
            assert parsed is not None
            redis_kwargs.setdefault("socket_timeout", 10.0)
            redis_kwargs.setdefault("socket_connect_timeout", 5.0)
            redis_kwargs.setdefault("health_check_interval", 30)
            # No automatic retries: a write script retried after a lost reply could apply twice
            # (two versions for one add_version). Callers see RegistryUnavailableError and decide.
            redis_kwargs.setdefault("retry", Retry(NoBackoff(), 0))
            client = connect(parsed, read_from=read_from, **redis_kwargs)
            self._owns_client = True
        else:
            if read_from not in (None, "primary"):
                raise InvalidInputError("read_from applies to URLs; pass a client connected where you want to read")
            self._owns_client = False
        self.wait_replicas = int(parsed.wait_replicas if wait_replicas is None and parsed else wait_replicas or 0)
        self.wait_timeout = float(parsed.wait_timeout if wait_timeout is None and parsed else wait_timeout or 1.0)
        if self.wait_replicas < 0 or not self.wait_timeout > 0:
            raise InvalidInputError("wait_replicas must be >= 0 and wait_timeout > 0")
        if client.get_connection_kwargs().get("decode_responses"):
            raise InvalidInputError("the redis client must not use decode_responses=True (versions hold bytes)")
        self._target = parsed.target if parsed is not None else None
        self.redis: Any = client  # redis.Redis or RedisCluster: the same commands, different stubs
        self.cluster = is_cluster(client)
        """Whether the registry runs on a Redis Cluster (change messages then go by SPUBLISH)."""
        self._publish = "SPUBLISH" if self.cluster else "PUBLISH"
        self._confirmed = threading.local()
        self._functions = WriteFunctions(client)
        self._route = write_route(client)
        """On Sentinel: writes go to the primary every sentinel names, and are checked after (None elsewhere)."""

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisPromptRegistry:
        """A registry on the Redis at ``url`` (any form of :mod:`promptreg.registry.redis.topology`)."""
        return cls(url=url, **options)

    def close(self) -> None:
        """Close the connection pool if this registry created it."""
        if self._route is not None:
            self._route.close()
        if self._owns_client:
            self.redis.close()

    def drop_namespace(self) -> int:
        """Delete every key of this registry's namespace (and nothing else); returns how many.

        For throw-away namespaces (the demo, benchmarks, tests): it is not one atomic write, and a
        client of the namespace sees an empty registry (it keeps serving its cache, ``stale``).
        Runs ``SCAN MATCH {ns}:*`` and ``UNLINK`` in batches of 1,000, so no command holds the
        server long; the ACL ``admin`` role allows it, ``writer`` does not.
        """
        deleted = 0
        with self._translate():
            batch: list[bytes] = []
            for key in self.redis.scan_iter(match=self.keys.all_keys, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    deleted += int(self.redis.unlink(*batch))
                    batch.clear()
            if batch:
                deleted += int(self.redis.unlink(*batch))
        return deleted

    # -- plumbing -------------------------------------------------------------------------------

    @contextmanager
    def _translate(self) -> Iterator[None]:
        """Turn redis-py errors into promptreg errors at this one boundary (:mod:`promptreg.registry.redis.errors`)."""
        with map_redis_errors(self._target):
            yield

    def _pipeline(self, *, transaction: bool) -> Any:
        # Typed as Any: redis-py's stubs type chained pipeline calls as command results.
        return self.redis.pipeline(transaction=transaction)

    def _run(self, script_call: ScriptCall, guard: Guard = NO_GUARD) -> list[Any]:
        # The last KEYS of every write script is {ns}:revid, its last two ARGV this write's id and
        # the publish command (_commit.lua). With wait_replicas, or on Sentinel, the script does not
        # publish: the message comes back last in its reply and is published here once WAIT
        # confirmed the write and the sentinels still name the node it ran on (WriteRoute), so no
        # client applies a change a failover can still take back (docs/operations.md).
        # Before those, the composition graph's key and the two ARGV of its guard (partials.py), and
        # before the guard's ARGV the protected labels' key (governance.py; read, never declared).
        keys = [*script_call.script_keys(), self.keys.graph, self.keys.revid]
        defer = bool(self.wait_replicas) or self._route is not None
        args = [*script_call.script_args(), self.keys.protected, *guard, secrets.token_hex(8),
                "DEFER" if defer else self._publish]  # fmt: skip
        call = self._functions.script(script_call.script)
        with self._translate(), self._forgetting():
            client, primary = (self.redis, None) if self._route is None else self._route.before()
            if not defer:
                result: list[Any] = self._functions.retrying(lambda: call(keys=keys, args=args))
                return result
            confirmed = 0
            if self.wait_replicas:
                result, confirmed = self._functions.retrying(
                    lambda: run_and_wait(client, call, keys, args, self.wait_replicas, self.wait_timeout)
                )
                self._confirmed.count = confirmed
            else:
                result = self._functions.retrying(lambda: call(keys=keys, args=args, client=client))
            if result[0] != b"OK":
                return result
            message = result.pop()
            doubt = None if self._route is None else self._route.after(primary)
            self._confirmed.doubt = doubt
            if confirmed >= self.wait_replicas and doubt is None:
                # Not announced otherwise: clients take the write at the next write's gap, a
                # reconnect or the safety poll, once it is the registry's state (or never, if a
                # failover took it back).
                if self.cluster:
                    client.spublish(self.keys.channel, message)
                else:
                    client.publish(self.keys.channel, message)
        return result

    @contextmanager
    def _forgetting(self) -> Iterator[None]:
        # A write that failed on its way (connection lost, refused) makes the next one ask the
        # sentinels before it instead of reusing the last answer (WriteRoute.before).
        try:
            yield
        except Exception:
            if self._route is not None:
                self._route.forget()
            raise

    def _head(self, op: str, name: str, label: str | None, author: str | None, at: datetime) -> bytes:
        return pack_static_part(op, name, label, author, at.timestamp())

    def _fail(
        self, name: str, label: str | None, result: list[Any], expected: int | None = None, version: int = 0
    ) -> NoReturn:
        raise refusal(name, label, result, expected, version)

    def _event(self, reply: Reply, action: str, name: str, label: str | None, version: int | None,
               author: str | None, reason: str | None, at: datetime,
               compatibility: CompatibilityMode | None = None) -> AuditEvent:  # fmt: skip
        return AuditEvent(
            forced=reply.forced,
            compatibility=compatibility,
            rev=reply.rev,
            at=at,
            action=action,  # type: ignore[arg-type]
            prompt=name,
            label=label,
            version=version,
            previous_version=reply.previous,
            author=author,
            reason=reason,
        )

    # -- writes ---------------------------------------------------------------------------------

    def _run_placed(self, call: Placed, guard: Guard = NO_GUARD) -> tuple[Placed, list[Any]]:
        """Run a call whose keys depend on a value the caller guessed (a version number): when the
        script answers ``RETRY``, run it again with what it named, a bounded number of times."""
        for _attempt in range(ADD_VERSION_ATTEMPTS):
            result = self._run(call, guard)
            if result[0] == b"OK" or result[1] != b"RETRY":
                break
            call = call.retried(result)
        return call, result

    def _write(self, name: str, call: ScriptCall, label: str | None = None, expected: int | None = None) -> Reply:
        result = self._run(call)
        if result[0] != b"OK":
            self._fail(name, label, result, expected)
        return call.reply(result)

    @durable
    def _create_prompt(self, name: str, description: str | None, author: str | None, at: datetime, *,
                       compatibility: CompatibilityMode = "none") -> Prompt:  # fmt: skip
        head = self._head("create_prompt", name, None, author, at)
        self._write(name, CreatePrompt(self.keys, name, description, author, at.isoformat(), head, compatibility))
        return Prompt(name=name, description=description, author=author, created_at=at, compatibility=compatibility)

    @durable
    def _add_version(self, name: str, prompt_text: str, author: str | None, metadata: dict[str, Any],
                     message: str | None, at: datetime, *, messages: tuple[dict[str, str], ...] | None = None,
                     config: dict[str, Any] | None = None) -> PromptVersion:  # fmt: skip
        built = PromptVersion(version=1, prompt_text=prompt_text, created_at=at, author=author, message=message,
                              metadata=metadata, messages=messages, config=config or {})  # fmt: skip
        with self._translate():
            number = int(self.redis.hget(self.keys.prompt(name), "latest") or 0) + 1
        call = AddVersion(
            self.keys, name, number, prompt_text, author, at.isoformat(), message, msgpack.packb(metadata),
            hashlib.sha256(prompt_text.encode("utf-8")).hexdigest(), self._head("add_version", name, None, author, at),
            tuple(content_args(messages, built.config, built.variables | built.placeholders, built.placeholders)),
            pack_fields(prompt_text, at, author, message, metadata, messages, built.config),
        )  # fmt: skip
        # The script must be given the new version's key; it says so when another write took it.
        partials = " ".join(sorted(uses(prompt_text, messages)))
        (call, result), _ = self._guarded(
            lambda guard: self._run_placed(call, guard), _result,
            unforced(lambda graph: check_new_version(graph, name, call.number, built)), partials,
        )  # fmt: skip
        if result[0] != b"OK":
            self._fail(name, None, result)
        return built.model_copy(update={"version": call.reply(result).version})

    @durable
    def _set_label(self, name: str, label: str, version: int, expected_version: int | None,
                   author: str | None, reason: str | None, at: datetime, *,
                   force: bool = False) -> AuditEvent:  # fmt: skip
        # The compatibility check reads the version the label last pointed at (where it points, or
        # where it pointed when it was deleted), so the script must be given its key. No GET first (a
        # round trip before every move is published): the guess is the expected version, and the
        # script answers RETRY with that version only when a compatibility mode needs its hash and
        # the guess was wrong.
        call = SetLabel(self.keys, name, label, version, expected_version, at.isoformat(), author, reason,
                        self._head("set_label", name, label, author, at), force, expected_version or 0)  # fmt: skip
        (call, result), forced = self._guarded(
            lambda guard: self._run_placed(call, guard), _result,
            lambda graph: check_graph(graph, name, label, version, force=force),
        )  # fmt: skip
        if result[0] != b"OK":
            self._fail(name, label, result, expected_version, version)
        return self._event(_forced(call.reply(result), forced), "set_label", name, label, version, author, reason, at)

    @durable
    def _delete_label(self, name: str, label: str, expected_version: int | None, author: str | None,
                      reason: str | None, at: datetime, *, force: bool = False) -> AuditEvent:  # fmt: skip
        head = self._head("delete_label", name, label, author, at)
        call = DeleteLabel(self.keys, name, label, expected_version, at.isoformat(), author, reason, head)
        result, forced = self._guarded(
            lambda guard: self._run(call, guard), lambda result: result,
            lambda graph: check_graph(graph, name, label, None, force=force),
        )  # fmt: skip
        if result[0] != b"OK":
            self._fail(name, label, result, expected_version)
        return self._event(_forced(call.reply(result), forced), "delete_label", name, label, None, author, reason, at)

    @durable
    def _rollback(self, name: str, label: str, author: str | None, reason: str | None, at: datetime, *,
                  force: bool = False, expected_version: int | None = None) -> AuditEvent:  # fmt: skip
        with self._translate():
            raw_target, raw_current = self.redis.mget(self.keys.previous(name, label), self.keys.label(name, label))
        # The script must be given the target's and the current version's keys; it says when they moved.
        call = RollbackLabel(self.keys, name, label, at.isoformat(), author, reason,
                             self._head("rollback", name, label, author, at), force, int(raw_target or 0),
                             int(raw_current or 0), expected_version)  # fmt: skip

        def check(graph: WriteGraph) -> bool:
            with self._translate():
                target = self.redis.get(self.keys.previous(name, label))
            return bool(target) and check_graph(graph, name, label, int(target), force=force)

        (call, result), forced = self._guarded(lambda guard: self._run_placed(call, guard), _result, check)
        if result[0] != b"OK":
            self._fail(name, label, result, expected=expected_version, version=call.target)
        reply = _forced(call.reply(result), forced)
        return self._event(reply, "rollback", name, label, reply.version, author, reason, at)

    @durable
    def _set_compatibility(self, name: str, mode: CompatibilityMode, author: str | None, reason: str | None,
                           at: datetime) -> AuditEvent:  # fmt: skip
        head = self._head("set_compatibility", name, None, author, at)
        reply = self._write(name, SetCompatibility(self.keys, name, mode, at.isoformat(), author, reason, head))
        return self._event(reply, "set_compatibility", name, None, None, author, reason, at, compatibility=mode)

    # -- reads ----------------------------------------------------------------------------------

    def _get_prompt(self, name: str) -> Prompt | None:
        k = self.keys
        with self._translate():
            meta, label_names, protected = (
                self._pipeline(transaction=True).hgetall(k.prompt(name)).smembers(k.labels(name))
                .hgetall(k.protected).execute()
            )  # fmt: skip
            if not meta:
                return None
            guarded = protected_of(protected, name)
            labels = sorted({n.decode() for n in label_names} | guarded)
            # Labels and `latest` are read together, after the label set: every label then points
            # at a version <= latest, since versions are never removed.
            pipe = self._pipeline(transaction=True)
            pipe.hget(k.prompt(name), "latest")
            for label in labels:
                pipe.hget(k.governed, f"{name}:{label}") if label in guarded else pipe.get(k.label(name, label))
            latest_raw, *targets = pipe.execute()
            latest = int(latest_raw or 0)
            pipe = self._pipeline(transaction=False)
            for number in range(1, latest + 1):
                pipe.hgetall(k.version(name, number))
            hashes = pipe.execute() if latest else []
        versions = [version_from_hash(name, n, fields) for n, fields in enumerate(hashes, 1)]
        try:
            return Prompt(
                name=name,
                description=text_field(meta.get(b"description")),
                author=text_field(meta.get(b"author")),
                created_at=datetime.fromisoformat(meta[b"created_at"].decode("ascii")),
                versions=versions,
                labels={label: int(t) for label, t in zip(labels, targets, strict=True) if t is not None},
                compatibility=text_field(meta.get(b"compatibility")) or "none",  # type: ignore[arg-type]  # pydantic checks
                rollouts=self._rollouts_of(name, labels),
            )
        except (KeyError, ValueError) as exc:
            raise RegistryCorruptError(f"prompt {name!r} is not readable: {exc!r}") from exc

    def _resolve_label(self, name: str, label: str) -> int:
        k = self.keys
        with self._translate():
            if label == LATEST:
                raw = self.redis.hget(k.prompt(name), "latest")
                if raw is None:
                    raise PromptNotFoundError(name)
                if int(raw) == 0:
                    raise LabelNotFoundError(name, label)
                return int(raw)
            field = f"{name}:{label}"
            raw, exists, protected, governed = (
                self._pipeline(transaction=True).get(k.label(name, label)).exists(k.prompt(name))
                .hget(k.protected, field).hget(k.governed, field).execute()
            )  # fmt: skip
            if protected is not None:  # a protected label points where {ns}:gov:ix says (governance.py)
                raw = governed
        if not exists:
            raise PromptNotFoundError(name)
        if raw is None:
            raise LabelNotFoundError(name, label)
        return int(raw)

    def _get_version(self, name: str, version: int) -> PromptVersion:
        k = self.keys
        with self._translate():
            fields, exists = (
                self._pipeline(transaction=False).hgetall(k.version(name, version)).exists(k.prompt(name)).execute()
            )
        if not exists:
            raise PromptNotFoundError(name)
        if not fields:
            raise VersionNotFoundError(name, version)
        return version_from_hash(name, version, fields)

    def fleet(self) -> list[FleetMember]:
        """The clients reporting presence (``{ns}:fleet``, :mod:`promptreg.registry.redis.fleet`); expired ones
        are left out (and dropped from the index). Raises :class:`~promptreg.RegistryUnavailableError`."""
        with self._translate():
            return read_fleet(self.redis, self.keys)

    def _fleet_members(self, client_ids: Iterable[str]) -> dict[str, FleetMember | None]:
        with self._translate():
            return read_members(self.redis, self.keys, client_ids)

    def _revision(self) -> int:
        with self._translate():
            return int(self.redis.get(self.keys.rev) or 0)

    def load_functions(self) -> bool:
        """Load this release's write functions library (``FUNCTION LOAD``; on a cluster, on every
        primary); True when it was missing somewhere. Idempotent: a library already loaded is kept.

        Needs a user that may ``FUNCTION LOAD`` (the default user or the ACL ``admin``):
        ``promptreg migrate`` runs it. Raises :class:`~promptreg.RegistryAuthError` for a user that
        may not, :class:`~promptreg.RegistryUnavailableError`.
        """
        with self._translate():
            return self._functions.load()

    def migrate(self, *, rebuild: bool = False) -> MigrationResult:
        """Load this release's functions library (:meth:`load_functions`), then build the index
        (``{ns}:ix:*``) a registry written by 0.1.0 lacks; idempotent.

        Batched: no command blocks the server for long. With ``rebuild`` the index is rebuilt even
        when it is complete (after a 0.1.0 writer wrote to a migrated registry). Versions written
        before the compatibility check get their ``inputs`` (:func:`promptreg.registry.redis.chat.fill_inputs`),
        and versions written before packed records get theirs (:func:`promptreg.registry.redis.packed.fill_packed`).
        Raises :class:`~promptreg.RegistryUnavailableError` and :class:`~promptreg.RegistryAuthError`
        (also for a user that may not load the library: run it as admin).
        """
        loaded = self.load_functions()
        with self._translate():
            result = build_index(self.redis, self.keys, self._functions.script("index_prompts"), rebuild=rebuild)
            filled = fill_inputs(self.redis, self.keys)
            packed = fill_packed(self.redis, self.keys)
        notes = [f"loaded the Redis functions library {self._functions.library.name}"] if loaded else []
        if filled:
            notes.append(f"stored the variables of {filled} version(s) written before compatibility checks")
        if packed:
            notes.append(f"packed {packed} version(s) written before packed records, for one read per version")
        if not notes:
            return result
        message = "; ".join([result.message, *notes])
        return MigrationResult(result.changed or bool(filled or packed), result.prompts, message)

    def _list_prompts(self) -> list[str]:
        with self._translate():
            names: set[bytes] = self.redis.smembers(self.keys.prompts)
        return [n.decode("utf-8") for n in names]

    def _history(self, name: str) -> list[AuditEvent]:
        with self._translate():
            exists, entries = (
                self._pipeline(transaction=False)
                .exists(self.keys.prompt(name))
                .xrange(self.keys.history(name))
                .execute()
            )
        if not exists:
            raise PromptNotFoundError(name)
        return [event_from_entry(fields) for _id, fields in entries]

    def _describe(self, names: list[str]) -> dict[str, str | None]:
        with self._translate():
            pipe = self._pipeline(transaction=False)
            for name in names:
                pipe.hmget(self.keys.prompt(name), "description", "created_at")
            rows = pipe.execute()
        # created_at is set by every create: without it there is no prompt of that name.
        return {name: text_field(row[0]) for name, row in zip(names, rows, strict=True) if row[1] is not None}

    def _changes_since(self, rev: int, limit: int) -> list[AuditEvent]:
        # The registry-wide log is keyed by time, not revision: read back from the end, one page at
        # a time, until an entry at or before ``rev``, the log's start (trimmed), or ``limit`` entries.
        newer: list[AuditEvent] = []
        end, page_size = "+", min(limit, 500)
        with self._translate():
            while len(newer) < limit:
                page = self.redis.xrevrange(self.keys.log, end, "-", count=page_size)
                for _entry_id, fields in page:
                    event = event_from_entry(fields)
                    if event.rev <= rev:
                        return newer[::-1]
                    newer.append(event)
                if len(page) < page_size:
                    break
                end = "(" + page[-1][0].decode()
        return newer[::-1][:limit]
