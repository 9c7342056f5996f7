"""Least-privilege Redis ACL roles for one namespace: ``reader``, ``writer``, ``approver`` and ``admin``.

The rules are derived from what the code really sends (checked against ``ACL LOG`` and ``ACL CAT``
on a real redis-server by ``tests/test_acl.py``):

``reader``
    What :class:`promptreg.PromptClient` needs and nothing more: read-only access (``%R~``) to the
    namespace's keys, SUBSCRIBE on its events channel only, no PUBLISH, no scripts; the only keys it
    may write are the fleet presence keys ``{ns}:fleet`` and ``{ns}:fleet:*`` (``%W~``), with the
    few commands a presence report sends (:data:`PRESENCE_COMMANDS`).
``writer``
    The CLI and CI: the write functions (FCALL of the library an operator loaded,
    :mod:`promptreg.registry.redis.scripts`; no EVAL, EVALSHA, SCRIPT LOAD or FUNCTION LOAD, so no code of its
    own choosing) and every command the functions run (Redis 7 checks those against the caller's ACL
    too, PUBLISH on the events channel included), plus what the CLI reads (history, export, watch).
    The writer reads every key of the namespace but writes only the families it needs
    (:func:`writer_key_rules`): never ``{ns}:gov:*`` (where protected labels point, and decided
    move requests) nor ``{ns}:adm:*`` (which labels are protected), so it cannot move a protected
    label by any route (docs/governance.md).
``approver``
    ``writer`` plus writing ``{ns}:gov:*``: approving a move request, which moves the protected
    label in the same write.
``admin``
    ``approver`` plus ``{ns}:adm:*`` (protecting a label), the namespace wipe (SCAN + UNLINK/DEL,
    see ``benchmarks/_harness.py`` and the demo's clean-up) and loading a release's functions
    library (FUNCTION LOAD, ``promptreg migrate``).

Every rule list lives in the ``*_COMMANDS`` tuples below: amend a role there and the ``promptreg acl``
command, the docs' examples and the tests all follow. Requires Redis 7.0 or newer (read-only key
patterns ``%R~``; scripts' commands checked against the ACL; Redis Functions).

By default the rules are the ones every Redis >= 7.0 accepts: ``ACL SETUSER`` refuses a whole line
that names a command the server does not know, so a grant only newer servers know
(:data:`SETINFO_COMMANDS`) is added only for a server version given or read with
:func:`read_server_version`. Without it, redis-py's ``CLIENT SETINFO`` on connect is refused on
7.2+ (``NOPERM``, counted in ``ACL LOG``), which redis-py ignores: the users work on every version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.redis.keys import DEFAULT_NAMESPACE, Keyspace

PASSWORD_PLACEHOLDER = "<password>"
"""Printed instead of a password: the user replaces it; promptreg never prints a real secret."""

MIN_SERVER_VERSION = (7, 0)
"""``%R~`` read-only key patterns and per-command ACL checks inside scripts arrived in Redis 7.0."""

DEFAULT_SERVER_VERSION = (7, 0)
"""The Redis version the rules target unless told otherwise: the oldest supported, so that every
Redis >= 7.0 (7.2, 7.4, 8.x) accepts them."""

SETINFO_SERVER_VERSION = (7, 2)
"""The first Redis version that knows ``CLIENT SETINFO``: :data:`SETINFO_COMMANDS` are granted from here on."""

# -- the rule lists: amend a role here, in one place ------------------------------------------------

CONNECTION_COMMANDS: tuple[str, ...] = (
    "ping",  # redis-py's health checks, and the feed's liveness PING on the subscriber connection
)
"""What every promptreg connection sends besides its work (AUTH/HELLO need no grant)."""

SETINFO_COMMANDS: tuple[str, ...] = (
    "client|setinfo",  # redis-py names its library on connect (Redis >= 7.2 only; 7.0 refuses the whole line)
)
"""Granted only for a server version >= :data:`SETINFO_SERVER_VERSION` (redis-py ignores the refusal elsewhere)."""

READER_COMMANDS: tuple[str, ...] = (
    "subscribe",  # the feed's change messages (client/feeds.py), on the namespace's channel only
    "ssubscribe",  # ... the same on a Redis Cluster (sharded pub/sub, client/redis/links.py)
    "multi",  # the state is read in one MULTI/EXEC: one consistent cut (client/redis/state.py)
    "exec",
    "get",  # {ns}:rev and label pointers
    "smembers",  # {ns}:prompts and each prompt's label set
    "hget",  # a prompt's `latest`
    "hgetall",  # version hashes (immutable, fetched once)
    "exists",  # a pinned version read through RedisPromptRegistry.get_version
    "xrevrange",  # the newest audit entry of {ns}:log: the safety poll's history fingerprint
    "xrange",  # is the audit entry the client last confirmed still there? (a changed history)
    "role",  # replica awareness: a replica cut off from its primary is stale
    "info",  # `INFO replication` for the same; INFO shows server stats, never data
    "sscan",  # the state from the index in bounded steps: {ns}:prompts (client/redis/index_read.py)
    "hscan",  # ... and the {ns}:ix:* hashes
    "hmget",  # versions' fields in chunks, and a prompts= subset's entries of the index hashes
    "smismember",  # which names of a prompts= subset exist
)
""":class:`promptreg.PromptClient`'s commands (plus :data:`CONNECTION_COMMANDS`): no write, no PUBLISH, no scripts."""

