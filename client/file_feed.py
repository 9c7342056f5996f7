"""The ``file://`` feed: the JSON-file registry watched by its stat, reloaded whole on a change."""

from __future__ import annotations

import os

from promptreg.client.cached_version import CachedVersion, VersionRow, cached_batch, cached_from_model
from promptreg.client.feeds import Backoff, Feed, FeedContext, empty_registry
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.models import Prompt
from promptreg.registry.rollouts import points_of


class FileFeed(Feed):
    """Watches a ``file://`` registry: stat every ``interval`` seconds, reload the whole file on change."""

    kind = "file"

    def __init__(self, registry: JsonFilePromptRegistry, context: FeedContext, *, interval: float = 0.2) -> None:
        super().__init__(context, registry.path.name)
        self.registry = registry
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None

    def forked(self, context: FeedContext) -> FileFeed:
        """A new watcher for a forked child."""
        return FileFeed(self.registry, context, interval=self.interval)

    def fetch_version(self, name: str, number: int) -> CachedVersion:
        """Read one version from the file."""
        return cached_from_model(self.registry.get_version(name, version=number))

    def _signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.registry.path)
        except FileNotFoundError:
            return (0, 0, 0)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _run_once(self, backoff: Backoff) -> None:
        while not self._stop.is_set():
            signature = self._signature()
            if signature != self._seen:
                self._reload()
                self._seen = signature
                backoff.reset()
            self.first_attempt.set()
            self.context.idle()
            self._stop.wait(self.interval)

    def _reload(self) -> None:
        state = self.registry.load_state()
        cache = self.context.cache
        cache.fetch_partial = lambda name, number: _version_of(state.prompts.get(name), number)
        pointers: dict[str, dict[str, int]] = {}
        rollouts: dict[str, dict[str, tuple[int, int]]] = {}
        # Every version afresh: the file may have been replaced by another history (a restore), so
        # a version number cached before may now stand for another text.
        pairs: list[tuple[str, int]] = []
        rows: list[VersionRow] = []
        for name, prompt in state.prompts.items():
            labels = dict(prompt.labels)
            if prompt.versions:
                labels["latest"] = prompt.versions[-1].version
            if prompt.rollouts:
                rollouts[name] = {label: (r.version, points_of(r.percent)) for label, r in prompt.rollouts.items()}
            for number in {*labels.values(), *(r.version for r in prompt.rollouts.values())}:
                found = prompt.get_version_by_number(number)
                if found is not None:
                    pairs.append((name, number))
                    rows.append((number, found.prompt_text, found.created_at, found.author, found.message,
                                 found.metadata, found.messages, found.config))  # fmt: skip
            pointers[name] = labels
        versions = dict(zip(pairs, cached_batch(rows), strict=True))
        empty = empty_registry(state.rev, pointers, cache)
        if empty is not None:
            self._hold(empty)
            return
        before, before_rollouts = cache.pointers, cache.rollouts
        cache.replace(state.rev, pointers, versions=versions, events=False, rollouts=rollouts)
        self._trusted()
        self.context.status.resynced()
        self.context.status.live()
        self._replaced(before, before_rollouts)


def _version_of(prompt: Prompt | None, number: int) -> CachedVersion | None:
    """Version ``number`` of ``prompt``, cached (a partial included at a version no label points at)."""
    found = None if prompt is None else prompt.get_version_by_number(number)
    return None if found is None else cached_from_model(found)
