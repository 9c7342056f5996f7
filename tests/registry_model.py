"""The registry's documented contract as a model, and the hypothesis state machine that runs random
operation sequences against a backend and the model side by side (``tests/test_properties.py``, and
the restore steps of ``tests/test_properties_restore.py``).

The example counts are bounded for CI (``PROMPTREG_PROPERTY_EXAMPLES`` raises them for a longer
local hunt, ``PROMPTREG_PROPERTY_SHRINK=1`` shrinks a failure to a minimal sequence).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from promptreg.registry import (
    InvalidInputError,
    InvalidNameError,
    LabelConflictError,
    LabelNotFoundError,
    PromptExistsError,
    PromptNotFoundError,
    PromptRegistry,
    RollbackUnavailableError,
    VersionNotFoundError,
)

EXAMPLES = int(os.environ.get("PROMPTREG_PROPERTY_EXAMPLES", "30"))
STEPS = 40

# Shrinking a failing run of the machine can take hypothesis's full 300 s budget (every step reads the
# whole state back); CI reports the unshrunk failing sequence, PROMPTREG_PROPERTY_SHRINK=1 shrinks it.
PHASES = (
    tuple(Phase)
    if os.environ.get("PROMPTREG_PROPERTY_SHRINK") == "1"
    else tuple(p for p in Phase if p is not Phase.shrink)
)

MACHINE_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    database=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

NAMES = ("critic", "team/summary")
LABELS = ("production", "production", "staging", "latest")  # "latest" is reserved: every label write refuses it
MAX_VERSION = 3  # versions asked for range over 1..MAX_VERSION, so both hits and misses are common

texts = st.text(st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Zs"]), max_size=24)
names = st.sampled_from(NAMES)
labels = st.sampled_from(LABELS)
numbers = st.integers(1, MAX_VERSION)
expected_versions = st.none() | st.integers(0, MAX_VERSION)


# -- the model ----------------------------------------------------------------------------------


@dataclass
class ModelPrompt:
    """One prompt as the contract describes it."""

    versions: list[str] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    previous: dict[str, int] = field(default_factory=dict)
    """Where each label pointed before its last move: rollback's target."""
    history: list[tuple[str, str | None, int | None, int | None]] = field(default_factory=list)
    """(action, label, version, previous_version) of every write, oldest first."""


class Model:
    """The registry's contract in a few dicts; each write returns the error it must raise, if any."""

    def __init__(self) -> None:
        self.prompts: dict[str, ModelPrompt] = {}
        self.rev = 0

    def _commit(
        self, prompt: ModelPrompt, action: str, label: str | None, version: int | None, prev: int | None
    ) -> None:
        self.rev += 1
        prompt.history.append((action, label, version, prev))

    def create(self, name: str) -> type[Exception] | None:
        if name in self.prompts:
            return PromptExistsError
        self.prompts[name] = ModelPrompt()
        self._commit(self.prompts[name], "create_prompt", None, None, None)
        return None

    def add_version(self, name: str, text: str) -> type[Exception] | None:
        prompt = self.prompts.get(name)
        if prompt is None:
            return PromptNotFoundError
        prompt.versions.append(text)
        self._commit(prompt, "add_version", None, len(prompt.versions), None)
        return None

    def set_label(self, name: str, label: str, version: int, expected: int | None) -> type[Exception] | None:
        if label == "latest":
            return InvalidNameError
        prompt = self.prompts.get(name)
        if prompt is None:
            return PromptNotFoundError
        if version > len(prompt.versions):
            return VersionNotFoundError
        current = prompt.labels.get(label)
        if expected is not None and (
            (expected == 0 and current is not None) or (expected != 0 and current != expected)
        ):
            return LabelConflictError
        if current is None:
            prompt.previous.pop(label, None)
        elif current != version:  # re-pointing at the same version keeps the rollback target
            prompt.previous[label] = current
        prompt.labels[label] = version
        self._commit(prompt, "set_label", label, version, current)
        return None

    def delete_label(self, name: str, label: str, expected: int | None) -> type[Exception] | None:
        if label == "latest":
            return InvalidNameError
        if expected == 0:  # "must not exist" makes no sense for a delete: refused as input
            return InvalidInputError
        prompt = self.prompts.get(name)
        if prompt is None:
            return PromptNotFoundError
        current = prompt.labels.get(label)
        if current is None:
            return LabelNotFoundError
        if expected is not None and expected != current:
            return LabelConflictError
        del prompt.labels[label]
        prompt.previous[label] = current
        self._commit(prompt, "delete_label", label, None, current)
        return None

    def rollback(self, name: str, label: str) -> type[Exception] | None:
        if label == "latest":
            return InvalidNameError
        prompt = self.prompts.get(name)
        if prompt is None:
            return PromptNotFoundError
        target = prompt.previous.get(label)
        if target is None:
            return RollbackUnavailableError if label in prompt.labels else LabelNotFoundError
        current = prompt.labels.get(label)
        if current is None:
            del prompt.previous[label]
        else:
            prompt.previous[label] = current
        prompt.labels[label] = target
        self._commit(prompt, "rollback", label, target, current)
        return None

    def resolve(self, name: str, label: str | None, version: int | None) -> int | type[Exception]:
        """The version number ``get_version`` must return, or the error it must raise."""
        prompt = self.prompts.get(name)
        if prompt is None:
            return PromptNotFoundError
        if version is not None:
            return version if version <= len(prompt.versions) else VersionNotFoundError
        if label == "latest":
            return len(prompt.versions) or LabelNotFoundError
        return prompt.labels.get(str(label)) or LabelNotFoundError


