"""The client never says ``live`` while it serves a state the registry does not hold.

Restores in place (DUMP/RESTORE REPLACE, no change message) to an earlier revision, to the same
revision number with another history, restores followed by writes; an empty registry (FLUSHALL, a
restart without data) that must not replace the cache; a restart with a different data set; the
inline ``fallback=``. Real redis-server (the ``redis`` marker), plus the ``file://`` feed where the
case applies.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from promptreg.client import ClientState, PromptClient
from promptreg.registry import (
    InvalidNameError,
    JsonFilePromptRegistry,
    LabelNotFoundError,
    PromptNotFoundError,
    PromptRegistry,
    RedisPromptRegistry,
    RegistryUnavailableError,
    VersionNotFoundError,
)
from promptreg.registry.backup import apply_import, export_registry, plan_import
from tests.helpers import LABEL, NAME, assert_converged, client_matches, registry_rev, seed
from tests.redis_server import RedisServer, free_port, wait_until

# -- helpers --------------------------------------------------------------------------------------


def dump_namespace(conn: redis.Redis, namespace: str) -> dict[bytes, bytes]:
    """``DUMP`` of every key of the namespace (a backup as an operator takes one)."""
    return {key: conn.dump(key) for key in conn.scan_iter(match="{" + namespace + "}:*", count=1000)}  # type: ignore[misc]


def restore_namespace(conn: redis.Redis, namespace: str, dumps: dict[bytes, bytes], into: str | None = None) -> None:
    """Put the namespace back to ``dumps`` in one transaction (``RESTORE ... REPLACE``, keys the
    backup does not have deleted); publishes nothing. ``into`` restores another namespace's dump."""
    target = into or namespace
    source_prefix, target_prefix = ("{" + namespace + "}").encode(), ("{" + target + "}").encode()
    renamed = {target_prefix + key[len(source_prefix) :]: value for key, value in dumps.items()}
    current = set(conn.scan_iter(match="{" + target + "}:*", count=1000))
    pipe = conn.pipeline(transaction=True)
    for key in current - renamed.keys():
        pipe.delete(key)
    for key, value in renamed.items():
        pipe.restore(key, 0, value, replace=True)
    pipe.execute()


class BusyReader:
    """A thread calling ``get()`` in a loop: a restore must never make a lookup raise."""

    def __init__(self, prompts: PromptClient) -> None:
        self.prompts = prompts
        self.errors: list[BaseException] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-busy-reader", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.prompts.get(NAME)
                self.prompts.get(NAME, "latest")
            except BaseException as exc:
                self.errors.append(exc)
                return
            self.reads += 1
            time.sleep(0.0002)  # leave the GIL to the listener; not a synchronisation

    def __enter__(self) -> BusyReader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        assert not self.errors, self.errors
        assert self.reads > 0


def _history(registry: PromptRegistry) -> None:
    """Writes after the backup: a new prompt, a new label, new versions, moves."""
    registry.set_label(NAME, "staging", 3)
    registry.add_version(NAME, "v4 {{movie}}")
    registry.set_label(NAME, LABEL, 4)
    registry.create_prompt("other")
    registry.add_version("other", "other text")
    registry.set_label("other", LABEL, 1)


@pytest.fixture
def registry(redis_server: RedisServer, namespace: str) -> Iterator[RedisPromptRegistry]:
    reg = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    yield reg
    reg.close()


@pytest.fixture
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    conn = redis_server.client()
    yield conn
    conn.close()


# -- restore in place -----------------------------------------------------------------------------


@pytest.mark.redis
def test_restore_to_an_earlier_revision_is_caught_by_the_safety_poll_while_clients_are_busy(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, admin: redis.Redis
) -> None:
    seed(registry)
    backup = dump_namespace(admin, namespace)
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=1.0) as prompts, BusyReader(prompts):
        _history(registry)
        assert wait_until(lambda: client_matches(prompts, registry), 5.0)
        newer = registry_rev(registry)
        restore_namespace(admin, namespace, backup)
        assert registry_rev(registry) < newer
        assert wait_until(lambda: client_matches(prompts, registry), 3.0), prompts.status()
        assert prompts.get(NAME).version == 1
        with pytest.raises(LabelNotFoundError):
            prompts.get(NAME, "staging")
        with pytest.raises(PromptNotFoundError):
            prompts.get("other")


