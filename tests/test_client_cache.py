"""Unit tests of the client's cache and revision rules, and of the state read, on fakeredis.

No threads and no sockets: the registry writes to fakeredis, the change messages are taken off a
fakeredis subscription, and the test decides in which order (or whether) the cache sees them.
"""

from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
import redis

from promptreg.client.cache import Action, Cache, ChangeEvent
from promptreg.client.cached_version import CachedVersion, cached_from_model
from promptreg.client.redis.state import read_state
from promptreg.client.redis.versions import fetch_versions
from promptreg.registry import PromptVersion, RedisPromptRegistry, RegistryCorruptError
from promptreg.registry.wire import ChangeMessage, decode


def _version(number: int, text: str | None = None) -> CachedVersion:
    return cached_from_model(PromptVersion(version=number, prompt_text=text or f"text {number}"))


def _message(rev: int, op: str, prompt: str = "p", label: str | None = None, version: int | None = None,
             prev: int | None = None) -> ChangeMessage:  # fmt: skip
    return ChangeMessage(rev=rev, op=op, prompt=prompt, label=label, version=version, previous_version=prev,
                         author=None, at=0.0)  # fmt: skip


def _loaded_cache(rev: int = 10) -> Cache:
    cache = Cache("production")
    for n in (1, 2, 3):
        cache.add_version("p", _version(n))
    cache.replace(rev, {"p": {"production": 1, "staging": 2, "latest": 3}})
    return cache


def _no_fetch(name: str, number: int) -> CachedVersion | None:
    raise AssertionError(f"unexpected fetch of {name} v{number}")


# -- the view ----------------------------------------------------------------------------------------


def test_view_resolves_labels_latest_and_the_default_label_under_none() -> None:
    cache = _loaded_cache()
    view = cache.view
    assert view["production"]["p"].version == 1
    assert view["staging"]["p"].version == 2
    assert view["latest"]["p"].version == 3
    assert view[None] is view["production"]
    assert cache.rev == 10


def test_default_label_missing_means_no_none_key() -> None:
    cache = Cache("canary")
    cache.add_version("p", _version(1))
    cache.replace(1, {"p": {"latest": 1}})
    assert None not in cache.view
    assert cache.view["latest"]["p"].version == 1


def test_replace_reports_the_difference_as_events() -> None:
    cache = _loaded_cache()
    cache.add_version("q", _version(1))
    events = cache.replace(12, {"p": {"production": 2, "latest": 3}, "q": {"latest": 1}})
    assert events == [
        ChangeEvent("p", "production", 2, 1, 12),
        ChangeEvent("p", "staging", None, 2, 12),
        ChangeEvent("q", None, None, None, 12),
        ChangeEvent("q", "latest", 1, None, 12),
    ]


def test_replace_refuses_pointers_to_uncached_versions_and_keeps_the_state() -> None:
    cache = _loaded_cache()
    view_before, rev_before = cache.view, cache.rev
    with pytest.raises(RegistryCorruptError):
        cache.replace(11, {"p": {"production": 9}})
    assert cache.view is view_before
    assert cache.rev == rev_before


def test_replace_only_if_empty_leaves_a_loaded_state_alone() -> None:
    cache = _loaded_cache()
    assert cache.replace(99, {}, only_if_empty=True) is None
    assert cache.rev == 10
    assert "p" in cache.view["production"]


def test_apply_updates_the_one_entry_in_place_without_copying_the_state() -> None:
    # A copy per message would be O(prompts): the view and the pointers stay the same objects.
    cache = _loaded_cache()
    old_view, old_pointers, generation = cache.view, cache.pointers, cache.generation
    old_labels = old_pointers["p"]
    staging = old_view["staging"]
    result = cache.apply(_message(11, "set_label", label="production", version=2, prev=1), _no_fetch)
    assert result.action is Action.APPLIED
    assert cache.view is old_view and cache.pointers is old_pointers
    assert cache.view["production"]["p"].version == 2
    assert cache.view[None] is cache.view["production"]  # the default label's alias moved with it
    assert cache.view["staging"] is staging
    assert old_labels == {"production": 1, "staging": 2, "latest": 3}  # a prompt's labels are replaced, not edited
    assert cache.pointers["p"]["production"] == 2
    assert cache.generation == generation + 1