# -- the machine --------------------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> tuple[Any, type[Exception] | None]:
    """``(result, None)`` or ``(None, type of the promptreg error raised)``."""
    try:
        return call(), None
    except (
        InvalidInputError,
        LabelConflictError,
        LabelNotFoundError,
        PromptExistsError,
        PromptNotFoundError,
        RollbackUnavailableError,
        VersionNotFoundError,
    ) as exc:
        return None, type(exc)


class RegistryMachine(RuleBasedStateMachine):
    """Random operations on one fresh registry and on the model, compared after every step."""

    make_registry: Callable[[], PromptRegistry]
    """Set by :func:`machine_for`: a new, empty registry of the backend under test."""
    cleanup: Callable[[PromptRegistry], None] = staticmethod(lambda registry: None)

    def __init__(self) -> None:
        super().__init__()
        self.registry = self.make_registry()
        self.model = Model()

    def teardown(self) -> None:
        self.cleanup(self.registry)
        self.registry.close()

    def check_write(self, call: Callable[[], Any], expected_error: type[Exception] | None) -> Any:
        result, error = outcome(call)
        assert error is expected_error, f"expected {expected_error}, got {error}"
        return result

    @initialize(versions=st.lists(texts, min_size=1, max_size=MAX_VERSION))
    def first_prompt(self, versions: list[str]) -> None:
        # Most runs start with a prompt that has versions, so more steps reach the label rules.
        self.create_prompt(NAMES[0], None)
        for text in versions:
            self.add_version(NAMES[0], text)

    @rule(name=names, description=st.none() | texts)
    def create_prompt(self, name: str, description: str | None) -> None:
        self.check_write(lambda: self.registry.create_prompt(name, description=description), self.model.create(name))

    @rule(name=names, text=texts)
    def add_version(self, name: str, text: str) -> None:
        version = self.check_write(lambda: self.registry.add_version(name, text), self.model.add_version(name, text))
        if version is not None:
            assert (version.version, version.prompt_text) == (len(self.model.prompts[name].versions), text)

    # Label rules draw mostly from the model's state (existing prompts, versions, current label
    # positions) and sometimes anything at all: deep label histories are then common, misses too.

    def draw_name(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.model.prompts)) | names if self.model.prompts else names)

    def draw_version(self, data: st.DataObject, name: str) -> int:
        count = len(self.model.prompts[name].versions) if name in self.model.prompts else 0
        return data.draw(st.integers(1, count) | numbers if count else numbers)

    def draw_expected(self, data: st.DataObject, name: str, label: str) -> int | None:
        current = self.model.prompts[name].labels.get(label, 0) if name in self.model.prompts else 0
        return data.draw(st.none() | st.just(current) | expected_versions)

    @rule(data=st.data(), label=labels)
    def set_label(self, data: st.DataObject, label: str) -> None:
        name = self.draw_name(data)
        self.move(name, label, self.draw_version(data, name), self.draw_expected(data, name, label))

    def move(self, name: str, label: str, version: int, expected: int | None) -> None:
        before = self.model.prompts[name].labels.get(label) if name in self.model.prompts else None
        event = self.check_write(
            lambda: self.registry.set_label(name, label, version, expected_version=expected),
            self.model.set_label(name, label, version, expected),
        )
        if event is not None:
            assert (event.rev, event.version, event.previous_version) == (self.model.rev, version, before)

    @rule(data=st.data(), label=st.sampled_from(LABELS[:-1]))
    def promote(self, data: st.DataObject, label: str) -> None:
        """set_label with compare-and-set on where the label is now (what `sync` and `import` do)."""
        name = self.draw_name(data)
        current = self.model.prompts[name].labels.get(label, 0) if name in self.model.prompts else 0
        self.move(name, label, self.draw_version(data, name), current)

    @precondition(lambda self: any(prompt.labels for prompt in self.model.prompts.values()))
    @rule(data=st.data())
    def repoint(self, data: st.DataObject) -> None:
        """set_label to where the label already is: the documented edge case (the rollback target stays)."""
        name = data.draw(st.sampled_from(sorted(n for n, p in self.model.prompts.items() if p.labels)))
        label = data.draw(st.sampled_from(sorted(self.model.prompts[name].labels)))
        self.move(name, label, self.model.prompts[name].labels[label], data.draw(st.none() | expected_versions))

    @rule(data=st.data(), label=labels)
    def delete_label(self, data: st.DataObject, label: str) -> None:
        name = self.draw_name(data)
        expected = self.draw_expected(data, name, label)
        event = self.check_write(
            lambda: self.registry.delete_label(name, label, expected_version=expected),
            self.model.delete_label(name, label, expected),
        )
        if event is not None:
            assert (event.rev, event.version) == (self.model.rev, None)

    @rule(data=st.data(), label=labels)
    def rollback(self, data: st.DataObject, label: str) -> None:
        name = self.draw_name(data)
        event = self.check_write(lambda: self.registry.rollback(name, label), self.model.rollback(name, label))
        if event is not None:
            assert (event.rev, event.version) == (self.model.rev, self.model.prompts[name].labels[label])

    @rule(data=st.data(), label=labels, version=st.none() | numbers, with_history=st.booleans())
    def read(self, data: st.DataObject, label: str | None, version: int | None, with_history: bool) -> None:
        """get_version by label, by number or latest (both given: refused); sometimes history too."""
        name = self.draw_name(data)
        label = data.draw(st.none() | st.just(label))
        if label is not None and version is not None:
            _, error = outcome(lambda: self.registry.get_version(name, label=label, version=version))
            assert error is InvalidInputError
        else:
            label = "latest" if label is None and version is None else label
            expected = self.model.resolve(name, label, version)
            found, error = outcome(lambda: self.registry.get_version(name, label=label, version=version))
            if isinstance(expected, int):
                assert error is None and found is not None, error
                wanted = (expected, self.model.prompts[name].versions[expected - 1])
                assert (found.version, found.prompt_text) == wanted
            else:
                assert error is expected, f"expected {expected}, got {error}"
        if with_history:
            self.check_history(name)

    def check_history(self, name: str) -> None:
        events, error = outcome(lambda: self.registry.history(name))
        prompt = self.model.prompts.get(name)
        if prompt is None:
            assert error is PromptNotFoundError
            return
        assert [(e.action, e.label, e.version, e.previous_version) for e in events] == prompt.history
        revs = [e.rev for e in events]
        assert revs == sorted(set(revs)), revs

    @invariant()
    def same_visible_state(self) -> None:
        assert sorted(self.registry.list_prompts()) == sorted(self.model.prompts)
        for name in NAMES:
            stored = self.registry.get_prompt(name)
            model = self.model.prompts.get(name)
            if model is None:
                assert stored is None
                continue
            assert stored is not None
            assert [v.prompt_text for v in stored.versions] == model.versions
            assert [v.version for v in stored.versions] == list(range(1, len(model.versions) + 1))
            assert dict(stored.labels) == model.labels


def machine_for(make: Callable[[], PromptRegistry], cleanup: Callable[[PromptRegistry], None] | None = None) -> type:
    """A :class:`RegistryMachine` whose every run starts on a new registry from ``make``."""
    attributes: dict[str, Any] = {"make_registry": staticmethod(make)}
    if cleanup is not None:
        attributes["cleanup"] = staticmethod(cleanup)
    return type("Machine", (RegistryMachine,), attributes)