PRESENCE_COMMANDS: tuple[str, ...] = (
    "set",  # its presence record, SET ... PX (client/presence.py, registry/redis/fleet.py)
    "zadd",  # ... and its entry in the {ns}:fleet index
    "del",  # removing both when the client closes
    "zrem",
    "zremrangebyscore",  # dropping index entries not refreshed for a day, once at start
    "zrange",  # reading the fleet (fleet(), wait_for_fleet(), `promptreg fleet`)
    "mget",
    "getrange",  # ... each record read up to its size limit, whatever a forger stored
    "pttl",  # ... and its expiry: a record the server would not expire is not a client's report
)
"""The reader's presence commands: its write grants apply only to the presence keys (see :func:`presence_key_rules`)."""

WRITER_COMMANDS: tuple[str, ...] = (
    "fcall",  # every write is one function of the library an admin loaded (registry/redis/scripts.py);
    # no EVAL/EVALSHA/SCRIPT LOAD/FUNCTION LOAD: the writer runs no code of its own choosing.
    # Commands the functions (registry/redis/lua/) run: Redis 7 checks each against the caller's ACL.
    "exists",
    "get",
    "hget",
    "hset",
    "sismember",
    "sadd",
    "srem",
    "set",
    "del",
    "incr",
    "xadd",
    "publish",  # the change message, on the namespace's channel only (the channel rule)
    "spublish",  # ... the same on a Redis Cluster (sharded pub/sub)
    "wait",  # wait_replicas: WAIT n timeout after a write (registry/redis/replication.py)
    "xrange",  # what the CLI reads besides the reader's commands: `history`, `export`
    "hdel",  # delete_label and index_prompts drop index entries
    "hlen",  # ... and drop an emptied label from {ns}:ix:labels
    "hexists",  # is a prompt in a composition ({ns}:ix:graph, registry/redis/partials.py), or a label protected
    "zrevrange",  # the newest move requests (`promptreg requests`, registry/redis/governance.py)
    "watch",  # the webhook worker's lease and cursors: compare-and-set (registry/webhooks/redis_store.py)
    "unwatch",
)
"""Added to the reader's commands for the CLI and CI (``promptreg`` create/push/label/rollback/sync...)."""

ADMIN_COMMANDS: tuple[str, ...] = (
    "scan",  # the namespace wipe finds the keys with SCAN MATCH {ns}:* ...
    "unlink",  # ... and drops them (the demo uses DEL, which the writer already has)
    "function|load",  # `promptreg migrate` loads a release's functions library (server-wide: docs/security.md)
)
"""Added to the writer's commands: the namespace wipe and ``promptreg migrate`` (the functions library)."""


class Role(StrEnum):
    """The four roles, from least to most privileged."""

    READER = "reader"
    """Services running :class:`promptreg.PromptClient`."""
    WRITER = "writer"
    """The CLI and CI jobs that change prompts and labels (a protected label only by request)."""
    APPROVER = "approver"
    """Reviewers: ``writer`` plus approving and rejecting move requests of protected labels."""
    ADMIN = "admin"
    """Operators: ``writer`` plus wiping the namespace and loading the functions library (``promptreg migrate``)."""


_DESCRIPTIONS = {
    Role.READER: "PromptClient: read the namespace's keys (read-only), SUBSCRIBE to its events channel, "
    "write only the fleet presence keys; no PUBLISH, no scripts",
    Role.WRITER: "CLI/CI: call the loaded write functions (FCALL; no EVAL, no script or function loading) "
    "and the commands they run, PUBLISH on the events channel, read history and exports; reads the namespace's keys, "
    "writes none of {ns}:gov:* and {ns}:adm:* (protected labels)",
    Role.APPROVER: "writer + writing {ns}:gov:*: approve or reject move requests of protected labels (the approval "
    "moves the label)",
    Role.ADMIN: "approver + {ns}:adm:* (protect labels) + the namespace wipe (SCAN, UNLINK) + loading the functions "
    "library (FUNCTION LOAD, "
    "promptreg migrate); only the namespace's keys",
}


