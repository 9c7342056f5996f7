"""Label pointers and the changes between them: pure functions shared by the cache and the readers.

:data:`Pointers` is ``name -> {label: version number}``; :class:`StatePointers` is a full state's,
with the write ids that place it in the registry's history; :func:`pointer_change` is the rule a
change message (or an audit entry replayed) follows; :func:`diff_pointers` turns two states into the
:class:`ChangeEvent` s callbacks receive. No I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from promptreg.registry.errors import InvalidInputError
from promptreg.registry.rollouts import percent_of
from promptreg.registry.validation import LATEST, validate_label, validate_name
from promptreg.registry.wire import GOVERNANCE_OPERATIONS, ROLLOUT_OPERATIONS, ChangeMessage

NO_MOVES = frozenset({"create_prompt", "set_compatibility", *GOVERNANCE_OPERATIONS})
"""Writes that move no label: the client only advances its revision."""

Pointers = dict[str, dict[str, int]]
"""``name -> {label: version number}``; ``latest`` is present when the prompt has a version."""
Rollouts = dict[str, dict[str, tuple[int, int]]]
"""``name -> {label: (candidate version, share in basis points)}``: the rollouts running (the label's
stable version is in :data:`Pointers`)."""


class StatePointers(dict[str, dict[str, int]]):
    """The pointers of a full state read (:data:`Pointers`), with :attr:`history`: the id of the
    write that made each revision the read saw (``''``: a revision without one; a revision not in it
    is unknown). :meth:`Cache.missing_versions` and :meth:`Cache.replace` use it to tell whether the
    registry's history is still the one the cache followed (DESIGN.md section 3, rule 2b)."""

    __slots__ = ("history", "rollouts")

    def __init__(self, pointers: Pointers, history: dict[int, str], rollouts: Rollouts | None = None) -> None:
        super().__init__(pointers)
        self.history = history
        self.rollouts: Rollouts = {} if rollouts is None else rollouts
        """The rollouts running at the state's revision (:data:`Rollouts`)."""


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One change the client applied, as passed to :meth:`promptreg.PromptClient.on_change` callbacks.

    ``label`` is the label that moved (``latest`` when a version was added), or ``None`` when a prompt
    appeared. ``version`` is where the label points now (``None``: deleted) and ``previous_version``
    where it pointed before (``None``: it did not exist). ``rev`` is the registry revision the cache
    holds after the change. ``rollout`` is the label's running rollout after the change,
    ``(candidate, percent)`` (``None``: none); a rollout started or changed is an event whose
    ``version`` and ``previous_version`` are both the label's (stable) version. ``at`` is when the
    registry made the write (seconds since the Unix epoch; ``None`` for the events of a full state
    read, which say what changed, not when); it takes no part in comparing events.
    """

    name: str
    label: str | None
    version: int | None
    previous_version: int | None
    rev: int
    at: float | None = field(default=None, compare=False)
    rollout: tuple[int, float] | None = None


def with_change(labels: Mapping[str, int] | None, label: str | None, number: int | None) -> dict[str, int]:
    """A new dict of a prompt's labels after a change (:func:`pointer_change`); ``labels`` is left as it is."""
    changed = dict(labels) if labels is not None else {}
    if label is not None:
        if number is None:
            changed.pop(label, None)
        else:
            changed[label] = number
    return changed


def pointer_change(message: ChangeMessage, known: Mapping[str, int] | None) -> tuple[str | None, int | None]:
    """(label, number) a message sets; number ``None`` deletes; label ``None``: prompt only.

    ``known`` is the prompt's current labels: names and labels already cached need no validation.
    """
    if known is None:
        validate_name(message.prompt)
    op = message.op
    if op in NO_MOVES:
        return None, None
    if op == "add_version":
        if message.version is None:
            raise InvalidInputError("add_version message without a version")
        return LATEST, message.version
    if message.label is None:
        raise InvalidInputError(f"{op} message without a label")
    if known is None or message.label not in known or message.label == LATEST:
        validate_label(message.label, settable=True)
    if op == "delete_label":
        return message.label, None
    if message.version is None:
        raise InvalidInputError(f"{op} message without a version")
    return message.label, message.version


def _diff_prompt(
    name: str, old: Mapping[str, int] | None, new: Mapping[str, int] | None, rev: int
) -> list[ChangeEvent]:
    events: list[ChangeEvent] = []
    if old is None and new is not None:
        events.append(ChangeEvent(name, None, None, None, rev))
    before = old or {}
    after = new or {}
    for label in sorted(before.keys() | after.keys()):
        if before.get(label) != after.get(label):
            events.append(ChangeEvent(name, label, after.get(label), before.get(label), rev))
    return events


