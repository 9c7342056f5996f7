"""Property tests (hypothesis): random operation sequences against a model, random bytes against a client.

1. :class:`RegistryMachine` runs random sequences of create_prompt, add_version, set_label (with and
   without compare-and-set), delete_label, rollback, get_version (by label, by number, ``latest``)
   and history against every backend (the JSON file, fakeredis, redis-server, a Cluster, PostgreSQL) and against
   :class:`Model`, a few dicts written from the documented contract. Every call must return what
   the model says or raise exactly the error type the model expects; after every step the whole
   visible state (prompt list, versions, labels) must equal the model's.
2. Random bytes, and msgpack maps that look like change messages, published on the events channel
   of a live :class:`~promptreg.PromptClient` on a real redis-server: the client never leaves ``live``,
   lookups never raise and keep serving the registry's state, and a genuine label move afterwards is
   applied. (A well-formed message carrying the next revision is a *forgery*, which a client cannot
   tell from the truth; the ACL roles keep PUBLISH from services, see docs/security.md. Such
   messages are not generated.)

The example counts are bounded for CI (``PROMPTREG_PROPERTY_EXAMPLES`` raises them for a longer
local hunt, ``PROMPTREG_PROPERTY_SHRINK=1`` shrinks a failure to a minimal sequence); no example
database is written (``database=None``).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    run_state_machine_as_test,
)

from promptreg.client import PromptClient
from promptreg.client.status import ClientState
from promptreg.registry import (
    PostgresPromptRegistry,
    PromptRegistry,
    RedisPromptRegistry,
)
from promptreg.registry.errors import RegistryCorruptError
from promptreg.registry.redis.keys import Keyspace
from promptreg.registry.wire import OPERATIONS, decode
from tests.backends import fresh_namespace, kinds, open_backend
from tests.redis_server import RedisServer, wait_until
from tests.registry_model import EXAMPLES, MACHINE_SETTINGS, machine_for


def _drop(registry: PromptRegistry) -> None:
    # Each run's registry has a namespace (or file) of its own; dropping it keeps the shared servers small.
    if isinstance(registry, RedisPromptRegistry | PostgresPromptRegistry):
        registry.drop_namespace()
    registry.close()


@pytest.mark.parametrize("kind", kinds())
def test_operations_match_the_model(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with open_backend(kind, request, fresh_namespace(), tmp_path) as backend:
        run_state_machine_as_test(
            machine_for(lambda: backend.other(uuid.uuid4().hex[:12]), _drop),
            settings=MACHINE_SETTINGS,
        )


# -- random bytes on the events channel ----------------------------------------------------------


def _ext8(code: int, data: bytes) -> bytes:
    """A msgpack extension value (ext 8 format) of any type code, the reserved ones included."""
    return bytes([0xC7, len(data), code & 0xFF]) + data


FIELDS = ("rev", "op", "prompt", "label", "version", "prev", "author", "at")
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=12)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6,
)
# Maps shaped like change messages: real field names, real operations and names, wrong or odd values.
message_like = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=6),
    values | st.sampled_from(sorted(OPERATIONS)) | st.sampled_from(["critic", "production", "nope"]),
    max_size=10,
)
garbage = st.one_of(
    st.binary(max_size=96),
    message_like.map(lambda data: msgpack.packb(data, use_bin_type=True)),
    st.builds(lambda data, cut: msgpack.packb(data)[:cut], message_like, st.integers(0, 40)),  # truncated
    st.builds(_ext8, st.integers(-128, 127), st.binary(max_size=16)),
)


def _is_forgery(data: bytes, rev: int) -> bool:
    """A well-formed message with the next revision: the client must believe it (see module docstring)."""
    try:
        return decode(data).rev == rev + 1
    except RegistryCorruptError:
        return False


class Lookups:
    """A thread calling ``client.get`` non-stop, keeping whatever it raised."""

    def __init__(self, client: PromptClient) -> None:
        self.client = client
        self.errors: list[BaseException] = []
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-lookups", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.seen.add(self.client.get("critic").version)
            except BaseException as exc:  # any exception at all is a failure of the property
                self.errors.append(exc)
            self._stop.wait(0.001)

    def __enter__(self) -> Lookups:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@pytest.fixture
def live_client(redis_server: RedisServer, namespace: str) -> Iterator[tuple[PromptClient, RedisPromptRegistry]]:
    conn = redis_server.client()
    registry = RedisPromptRegistry(conn, namespace=namespace)
    registry.create_prompt("critic")
    registry.add_version("critic", "v1 {{movie}}")
    registry.add_version("critic", "v2 {{movie}}")
    registry.set_label("critic", "production", 1)
    client = PromptClient(redis_server.url, namespace=namespace, start_timeout=5)
    try:
        assert client.wait_ready(5), client.status()
        yield client, registry
    finally:
        client.close()
        _drop(registry)
        conn.close()


@pytest.mark.redis
def test_random_bytes_on_the_events_channel_never_hurt_a_live_client(
    live_client: tuple[PromptClient, RedisPromptRegistry],
) -> None:
    client, registry = live_client
    channel = Keyspace(registry.keys.namespace).channel
    since = client.status().since
    serving = {"version": 1}

    @settings(MACHINE_SETTINGS, max_examples=EXAMPLES * 2)
    @given(messages=st.lists(garbage, min_size=1, max_size=4))
    def publish(messages: list[bytes]) -> None:
        rev = client.status().rev
        assume(not any(_is_forgery(data, rev) for data in messages))
        for data in messages:
            registry.redis.publish(channel, data)
        assert client.get("critic").version == serving["version"]
        # A genuine move after the garbage is applied: the listener is alive and in step.
        target = 3 - serving["version"]
        registry.set_label("critic", "production", target)
        serving["version"] = target
        assert wait_until(lambda: client.get("critic").version == target, timeout=5), client.status()
        status = client.status()
        assert status.state is ClientState.LIVE and status.since == since, status  # never left live

    with Lookups(client) as lookups:
        publish()
    assert lookups.errors == []
    assert lookups.seen == {1, 2}
    assert client.get("critic", version=2).prompt_text == "v2 {{movie}}"