@dataclass(frozen=True, slots=True)
class RoleRules:
    """One role's ACL user for one namespace: its name and its ``ACL SETUSER`` rules.

    ``rules`` are the permissions only (key pattern, channel pattern, ``+command`` grants); use
    :meth:`setuser_args` for the complete command, which starts from a clean ``reset`` user.
    """

    role: Role
    user: str
    description: str
    rules: tuple[str, ...]

    def setuser_args(self, password: str = PASSWORD_PLACEHOLDER) -> list[str]:
        """``["ACL", "SETUSER", user, "reset", "resetchannels", "on", ">password", *rules]``.

        ``reset`` drops every earlier grant of the user; ``resetchannels`` follows it because
        ``reset`` grants every channel on a server configured with ``acl-pubsub-default allchannels``.
        Raises :class:`~promptreg.InvalidInputError` for an empty password.
        """
        if not password:
            raise InvalidInputError("an ACL user needs a non-empty password")
        return ["ACL", "SETUSER", self.user, "reset", "resetchannels", "on", f">{password}", *self.rules]


def parse_server_version(text: str) -> tuple[int, int]:
    """``"7.0.15"`` or ``"7.2"`` -> ``(7, 0)`` / ``(7, 2)``.

    Raises :class:`~promptreg.InvalidInputError` for anything else, or a version older than
    :data:`MIN_SERVER_VERSION`.
    """
    match = re.fullmatch(r"\s*(\d{1,4})\.(\d{1,4})(?:\.\d{1,6})?\s*", text)
    if match is None:
        raise InvalidInputError(f"invalid Redis version {text!r}: use MAJOR.MINOR, e.g. 7.2")
    version = (int(match.group(1)), int(match.group(2)))
    if version < MIN_SERVER_VERSION:
        raise InvalidInputError(
            f"Redis {version[0]}.{version[1]} is too old for promptreg's ACL roles: they need Redis 7.0 or newer"
        )
    return version


