"""The steps of the JSON file's writes that run on the state read under the lock: finding the prompt,
the compatibility check, the audit entry, and the rollout writes (:mod:`promptreg.registry.rollouts`).
Every refusal is raised before the state is changed, so nothing is written."""

from __future__ import annotations

from datetime import datetime

from promptreg.registry.base import check_expected
from promptreg.registry.compatibility import enforce
from promptreg.registry.composition import PromptsGraph, WriteGraph, uses
from promptreg.registry.composition_checks import check_move as check_graph
from promptreg.registry.composition_checks import check_rollout
from promptreg.registry.errors import PromptNotFoundError, RolloutActiveError, VersionNotFoundError
from promptreg.registry.file_format import StoredPrompt, StoredState
from promptreg.registry.governance import refuse_protected
from promptreg.registry.models import AuditAction, AuditEvent, CompatibilityMode, Prompt, Rollout
from promptreg.registry.rollouts import check_start, percent_of, running


def prompt_of(state: StoredState, name: str) -> StoredPrompt:
    """The stored prompt ``name``, or :class:`~promptreg.PromptNotFoundError`."""
    stored = state.prompts.get(name)
    if stored is None:
        raise PromptNotFoundError(name)
    return stored


def graph_of(state: StoredState) -> WriteGraph:
    """The state read under the lock as composition reads it (for the write-time checks)."""

    def load(name: str) -> Prompt | None:
        stored = state.prompts.get(name)
        return None if stored is None else stored.to_prompt(name)

    def index() -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for name, stored in state.prompts.items():
            for version in stored.versions:
                for used in uses(version.prompt_text, version.messages):
                    found.setdefault(used, set()).add(name)
        return found

    return PromptsGraph(load, index)


def no_rollout(stored: StoredPrompt, name: str, label: str, *, approved: bool = False) -> None:
    """A plain move of ``label`` is refused while a rollout runs on it, and a direct one while the
    label is protected (``approved``: the move of an approved request)."""
    if not approved:
        refuse_protected(label in stored.protected, name, label)
    found = stored.rollouts.get(label)
    if found is not None:
        raise RolloutActiveError(name, label, found.version)


def set_label(
    state: StoredState, name: str, label: str, version: int, expected_version: int | None, author: str | None,
    reason: str | None, at: datetime, *, force: bool, request: str | None = None,
) -> AuditEvent:  # fmt: skip
    """``set_label`` on the state read under the lock; ``request``: the approved request it applies."""
    stored = prompt_of(state, name)
    if version > len(stored.versions):
        raise VersionNotFoundError(name, version)
    no_rollout(stored, name, label, approved=request is not None)
    current = stored.labels.get(label)
    check_expected(name, label, expected_version, current)
    # A deleted label is checked against where it pointed (kept in `previous`): delete + set
    # is one move. Only a label never set has neither.
    last = current if current is not None else stored.previous.get(label)
    forced = check_move(stored, name, label, last, version, force)
    forced = check_graph(graph_of(state), name, label, version, force=force) or forced
    if current is None:
        stored.previous.pop(label, None)
    elif current != version:
        stored.previous[label] = current
    stored.labels[label] = version
    return audit(state, stored, "set_label", name, at, label, version, current, author, reason, forced=forced,
                 request=request)  # fmt: skip


def check_move(stored: StoredPrompt, name: str, label: str, current: int | None, target: int, force: bool) -> bool:
    """The compatibility check, under the lock, of a move from ``current`` (where the label last
    pointed; ``None``: never set); whether the move goes through only by ``force``."""
    before = None if current is None else stored.versions[current - 1]
    return enforce(name, label, stored.compatibility, before, stored.versions[target - 1], force)


def audit(
    state: StoredState,
    stored: StoredPrompt,
    action: AuditAction,
    name: str,
    at: datetime,
    label: str | None = None,
    version: int | None = None,
    previous: int | None = None,
    author: str | None = None,
    reason: str | None = None,
    *,
    forced: bool = False,
    compatibility: CompatibilityMode | None = None,
    percent: float | None = None,
    request: str | None = None,
    approvals: int | None = None,
) -> AuditEvent:
    """Bump the registry's revision and append the audit entry of this write."""
    state.rev += 1
    event = AuditEvent(
        rev=state.rev,
        at=at,
        action=action,
        prompt=name,
        label=label,
        version=version,
        previous_version=previous,
        author=author,
        reason=reason,
        forced=forced,
        compatibility=compatibility,
        percent=percent,
        request=request,
        approvals=approvals,
    )
    stored.history.append(event)
    return event


def start_rollout(
    state: StoredState, name: str, label: str, version: int, points: int, author: str | None,
    reason: str | None, at: datetime, force: bool,
) -> AuditEvent:  # fmt: skip
    """``start_rollout`` on the state read under the lock."""
    stored = state.prompts.get(name)
    refuse_protected(stored is not None and label in stored.protected, name, label)
    stable, forced, _ = check_start(
        None if stored is None else stored.to_prompt(name), name, label, version, force=force
    )
    assert stored is not None  # check_start raised otherwise
    check_rollout(graph_of(state), name, label, version)
    percent = percent_of(points)
    stored.rollouts[label] = Rollout(version=version, percent=percent, started_at=at, author=author)
    return audit(state, stored, "start_rollout", name, at, label, version, stable, author, reason, forced=forced,
                 percent=percent)  # fmt: skip


def set_rollout(
    state: StoredState, name: str, label: str, points: int, author: str | None, reason: str | None, at: datetime
) -> AuditEvent:
    """``set_rollout`` on the state read under the lock."""
    stored = prompt_of(state, name)
    refuse_protected(label in stored.protected, name, label)
    found = running(stored.to_prompt(name), name, label)
    percent = percent_of(points)
    stored.rollouts[label] = found.model_copy(update={"percent": percent})
    return audit(state, stored, "set_rollout", name, at, label, found.version, stored.labels[label], author, reason,
                 percent=percent)  # fmt: skip


def end_rollout(
    state: StoredState, name: str, label: str, promote: bool, author: str | None, reason: str | None, at: datetime
) -> AuditEvent:
    """``promote_rollout`` (the label moves to the candidate) or ``abort_rollout`` on the state read
    under the lock."""
    stored = prompt_of(state, name)
    refuse_protected(label in stored.protected, name, label)
    found = running(stored.to_prompt(name), name, label)
    stable = stored.labels[label]
    del stored.rollouts[label]
    if not promote:
        return audit(state, stored, "abort_rollout", name, at, label, stable, found.version, author, reason)
    stored.previous[label] = stable
    stored.labels[label] = found.version
    return audit(state, stored, "promote_rollout", name, at, label, found.version, stable, author, reason)