def test_a_label_appearing_and_disappearing_keeps_the_default_alias() -> None:
    cache = Cache("canary")
    cache.add_version("p", _version(1))
    cache.replace(1, {"p": {"latest": 1}})
    assert None not in cache.view
    assert cache.apply(_message(2, "set_label", label="canary", version=1), _no_fetch).action is Action.APPLIED
    assert cache.view[None] is cache.view["canary"]
    assert cache.view[None]["p"].version == 1
    assert cache.apply(_message(3, "delete_label", label="canary", prev=1), _no_fetch).action is Action.APPLIED
    assert "canary" not in cache.view and None not in cache.view


def test_pointers_copy_is_a_snapshot_later_messages_do_not_change() -> None:
    cache = _loaded_cache()
    rev, copied = cache.pointers_copy()
    cache.apply(_message(11, "set_label", label="production", version=2, prev=1), _no_fetch)
    assert rev == 10 and copied["p"]["production"] == 1
    assert cache.pointers["p"]["production"] == 2


def test_a_label_move_changes_only_that_prompt() -> None:
    cache = Cache("production")
    for name in ("p", "q"):
        cache.add_version(name, _version(1))
        cache.add_version(name, _version(2))
    cache.replace(1, {"p": {"production": 1, "latest": 2}, "q": {"production": 1, "latest": 2}})
    assert cache.apply(_message(2, "delete_label", label="production", prev=1), _no_fetch).action is Action.APPLIED
    assert "p" not in cache.view[None]
    assert cache.view[None]["q"].version == 1
    assert cache.apply(_message(3, "delete_label", prompt="q", label="production"), _no_fetch).action is Action.APPLIED
    assert cache.view.get(None, {}) == {}
    assert cache.apply(_message(4, "create_prompt", prompt="r"), _no_fetch).action is Action.APPLIED
    assert cache.view["latest"] == {"p": cache.versions["p", 2], "q": cache.versions["q", 2]}


# -- revision rules ----------------------------------------------------------------------------------


def test_next_revision_applies_and_reports_the_move() -> None:
    cache = _loaded_cache()
    result = cache.apply(_message(11, "set_label", label="production", version=3, prev=1), _no_fetch)
    assert result.action is Action.APPLIED
    assert result.events == (ChangeEvent("p", "production", 3, 1, 11),)
    assert cache.rev == 11


def test_messages_from_before_the_snapshot_are_ignored() -> None:
    cache = _loaded_cache(rev=10)
    for rev in (8, 9, 10):
        result = cache.apply(_message(rev, "set_label", label="production", version=3), _no_fetch)
        assert result.action is Action.IGNORED
    assert cache.view["production"]["p"].version == 1
    assert cache.rev == 10


def test_a_gap_asks_for_a_resync_and_changes_nothing() -> None:
    cache = _loaded_cache(rev=10)
    result = cache.apply(_message(12, "set_label", label="production", version=3), _no_fetch)
    assert result.action is Action.RESYNC
    assert "gap" in (result.reason or "")
    assert cache.rev == 10
    assert cache.view["production"]["p"].version == 1


def test_a_revision_going_backwards_after_a_patch_asks_for_a_resync() -> None:
    cache = _loaded_cache(rev=10)
    assert cache.apply(_message(11, "set_label", label="staging", version=3), _no_fetch).action is Action.APPLIED
    for rev in (11, 5):
        result = cache.apply(_message(rev, "set_label", label="production", version=2), _no_fetch)
        assert result.action is Action.RESYNC
        assert "went back" in (result.reason or "")
    assert cache.view["production"]["p"].version == 1


def test_after_a_resync_old_messages_are_ignored_again() -> None:
    cache = _loaded_cache(rev=10)
    cache.apply(_message(11, "set_label", label="staging", version=3), _no_fetch)
    cache.replace(20, {"p": {"production": 2, "latest": 3}})
    assert cache.apply(_message(15, "delete_label", label="production"), _no_fetch).action is Action.IGNORED
    assert cache.apply(_message(21, "delete_label", label="production"), _no_fetch).action is Action.APPLIED
    assert "p" not in cache.view.get("production", {})
    assert "p" not in cache.view.get(None, {})


def test_a_message_before_any_state_asks_for_a_resync() -> None:
    cache = Cache("production")
    assert cache.apply(_message(1, "create_prompt"), _no_fetch).action is Action.RESYNC