@pytest.mark.redis
def test_restore_then_one_write_is_caught_by_the_message(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, admin: redis.Redis
) -> None:
    seed(registry)
    backup = dump_namespace(admin, namespace)
    # poll_interval=30: only the message can tell, and it must.
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=30.0) as prompts:
        _history(registry)
        assert wait_until(lambda: client_matches(prompts, registry), 5.0)
        resyncs = prompts.status().resyncs
        restore_namespace(admin, namespace, backup)
        registry.set_label(NAME, "staging", 2)  # rev R0 + 1, at or below the client's rev
        assert wait_until(lambda: client_matches(prompts, registry), 2.0), prompts.status()
        assert prompts.get(NAME, "staging").version == 2
        assert prompts.status().resyncs == resyncs + 1


@pytest.mark.redis
def test_restore_then_writes_until_the_revision_number_is_the_clients_again(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, admin: redis.Redis
) -> None:
    seed(registry)
    backup = dump_namespace(admin, namespace)
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=30.0) as prompts:
        _history(registry)
        assert wait_until(lambda: client_matches(prompts, registry), 5.0)
        old_rev = prompts.status().rev
        restore_namespace(admin, namespace, backup)
        while registry_rev(registry) < old_rev:  # a different history up to the same number
            registry.add_version(NAME, f"rewritten {registry_rev(registry)}")
        assert registry_rev(registry) == old_rev
        assert wait_until(lambda: client_matches(prompts, registry), 2.0), prompts.status()
        with pytest.raises(PromptNotFoundError):
            prompts.get("other")


@pytest.mark.redis
def test_restore_of_another_history_at_the_same_revision_is_caught_by_the_fingerprint(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry, admin: redis.Redis
) -> None:
    seed(registry)
    _history(registry)
    with PromptClient(redis_server.url, namespace=namespace, poll_interval=0.3) as prompts:
        registry.set_label(NAME, LABEL, 2)  # applied from messages: the next poll confirms them
        registry.set_label(NAME, LABEL, 3)
        assert wait_until(lambda: client_matches(prompts, registry), 5.0)
        # Polls that find the registry as the client left it must not resync.
        resyncs = prompts.status().resyncs
        polls = _count(admin, "xrevrange")
        assert wait_until(lambda: _count(admin, "xrevrange") >= polls + 3, 10.0)
        assert prompts.status().resyncs == resyncs, "a poll resynced a registry that had not changed"
        # Another registry with the same number of writes but other contents, restored over this
        # one: the same revision number and no message; only the audit-head fingerprint tells.
        other_ns = namespace + "b"
        with RedisPromptRegistry.from_url(redis_server.url, namespace=other_ns) as other:
            seed(other, versions=4, label_at=2)
            _bump(other, registry_rev(registry), "staging")
            backup = dump_namespace(admin, other_ns)
        same_rev = registry_rev(registry)
        restore_namespace(admin, other_ns, backup, into=namespace)
        assert registry_rev(registry) == same_rev
        assert wait_until(lambda: client_matches(prompts, registry), 3.0), prompts.status()
        assert prompts.get(NAME).version == 2
        assert prompts.status().resyncs == resyncs + 1
    admin.delete(*backup)


def _bump(registry: PromptRegistry, rev: int, label: str) -> None:
    """Move ``label`` of ``movie-critic`` (versions 1-3) until the registry is at revision ``rev``."""
    while registry_rev(registry) < rev:
        registry.set_label(NAME, label, 1 + registry_rev(registry) % 3)


def _count(conn: redis.Redis, command: str) -> int:
    stats: dict[str, dict[str, int]] = conn.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


# -- an empty registry is an outage ----------------------------------------------------------------


def _three_prompts(registry: PromptRegistry) -> None:
    seed(registry)
    for name in ("other", "third"):
        registry.create_prompt(name)
        registry.add_version(name, f"{name} text")
        registry.set_label(name, LABEL, 1)