def read_server_version(url: str, *, timeout: float = 5.0) -> tuple[int, int]:
    """The ``(major, minor)`` version of the Redis at ``url``, from ``INFO server`` (``redis_version``).

    For a Redis Cluster the oldest node's version. ``url`` is any Redis URL the registry takes
    (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://``, ``redis+cluster://``); the user
    needs ``INFO``. Raises :class:`~promptreg.InvalidInputError` for a URL that is not a Redis URL or
    a server older than :data:`MIN_SERVER_VERSION`, :class:`~promptreg.RegistryAuthError` when the
    server refuses the credentials or ``INFO``, :class:`~promptreg.RegistryUnavailableError` when it
    cannot be reached.
    """
    # redis-py only here: printing the rules (`promptreg acl`) needs no connection.
    from promptreg.registry.redis.errors import map_redis_errors
    from promptreg.registry.redis.topology import connect, parse_redis_url

    parsed = parse_redis_url(url)
    with map_redis_errors():
        client = connect(parsed, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            info = client.info("server")
        finally:
            client.close()
    # A RedisCluster answers with one INFO mapping per node: the oldest node decides.
    nodes = [info] if "redis_version" in info else [node for node in info.values() if isinstance(node, dict)]
    if not nodes or any("redis_version" not in node for node in nodes):
        raise InvalidInputError("the server's INFO has no redis_version: is it a Redis server?")
    return min(parse_server_version(str(node["redis_version"])) for node in nodes)


def presence_key_rules(namespace: str = DEFAULT_NAMESPACE) -> tuple[str, ...]:
    """The reader's write-only key patterns: the fleet index and the presence records, nothing else."""
    keys = Keyspace(namespace)
    return (f"%W~{keys.fleet}", f"%W~{keys.member('*')}")


WRITER_KEY_FAMILIES: tuple[str, ...] = (
    "rev",  # the revision, and the id of the last write
    "revid",
    "prompts",  # the set of names
    "log",  # the audit stream
    "p:*",  # each prompt's keys: versions, labels, history
    "ix:*",  # the index (a protected label's entries here are never what it serves)
    "rq",  # move requests as requested (never a decision)
    "rq:*",
    "wh:*",  # webhooks: endpoints, cursors, the delivery lease, dead letters
    "fleet",  # presence (the reader's grant, kept by the writer)
    "fleet:*",
)
"""The key families (after ``{ns}:``) the writer may write; it reads every key of the namespace."""


def writer_key_rules(namespace: str = DEFAULT_NAMESPACE) -> tuple[str, ...]:
    """The writer's key patterns: read the namespace, write :data:`WRITER_KEY_FAMILIES` only."""
    prefix = Keyspace(namespace).prefix
    return (f"%R~{prefix}:*", *(f"~{prefix}:{family}" for family in WRITER_KEY_FAMILIES))


def role_rules(
    namespace: str = DEFAULT_NAMESPACE, *, server_version: tuple[int, int] = DEFAULT_SERVER_VERSION
) -> tuple[RoleRules, ...]:
    """The reader, writer, approver and admin users of ``namespace``, in that order.

    Users are named ``<namespace>-<role>`` (``promptreg-reader`` for the default namespace), so the
    roles of several namespaces can live on one server. ``server_version`` adds the grants only newer
    servers know (``CLIENT SETINFO`` from 7.2); the default, 7.0, gives rules every Redis >= 7.0
    accepts. Raises
    :class:`~promptreg.InvalidNameError` for a malformed namespace and
    :class:`~promptreg.InvalidInputError` for a server older than 7.0.
    """
    if server_version < MIN_SERVER_VERSION:
        raise InvalidInputError("promptreg's ACL roles need Redis 7.0 or newer")
    keys = Keyspace(namespace)  # validates: the namespace can hold no glob character
    key_pattern = f"{keys.prefix}:*"
    channel = f"&{keys.channel}"
    base = CONNECTION_COMMANDS + (SETINFO_COMMANDS if server_version >= SETINFO_SERVER_VERSION else ())
    reader = _unique(base + READER_COMMANDS + PRESENCE_COMMANDS)
    writer = _unique(reader + WRITER_COMMANDS)
    admin = _unique(writer + ADMIN_COMMANDS)
    writer_keys = writer_key_rules(namespace)
    grants = {
        Role.READER: ((f"%R~{key_pattern}", channel, *presence_key_rules(namespace)), reader),
        Role.WRITER: ((*writer_keys, channel), writer),
        Role.APPROVER: ((*writer_keys, f"~{keys.prefix}:gov:*", channel), writer),
        Role.ADMIN: ((f"~{key_pattern}", channel), admin),
    }
    return tuple(
        RoleRules(
            role=role,
            user=f"{namespace}-{role.value}",
            description=_DESCRIPTIONS[role],
            rules=(*key_rules, *(f"+{command}" for command in commands)),
        )
        for role, (key_rules, commands) in grants.items()
    )


def acl_rules(
    namespace: str = DEFAULT_NAMESPACE, *, server_version: tuple[int, int] = DEFAULT_SERVER_VERSION
) -> dict[str, list[str]]:
    """``{"reader": [...], "writer": [...], "approver": [...], "admin": [...]}``: each role's ``ACL SETUSER`` rules.

    The rules are the permissions only; :func:`acl_setuser_args` gives the whole command. Raises
    what :func:`role_rules` raises.
    """
    return {rules.role.value: list(rules.rules) for rules in role_rules(namespace, server_version=server_version)}


def acl_setuser_args(
    role: Role | str,
    namespace: str = DEFAULT_NAMESPACE,
    *,
    password: str = PASSWORD_PLACEHOLDER,
    user: str | None = None,
    server_version: tuple[int, int] = DEFAULT_SERVER_VERSION,
) -> list[str]:
    """The complete ``ACL SETUSER`` command creating (or resetting) ``role``'s user, as arguments.

    Ready for ``redis.Redis.execute_command(*args)``. ``user`` overrides the default user name
    ``<namespace>-<role>``. Raises :class:`~promptreg.InvalidInputError` for an unknown role, an
    empty password or user name, and what :func:`role_rules` raises.
    """
    try:
        wanted = Role(role)
    except ValueError:
        raise InvalidInputError(f"unknown ACL role {role!r}: use one of {', '.join(r.value for r in Role)}") from None
    if user is not None and (not user or any(ch.isspace() for ch in user)):
        raise InvalidInputError(f"invalid ACL user name {user!r}")
    for rules in role_rules(namespace, server_version=server_version):
        if rules.role is wanted:
            if user is not None:
                rules = RoleRules(rules.role, user, rules.description, rules.rules)
            return rules.setuser_args(password)
    raise AssertionError(f"role {wanted} has no rules")  # unreachable: every Role has rules


def _unique(commands: tuple[str, ...]) -> tuple[str, ...]:
    # Keeps the first occurrence: the writer's list repeats the reader's commands the scripts run.
    return tuple(dict.fromkeys(commands))