def test_a_version_not_cached_is_fetched_once() -> None:
    cache = _loaded_cache()
    fetched: list[tuple[str, int]] = []

    def fetch(name: str, number: int) -> CachedVersion | None:
        fetched.append((name, number))
        return _version(number, "four")

    assert cache.apply(_message(11, "add_version", version=4), fetch).action is Action.APPLIED
    assert cache.apply(_message(12, "set_label", label="production", version=4), fetch).action is Action.APPLIED
    assert fetched == [("p", 4)]
    assert cache.view["latest"]["p"].prompt_text == "four"
    assert cache.view["production"]["p"] is cache.view["latest"]["p"]


@pytest.mark.parametrize(
    "message",
    [
        _message(11, "set_label", label="production", version=None),
        _message(11, "set_label", label=None, version=2),
        _message(11, "add_version", version=None),
        _message(11, "set_label", prompt="bad name", label="production", version=2),
        _message(11, "set_label", label="latest", version=2),
    ],
)
def test_a_message_that_cannot_be_applied_asks_for_a_resync(message: ChangeMessage) -> None:
    cache = _loaded_cache()
    assert cache.apply(message, _no_fetch).action is Action.RESYNC
    assert cache.rev == 10


def test_a_message_pointing_at_a_missing_version_asks_for_a_resync() -> None:
    cache = _loaded_cache()
    result = cache.apply(_message(11, "set_label", label="production", version=7), lambda name, number: None)
    assert result.action is Action.RESYNC
    assert cache.view["production"]["p"].version == 1


def test_create_prompt_and_delete_label_events() -> None:
    cache = _loaded_cache()
    assert cache.apply(_message(11, "create_prompt", prompt="new"), _no_fetch).events == (
        ChangeEvent("new", None, None, None, 11),
    )
    assert cache.pointers["new"] == {}
    assert all("new" not in by_name for by_name in cache.view.values())
    assert cache.apply(_message(12, "delete_label", label="staging", prev=2), _no_fetch).events == (
        ChangeEvent("p", "staging", None, 2, 12),
    )


# -- against the real registry code on fakeredis ------------------------------------------------------


@pytest.fixture
def fake_registry() -> Iterator[RedisPromptRegistry]:
    registry = RedisPromptRegistry(fakeredis.FakeRedis(), namespace="unit")
    yield registry
    registry.close()


def _subscribe(registry: RedisPromptRegistry) -> redis.client.PubSub:
    pubsub: redis.client.PubSub = registry.redis.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(registry.keys.channel)
    assert pubsub.get_message(timeout=0.1) is None  # consumes the confirmation
    return pubsub


def _drain(pubsub: redis.client.PubSub) -> list[ChangeMessage]:
    messages = []
    while (raw := pubsub.get_message(timeout=0.05)) is not None:
        messages.append(decode(raw["data"]))
    return messages


def _load(cache: Cache, registry: RedisPromptRegistry) -> None:
    rev, pointers = read_state(registry.redis, registry.keys, cache.pointers)
    for (name, _n), version in fetch_versions(registry.redis, registry.keys, cache.missing_versions(pointers)).items():
        assert version is not None
        cache.add_version(name, version)
    cache.replace(rev, pointers)


def _fetcher(registry: RedisPromptRegistry):  # type: ignore[no-untyped-def]
    def fetch(name: str, number: int) -> CachedVersion | None:
        return fetch_versions(registry.redis, registry.keys, [(name, number)])[name, number]

    return fetch


def _seed(registry: RedisPromptRegistry) -> None:
    registry.create_prompt("movie-critic")
    registry.add_version("movie-critic", "As a movie critic, do you like {{movie}}?")
    registry.add_version("movie-critic", "As a {{level}} critic, do you like {{movie}}?")
    registry.set_label("movie-critic", "production", 1)
    registry.set_label("movie-critic", "staging", 2)
    registry.create_prompt("empty")


