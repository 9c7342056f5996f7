"""The Redis keyspace: every key and the channel name, built in one place.

All keys of one registry share the hash tag ``{namespace}``, so every Lua script touches a single
slot and the registry runs unchanged on Redis Cluster. Names and labels are validated before they
get here (no ``:``, braces or whitespace), so no name can forge another key.

===================================  ==========  ==================================================
key                                  type        what
===================================  ==========  ==================================================
``{ns}:rev``                         string      global revision, INCR by every write
``{ns}:revid``                       string      the id of the write that made the current revision
                                                 (16 hex digits, random per write; missing: ``''``);
                                                 every audit entry and change message carries it
``{ns}:prompts``                     set         names of every prompt
``{ns}:p:<name>``                    hash        ``description``, ``author``, ``created_at``,
                                                 ``latest`` (newest version number)
``{ns}:p:<name>:v:<n>``              hash        one immutable version: ``prompt_text``,
                                                 ``author``, ``created_at``, ``message``,
                                                 ``metadata`` (msgpack), ``sha256``; ``inputs``,
                                                 ``type``, ``messages``, ``placeholders``,
                                                 ``config``: :mod:`promptreg.registry.redis.chat`
``{ns}:p:<name>:vp:<n>``             string      the same version packed in one msgpack record,
                                                 written with the hash (:mod:`promptreg.registry.redis.packed`)
``{ns}:p:<name>:label:<label>``      string      the version number the label points at
``{ns}:p:<name>:labels``             set         names of the prompt's labels
``{ns}:p:<name>:prev:<label>``       string      where the label pointed before its last move; for a
                                                 deleted label, where it pointed when deleted (what
                                                 its next move's compatibility check compares with)
``{ns}:p:<name>:log``                stream      the prompt's audit trail (never trimmed)
``{ns}:log``                         stream      every write, registry-wide (trimmed to ~100k)
``{ns}:events``                      channel     one msgpack change message per write
``{ns}:ix:latest``                   hash        index: ``name -> latest`` (prompts with a version)
``{ns}:ix:label:<label>``            hash        index: ``name -> version`` the label points at
``{ns}:ix:rollouts``                 hash        index: ``<name>:<label> -> <candidate>:<points>``
``{ns}:ix:labels``                   set         index: label names with at least one entry
``{ns}:ix:format``                   string      index format (``1``): present once the index is
                                                 complete (``migrate``, or a registry created with it)
``{ns}:adm:protected``               hash        ``<name>:<label> -> approvals``: protected labels
                                                 (only ``admin`` may write ``{ns}:adm:*``)
``{ns}:gov:ix``                      hash        ``<name>:<label> -> version``: where protected labels
                                                 point (only ``approver``/``admin`` may write
                                                 ``{ns}:gov:*``); overrides the keys above
``{ns}:gov:rq:<id>``                 hash        a decided move request: ``record``, ``applied_rev``
``{ns}:gov:rq``                      zset        decided request ids by creation time (ms)
``{ns}:rq:<id>``                     string      a move request as requested (JSON)
``{ns}:rq``                          zset        request ids by creation time (ms)
``{ns}:fleet``                       zset        presence index: ``client_id -> last report`` (ms)
``{ns}:fleet:<client_id>``           string      one client's presence record (msgpack), with a TTL
                                                 of 3 report intervals (:mod:`promptreg.registry.redis.fleet`)
===================================  ==========  ==================================================

The ``ix`` keys are the *index*: the write scripts keep it equal to the per-prompt keys in the same
script, so a client reads the whole state with a few chunked ``HSCAN`` s instead of O(prompts)
commands. A registry written by 0.1.0 has no ``{ns}:ix:format`` until ``promptreg migrate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from promptreg.registry.validation import DEFAULT_NAMESPACE, validate_namespace

__all__ = ["DEFAULT_NAMESPACE", "Keyspace"]


@dataclass(frozen=True, slots=True)
class Keyspace:
    """Builds every Redis key and the channel name for one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        validate_namespace(self.namespace)

    @property
    def prefix(self) -> str:
        """``{ns}``: the hash tag every key starts with."""
        return "{" + self.namespace + "}"

    @property
    def rev(self) -> str:
        """The global revision counter."""
        return f"{self.prefix}:rev"

    @property
    def revid(self) -> str:
        """The id of the registry's last write: with :attr:`rev`, the identity of its history."""
        return f"{self.prefix}:revid"

    @property
    def prompts(self) -> str:
        """The set of prompt names."""
        return f"{self.prefix}:prompts"

    @property
    def log(self) -> str:
        """The registry-wide audit stream."""
        return f"{self.prefix}:log"

    @property
    def channel(self) -> str:
        """The pub/sub channel that carries change messages."""
        return f"{self.prefix}:events"

    @property
    def all_keys(self) -> str:
        """A ``SCAN MATCH`` pattern for every key of this namespace (and nothing else)."""
        return f"{self.prefix}:*"

    def prompt(self, name: str) -> str:
        """The prompt's own hash (description, author, created_at, latest)."""
        return f"{self.prefix}:p:{name}"

    def version_prefix(self, name: str) -> str:
        """Prefix of the prompt's version keys; the version number is appended to it."""
        return f"{self.prefix}:p:{name}:v:"

    def version(self, name: str, version: int) -> str:
        """One immutable version hash."""
        return f"{self.version_prefix(name)}{version}"

    def packed_prefix(self, name: str) -> str:
        """Prefix of the prompt's packed version records; the version number is appended to it."""
        return f"{self.prefix}:p:{name}:vp:"

    def packed(self, name: str, version: int) -> str:
        """One version's packed record (:mod:`promptreg.registry.redis.packed`), beside its hash."""
        return f"{self.packed_prefix(name)}{version}"

    def packed_keys(self, pairs: list[tuple[str, int]]) -> list[str]:
        """:meth:`packed` of every ``(name, version)``, built in one pass (a start-up builds 200k)."""
        head = f"{self.prefix}:p:"
        return [f"{head}{name}:vp:{version}" for name, version in pairs]

    def label(self, name: str, label: str) -> str:
        """The string key holding the version a label points at."""
        return f"{self.prefix}:p:{name}:label:{label}"

    def labels(self, name: str) -> str:
        """The set of the prompt's label names."""
        return f"{self.prefix}:p:{name}:labels"

    def previous(self, name: str, label: str) -> str:
        """Where the label pointed before its last move (rollback's target); for a deleted label, where
        it pointed when deleted, which ``set_label``'s compatibility check compares the next move with."""
        return f"{self.prefix}:p:{name}:prev:{label}"

    def rollout(self, name: str, label: str) -> str:
        """The hash of the label's running rollout (:mod:`promptreg.registry.rollouts`)."""
        return f"{self.prefix}:p:{name}:rollout:{label}"

    def history(self, name: str) -> str:
        """The prompt's audit stream."""
        return f"{self.prefix}:p:{name}:log"

    # -- the index (read by the client in O(labels) commands) ------------------------------------

    @property
    def index_latest(self) -> str:
        """Index hash ``name -> latest version number`` (only prompts with a version)."""
        return f"{self.prefix}:ix:latest"

    def index_label(self, label: str) -> str:
        """Index hash ``name -> version`` for one label."""
        return f"{self.prefix}:ix:label:{label}"

    @property
    def index_rollouts(self) -> str:
        """Index hash ``<name>:<label> -> <candidate>:<points>`` of every running rollout."""
        return f"{self.prefix}:ix:rollouts"

    @property
    def index_labels(self) -> str:
        """Index set of the label names that have at least one entry."""
        return f"{self.prefix}:ix:labels"

    @property
    def graph(self) -> str:
        """The composition graph: ``u:<name>`` = the partials any version of it includes, ``b:<name>``
        = the prompts with a version including it (space-separated); kept by ``add_version``."""
        return f"{self.prefix}:ix:graph"

    @property
    def index_format(self) -> str:
        """The index's format number; the key exists only once the index is complete."""
        return f"{self.prefix}:ix:format"

    # -- protected labels (registry/redis/governance.py): keys the writer role may read, not write ------

    @property
    def protected(self) -> str:
        """Hash ``<name>:<label> -> approvals`` of the protected labels (``admin`` writes it)."""
        return f"{self.prefix}:adm:protected"

    @property
    def governed(self) -> str:
        """Hash ``<name>:<label> -> version``: where each protected label points, the truth every
        reader lays over the ``p:``/``ix:`` keys (``approver`` writes it)."""
        return f"{self.prefix}:gov:ix"

    def decision(self, request_id: str) -> str:
        """A move request as approvers decided it: ``record`` (JSON) and ``applied_rev`` (``approver`` writes it)."""
        return f"{self.prefix}:gov:rq:{request_id}"

    @property
    def decisions(self) -> str:
        """Sorted set ``request id -> creation time (ms)`` of the decided requests."""
        return f"{self.prefix}:gov:rq"

    def request(self, request_id: str) -> str:
        """A move request as its requester wrote it (JSON; trusted for the request only, never a decision)."""
        return f"{self.prefix}:rq:{request_id}"

    @property
    def requests(self) -> str:
        """Sorted set ``request id -> creation time (ms)`` of every request."""
        return f"{self.prefix}:rq"

    # -- fleet presence (written by each client, on its own connection) ------------------------------

    @property
    def fleet(self) -> str:
        """Sorted set ``client_id -> time of its last report (ms)``: who reports (see :meth:`member`)."""
        return f"{self.prefix}:fleet"

    def member(self, client_id: str) -> str:
        """One client's presence record (msgpack), expiring ``3 * report_interval`` after its last report."""
        return f"{self.prefix}:fleet:{client_id}"