def _stale_empty(prompts: PromptClient) -> bool:
    status = prompts.status()
    return status.state is ClientState.STALE and "empty" in (status.last_error or "")


def _serves_cached_while_stale(prompts: PromptClient, expected: dict[str, int], seconds: float) -> None:
    """For ``seconds``, every lookup returns the cached version and the status stays ``stale``."""
    started = time.monotonic()

    def still_serving_until_elapsed() -> bool:
        for name, number in expected.items():
            assert prompts.get(name).version == number
        status = prompts.status()
        assert status.state is ClientState.STALE, status
        assert "empty" in (status.last_error or ""), status
        return time.monotonic() - started >= seconds

    assert wait_until(still_serving_until_elapsed, seconds + 5.0, interval=0.05)


@pytest.mark.redis
@pytest.mark.parametrize("how", ["flushall", "restart-empty"])
def test_an_empty_registry_never_replaces_the_cache_and_data_coming_back_is_taken(
    private_redis_server: RedisServer, namespace: str, how: str
) -> None:
    server = private_redis_server
    with RedisPromptRegistry.from_url(server.url, namespace=namespace) as reg:
        _three_prompts(reg)
        backup = export_registry(reg)
        expected = {name: 1 for name in reg.list_prompts()}
        with PromptClient(server.url, namespace=namespace, poll_interval=1.0) as prompts:
            assert_converged(prompts, reg)
            if how == "flushall":
                admin = server.client()
                admin.flushall()
                admin.close()
            else:  # the same port, no data: the AOF is gone
                server.kill()
                shutil.rmtree(server.dir / "appendonlydir", ignore_errors=True)
                server.start()
            assert wait_until(lambda: _stale_empty(prompts), 3.0), prompts.status()
            _serves_cached_while_stale(prompts, expected, 5.0)
            apply_import(reg, plan_import(reg, backup))
            assert_converged(prompts, reg, timeout=5.0)
            assert prompts.get("third").prompt_text == "third text"


@pytest.mark.redis
def test_an_empty_registry_at_boot_does_not_replace_the_last_known_good_file(
    private_redis_server: RedisServer, namespace: str, tmp_path: Path
) -> None:
    snapshot = tmp_path / "prompts.msgpack"
    with RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace) as reg:
        _three_prompts(reg)
        with PromptClient(private_redis_server.url, namespace=namespace, snapshot_path=snapshot):
            pass  # close() writes the file
        admin = private_redis_server.client()
        admin.flushall()
        admin.close()
        with PromptClient(private_redis_server.url, namespace=namespace, snapshot_path=snapshot) as prompts:
            status = prompts.status()
            assert status.state is ClientState.STALE and "empty" in (status.last_error or ""), status
            assert prompts.get("third").version == 1
            _three_prompts(reg)
            assert_converged(prompts, reg)


@pytest.mark.redis
def test_a_restart_with_a_different_data_set_on_the_same_port_is_taken(
    private_redis_server: RedisServer, namespace: str
) -> None:
    server = private_redis_server
    replacement = RedisServer(appendonly=True).start()
    try:
        with RedisPromptRegistry.from_url(replacement.url, namespace=namespace) as other:
            seed(other, versions=2, label_at=2)
            other.set_label(NAME, "staging", 1)
        with RedisPromptRegistry.from_url(server.url, namespace=namespace) as reg:
            _three_prompts(reg)
            with PromptClient(server.url, namespace=namespace) as prompts, BusyReader(prompts):
                assert_converged(prompts, reg)
                replacement.stop()  # its AOF keeps the other data set
                server.kill()
                replacement.port = server.port
                replacement.start()
                with RedisPromptRegistry.from_url(replacement.url, namespace=namespace) as now:
                    assert wait_until(lambda: client_matches(prompts, now), 5.0), prompts.status()
                    assert prompts.get(NAME).version == 2
                    with pytest.raises(PromptNotFoundError):
                        prompts.get("third")
    finally:
        replacement.cleanup()


# -- the file:// feed ------------------------------------------------------------------------------


