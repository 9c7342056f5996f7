"""Helpers shared by the client, truth, history and HA tests (not a test module: nothing to collect).

Seeding and convergence checks for a ``PromptClient`` against a registry (:func:`seed`,
:func:`assert_converged`, :func:`client_matches`), a reader thread that must never fail or go
backwards (:class:`Reader`), and the history-identity checks (:class:`Watch`, :func:`serves`) on
their own prompt, :data:`HISTORY_NAME`.
"""

from __future__ import annotations

import threading
import time

import pytest

from promptreg.client import ClientState, PromptClient
from promptreg.registry import (
    JsonFilePromptRegistry,
    LabelNotFoundError,
    PromptNotFoundError,
    PromptRegistry,
    RedisPromptRegistry,
)
from tests.redis_server import wait_until

NAME = "movie-critic"
LABEL = "production"
PUSH_BOUND = 5.0
"""Seconds a pushed change may take to show (generous: the machine is shared; speed is benchmarked)."""

HISTORY_NAME = "greeting"
"""The prompt of the history-identity tests (:class:`Watch`, :func:`serves`), under :data:`LABEL`."""

LABELS = (LABEL, "staging", "latest")
"""The labels :func:`client_matches` compares, ``latest`` included."""


# -- a client against a registry -------------------------------------------------------------------


def registry_rev(registry: PromptRegistry) -> int:
    """The registry's revision (Redis counter or the JSON file's ``rev``)."""
    if isinstance(registry, RedisPromptRegistry):
        return int(registry.redis.get(registry.keys.rev) or 0)
    assert isinstance(registry, JsonFilePromptRegistry)
    return registry.load_state().rev


def assert_converged(prompts: PromptClient, registry: PromptRegistry, timeout: float = 15.0) -> None:
    """The client is live at the registry's revision and resolves every label and ``latest`` as it does."""
    assert wait_until(
        lambda: prompts.status().state is ClientState.LIVE and prompts.status().rev == registry_rev(registry),
        timeout,
    ), f"client did not converge: {prompts.status()} vs registry rev {registry_rev(registry)}"
    for name in registry.list_prompts():
        prompt = registry.get_prompt(name)
        assert prompt is not None
        for label, number in prompt.labels.items():
            assert prompts.get(name, label).version == number, (name, label)
        if prompt.latest is None:
            with pytest.raises(LabelNotFoundError):
                prompts.get(name, "latest")
        else:
            assert prompts.get(name, "latest") == prompt.latest


def seed(registry: PromptRegistry, versions: int = 3, label_at: int = 1) -> None:
    """``movie-critic`` with ``versions`` versions and ``production`` at ``label_at``."""
    registry.create_prompt(NAME, description="reviews", author="alice")
    for n in range(1, versions + 1):
        registry.add_version(NAME, f"v{n}: as a {{{{level}}}} critic, review {{{{movie}}}}", author="alice")
    registry.set_label(NAME, LABEL, label_at)


def client_matches(prompts: PromptClient, registry: PromptRegistry) -> bool:
    """The client is ``live`` at the registry's revision and resolves every prompt and label of
    :data:`LABELS` to the registry's very version (text, time, author...), including labels the
    registry does not have."""
    status = prompts.status()
    if status.state is not ClientState.LIVE or status.rev != registry_rev(registry):
        return False
    names = registry.list_prompts()
    for name in names:
        prompt = registry.get_prompt(name)
        assert prompt is not None
        for label in LABELS:
            expected = prompt.get_version_by_label(label)
            try:
                got = prompts.get(name, label)
            except LabelNotFoundError:
                got = None
            if got != expected:  # the whole version: a restore may give a number another text
                return False
    for extra in ("other", "third"):
        if extra not in names:
            try:
                prompts.get(extra, "latest")
                return False
            except PromptNotFoundError:
                pass
            except LabelNotFoundError:
                return False
    return True


class Reader:
    """A thread calling ``get(name, label)`` in a loop while a test does something nasty.

    Records any exception and any time the version number (only ever moved up by these tests) or
    the status revision went down. Use as a context manager; check :meth:`assert_clean` after.
    """

    def __init__(self, prompts: PromptClient, name: str = NAME, label: str = LABEL) -> None:
        self.prompts = prompts
        self.name = name
        self.label = label
        self.errors: list[BaseException] = []
        self.backwards: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-reader", daemon=True)

    def _run(self) -> None:
        last_version = 0
        last_rev = 0
        while not self._stop.is_set():
            try:
                version = self.prompts.get(self.name, self.label).version
                rev = self.prompts.status().rev
            except BaseException as exc:
                self.errors.append(exc)
                return
            if version < last_version:
                self.backwards.append(f"version {last_version} -> {version}")
            if rev < last_rev:
                self.backwards.append(f"rev {last_rev} -> {rev}")
            last_version, last_rev = version, rev
            self.reads += 1
            time.sleep(0.0005)  # leave the GIL to the listener; not a synchronisation

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def assert_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.backwards, self.backwards[:5]
        assert self.reads > 0


# -- history identity ------------------------------------------------------------------------------


class Watch:
    """Samples a client on a thread; records every lookup that served ``lost`` while ``live``."""

    def __init__(self, prompts: PromptClient, lost: str) -> None:
        self.prompts, self.lost = prompts, lost
        self.wrong: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            status = self.prompts.status()
            text = self.prompts.get(HISTORY_NAME, LABEL).prompt_text
            if text == self.lost and status.state is ClientState.LIVE and self.prompts.status().state is status.state:
                self.wrong.append(f"rev {status.rev}: {text!r}")
            time.sleep(0.002)

    def stop(self) -> list[str]:
        self._stop.set()
        self._thread.join(5)
        return self.wrong


def serves(prompts: PromptClient, text: str) -> bool:
    return prompts.status().state is ClientState.LIVE and prompts.get(HISTORY_NAME, LABEL).prompt_text == text