def test_read_state_is_every_label_and_latest_at_the_registry_revision(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    rev, pointers = read_state(fake_registry.redis, fake_registry.keys)
    assert rev == int(fake_registry.redis.get(fake_registry.keys.rev))
    assert pointers == {"movie-critic": {"production": 1, "staging": 2, "latest": 2}, "empty": {}}


def test_read_state_with_a_wrong_hint_still_reads_the_truth(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    hint = {"movie-critic": ["gone", "latest"], "ghost": ["production"]}
    assert read_state(fake_registry.redis, fake_registry.keys, hint)[1] == {
        "movie-critic": {"production": 1, "staging": 2, "latest": 2},
        "empty": {},
    }


def test_read_state_of_an_empty_registry(fake_registry: RedisPromptRegistry) -> None:
    assert read_state(fake_registry.redis, fake_registry.keys) == (0, {})


def test_fetch_versions_parses_hashes_and_reports_missing_ones(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    got = fetch_versions(fake_registry.redis, fake_registry.keys, [("movie-critic", 2), ("movie-critic", 9)])
    assert got[("movie-critic", 9)] is None
    found = got[("movie-critic", 2)]
    assert found is not None
    assert found == fake_registry.get_version("movie-critic", version=2)
    assert found.variables == {"level", "movie"}


def test_messages_applied_in_order_track_the_registry(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    pubsub = _subscribe(fake_registry)
    cache = Cache("production")
    _load(cache, fake_registry)
    fake_registry.add_version("movie-critic", "v3 {{movie}}")
    fake_registry.set_label("movie-critic", "production", 3)
    fake_registry.rollback("movie-critic", "production")
    fake_registry.delete_label("movie-critic", "staging")
    fake_registry.create_prompt("later")
    fake_registry.add_version("later", "hello")
    events: list[ChangeEvent] = []
    for message in _drain(pubsub):
        result = cache.apply(message, _fetcher(fake_registry))
        assert result.action is Action.APPLIED
        events.extend(result.events)
    assert (cache.rev, cache.pointers) == read_state(fake_registry.redis, fake_registry.keys)
    assert ChangeEvent("movie-critic", "production", 1, 3, cache.rev - 3) in events
    assert cache.view["latest"]["later"].prompt_text == "hello"


def test_messages_published_between_subscribe_and_snapshot_are_ignored(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    pubsub = _subscribe(fake_registry)
    fake_registry.set_label("movie-critic", "production", 2)  # lands in the socket and in the snapshot
    cache = Cache("production")
    _load(cache, fake_registry)
    fake_registry.set_label("movie-critic", "staging", 1)
    actions = [cache.apply(m, _fetcher(fake_registry)).action for m in _drain(pubsub)]
    assert actions == [Action.IGNORED, Action.APPLIED]
    assert (cache.rev, cache.pointers) == read_state(fake_registry.redis, fake_registry.keys)


def test_a_lost_message_is_a_gap_and_the_resync_converges(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    pubsub = _subscribe(fake_registry)
    cache = Cache("production")
    _load(cache, fake_registry)
    for version in (2, 1, 2):
        fake_registry.set_label("movie-critic", "production", version)
    lost, *rest = _drain(pubsub)
    assert lost.version == 2
    result = cache.apply(rest[0], _fetcher(fake_registry))
    assert result.action is Action.RESYNC
    _load(cache, fake_registry)
    assert cache.apply(rest[1], _fetcher(fake_registry)).action is Action.IGNORED
    assert (cache.rev, cache.pointers) == read_state(fake_registry.redis, fake_registry.keys)
    assert cache.view[None]["movie-critic"].version == 2


def test_a_registry_restored_to_an_older_revision_is_taken_whole(fake_registry: RedisPromptRegistry) -> None:
    _seed(fake_registry)
    cache = Cache("production")
    _load(cache, fake_registry)
    before = cache.rev
    # Restored from an older backup: fewer writes, so the revision goes backwards.
    fake_registry.redis.flushall()
    fake_registry.create_prompt("movie-critic")
    fake_registry.add_version("movie-critic", "As a movie critic, do you like {{movie}}?")
    fake_registry.set_label("movie-critic", "production", 1)
    rev, pointers = read_state(fake_registry.redis, fake_registry.keys)
    assert rev < before
    events = cache.replace(rev, pointers)
    assert cache.rev == rev
    assert cache.pointers == {"movie-critic": {"production": 1, "latest": 1}}
    assert all("empty" not in by_name for by_name in cache.view.values())
    assert ChangeEvent("movie-critic", "staging", None, 2, rev) in (events or [])