def test_file_restore_to_an_older_copy_and_to_another_history_at_the_same_revision(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    seed(reg)
    older = path.read_bytes()
    other_path = tmp_path / "other.json"
    other = JsonFilePromptRegistry(other_path)
    seed(other, versions=4, label_at=2)
    with PromptClient(f"file://{path}") as prompts, BusyReader(prompts):
        _history(reg)
        assert wait_until(lambda: client_matches(prompts, reg), 5.0)
        path.write_bytes(older)  # restore the older copy in place
        assert wait_until(lambda: client_matches(prompts, reg), 3.0), prompts.status()
        _bump(other, registry_rev(reg), "staging")
        _bump(reg, registry_rev(other), "staging")
        assert wait_until(lambda: client_matches(prompts, reg), 3.0)
        shutil.copyfile(other_path, path)  # same revision number, other history
        assert wait_until(lambda: client_matches(prompts, reg), 3.0), prompts.status()
        assert prompts.get(NAME).version == 2


def test_file_deleted_is_an_outage_and_its_return_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "registry.json"
    reg = JsonFilePromptRegistry(path)
    _three_prompts(reg)
    saved = path.read_bytes()
    with PromptClient(f"file://{path}") as prompts:
        assert_converged(prompts, reg)
        path.unlink()
        assert wait_until(lambda: _stale_empty(prompts), 3.0), prompts.status()
        _serves_cached_while_stale(prompts, dict.fromkeys(("movie-critic", "other", "third"), 1), 1.0)
        path.write_bytes(saved)
        assert_converged(prompts, reg, timeout=5.0)


# -- inline fallback ----------------------------------------------------------------------------------


def test_fallback_when_nothing_is_loaded_and_no_snapshot() -> None:
    with PromptClient(f"redis://127.0.0.1:{free_port()}/0", start_timeout=0.3) as prompts:
        started = time.monotonic()
        found = prompts.get(NAME, fallback="x")
        assert time.monotonic() - started < 0.1  # at once: no I/O for a labelled lookup
        assert (found.version, found.prompt_text, found.metadata) == (0, "x", {"fallback": True})
        assert prompts.render(NAME, label="staging", fallback="hi {{who}}", who="Ann") == "hi Ann"
        assert prompts.get(NAME, version=3, fallback="pinned").prompt_text == "pinned"
        with pytest.raises(RegistryUnavailableError):
            prompts.get(NAME)
        with pytest.raises(InvalidNameError):
            prompts.get("bad name", fallback="x")  # a malformed name is a bug, not an outage
        status = prompts.status()
        assert status.state is ClientState.INITIALIZING
        assert status.fallbacks_served == 3


@pytest.mark.redis
def test_fallback_never_masks_what_a_live_registry_says_does_not_exist(
    redis_server: RedisServer, namespace: str, registry: RedisPromptRegistry
) -> None:
    seed(registry)
    with PromptClient(redis_server.url, namespace=namespace) as prompts:
        assert prompts.get(NAME, fallback="x").version == 1
        with pytest.raises(PromptNotFoundError):
            prompts.get("typo", fallback="x")
        with pytest.raises(LabelNotFoundError):
            prompts.get(NAME, "stagign", fallback="x")
        with pytest.raises(VersionNotFoundError):
            prompts.get(NAME, version=99, fallback="x")
        assert prompts.status().fallbacks_served == 0


@pytest.mark.redis
def test_fallback_for_a_pinned_version_not_cached_while_redis_is_down(
    private_redis_server: RedisServer, namespace: str
) -> None:
    with RedisPromptRegistry.from_url(private_redis_server.url, namespace=namespace) as reg:
        seed(reg, versions=4)
    with PromptClient(private_redis_server.url, namespace=namespace) as prompts:
        pinned = prompts.get(NAME, version=2)
        private_redis_server.kill()
        assert prompts.get(NAME, version=2, fallback="x") is pinned  # cached: the real one
        found = prompts.get(NAME, version=3, fallback="x")
        assert (found.version, found.metadata) == (0, {"fallback": True})
        assert prompts.get(NAME, fallback="x").version == 1  # labelled: the cached state
        assert prompts.status().fallbacks_served == 1