def diff_pointers(
    old: Mapping[str, Mapping[str, int]], new: Mapping[str, Mapping[str, int]], rev: int
) -> list[ChangeEvent]:
    """The events that turn the pointers ``old`` into ``new`` (at revision ``rev``), by name then label."""
    events: list[ChangeEvent] = []
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name), new.get(name)
        if before != after:
            events.extend(_diff_prompt(name, before, after, rev))
    return events


SHARED_MAX = 4096
"""The most distinct label maps :func:`share_equal_maps` remembers during one read."""


def share_equal_maps(
    pointers: dict[str, dict[str, int]], names: Iterable[str], shared: dict[Any, dict[str, int]]
) -> None:
    """Give the prompts ``names`` whose label maps are equal one dict between them (``shared``: the
    maps seen so far in this read, kept by the caller across calls).

    Most prompts of a registry point the same labels at the same numbers (``production`` at 1,
    ``latest`` at 1): one dict each cost 200 bytes, 20 MB at 100k prompts. Sharing is safe because a
    prompt's label map is never changed in place once read, only replaced (:func:`with_change`).
    """
    for name in names:
        labels = pointers[name]
        key = tuple(labels.items())
        found = shared.get(key)
        if found is not None:
            pointers[name] = found
        elif len(shared) < SHARED_MAX:
            shared[key] = labels


def diff_rollouts(
    old: Rollouts, new: Rollouts, pointers: Mapping[str, Mapping[str, int]], rev: int,
    moved: list[ChangeEvent] | None = None,
) -> list[ChangeEvent]:  # fmt: skip
    """The events of the rollouts that started, changed or ended between two full states (each with
    the label's version now as ``version`` and ``previous_version``). ``moved`` are the label moves
    between the same states (:func:`diff_pointers`): a label that moved gets no event of its own
    here, its move's event says what runs there now (a promotion is one move)."""
    events: list[ChangeEvent] = []
    moves = {(e.name, e.label): index for index, e in enumerate(moved or [])}
    for name in sorted(old.keys() | new.keys()):
        before, after = old.get(name, {}), new.get(name, {})
        if before == after:
            continue
        for label in sorted(before.keys() | after.keys()):
            now = after.get(label)
            if before.get(label) == now:
                continue
            rollout = None if now is None else (now[0], percent_of(now[1]))
            index = moves.get((name, label))
            if index is not None and moved is not None:
                moved[index] = replace(moved[index], rollout=rollout)
                continue
            stable = pointers.get(name, {}).get(label)
            events.append(ChangeEvent(name, label, stable, stable, rev, None, rollout))
    return events


def referenced_pairs(
    pointers: Mapping[str, Mapping[str, int]], cached: Mapping[tuple[str, int], object] | None = None
) -> set[tuple[str, int]]:
    """Every ``(name, version)`` a state serves: what its labels point at, and the candidate of each
    rollout (:attr:`StatePointers.rollouts`); those in ``cached`` left out."""
    skip = cached or {}
    pairs = {(n, v) for n, labels in pointers.items() for v in labels.values() if (n, v) not in skip}
    rollouts: Rollouts = getattr(pointers, "rollouts", None) or {}
    pairs.update((n, c) for n, labels in rollouts.items() for c, _ in labels.values() if (n, c) not in skip)
    return pairs


def message_events(
    message: ChangeMessage, old: dict[str, int] | None, label: str | None, number: int | None, rollouts: Rollouts
) -> list[ChangeEvent]:
    """The :class:`ChangeEvent` s of one applied change message (``old``: the prompt's labels before it)."""
    name, rev, at = message.prompt, message.rev, message.at
    events = [ChangeEvent(name, None, None, None, rev, at)] if old is None else []
    before = None if old is None or label is None else old.get(label)
    if message.op in ROLLOUT_OPERATIONS and label is not None:
        running = rollouts.get(name, {}).get(label)
        now = number if message.op == "promote_rollout" else before
        rollout = None if running is None else (running[0], percent_of(running[1]))
        events.append(ChangeEvent(name, label, now, before, rev, at, rollout))
    elif label is not None and before != number:
        events.append(ChangeEvent(name, label, number, before, rev, at))
    return events
