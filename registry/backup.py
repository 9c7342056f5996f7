"""Export and import the whole registry as JSON: backups, and moving from a file to Redis.

An export is one JSON document::

    {"format": "promptreg-export", "format_version": 1, "exported_at": "...",
     "prompts": [<Prompt as JSON: name, description, author, created_at, versions, labels>, ...],
     "history": {"<name>": [<AuditEvent as JSON>, ...]}}

An import recreates prompts (with their compatibility mode), versions (text or chat messages, config,
author, metadata, message), labels and running rollouts (a rollout of the target that the export
does not have, or has with another candidate, is aborted before its label moves; one with another
percentage is set to the export's). Timestamps and the audit trail are not replayed: the target
registry records the import as new writes.

:func:`plan_import` validates the whole document and compares it with the target before anything
is written: everything a backend would refuse (sizes over the target's limits, a NUL character in a
text field, ...) raises there, and so does a label move the target's compatibility mode refuses
(:meth:`ImportPlan.check_compatible`, which :func:`apply_import` calls first). A prompt that already
exists must agree with the export on every version both have (text or messages, config, metadata,
author, message), else :class:`ImportConflictError`; missing versions are appended, labels are moved
to where the export has them (checked against the target's compatibility mode, as ``set_label``
checks them: from where each label points, or pointed before it was deleted), then the mode is set
to the export's. Importing the same export twice changes nothing the second time.

On PostgreSQL the whole import is one transaction (all or nothing). On Redis and the JSON file each
write is atomic on its own: an error during the import (a label someone moved meanwhile) leaves the
earlier writes made and its message names them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from promptreg.registry.base import PromptRegistry
from promptreg.registry.batch import apply_in_batch
from promptreg.registry.chat import validate_messages
from promptreg.registry.compatibility import CompatibilityReport, check, deleted_labels, refusal_error
from promptreg.registry.composition import reference_order
from promptreg.registry.errors import ImportConflictError, InvalidInputError, ProtectedLabelError
from promptreg.registry.models import Prompt, PromptVersion, utcnow
from promptreg.registry.sync import describe_refusal, describe_write
from promptreg.registry.validation import (
    refuse_nul,
    validate_label,
    validate_metadata,
    validate_name,
    validate_percent,
    validate_text,
    validate_text_field,
)

EXPORT_FORMAT = "promptreg-export"
EXPORT_FORMAT_VERSION = 1
MAX_EXPORT_BYTES = 1024**3
"""The largest export file ``promptreg import`` reads (1 GiB): refused before it is parsed."""


@dataclass(frozen=True, slots=True)
class ImportStep:
    """One write an import makes: create a prompt, add a version, or move a label."""

    action: Literal[
        "create_prompt",
        "add_version",
        "set_label",
        "set_compatibility",
        "start_rollout",
        "set_rollout",
        "abort_rollout",
    ]
    prompt: str
    version: int | None = None
    label: str | None = None
    previous_version: int | None = None
    compatibility: str | None = None
    percent: float | None = None
    """``start_rollout`` and ``set_rollout``: the candidate's share."""
    refusal: CompatibilityReport | None = None
    """For a label move the target prompt's compatibility mode refuses: the report (``None``: the
    move passes); its ``current_version`` is the version the move is checked against."""

    def describe(self) -> str:
        """A one-line human description of the step."""
        if self.action == "set_compatibility":
            return f"{self.prompt}: compatibility {self.compatibility}"
        if self.action == "abort_rollout":
            return f"{self.prompt}: abort the rollout of {self.label} (candidate v{self.version})"
        if self.action in ("start_rollout", "set_rollout"):
            verb = "start" if self.action == "start_rollout" else "set"
            line = f"{self.prompt}: {verb} the rollout of {self.label}: v{self.version} at {self.percent:g}%"
            return line if self.refusal is None else line + describe_refusal(self.refusal, self.previous_version)
        line = describe_write(self.action, self.prompt, self.version, self.label, self.previous_version)
        return line if self.refusal is None else line + describe_refusal(self.refusal, self.previous_version)


@dataclass(frozen=True, slots=True)
class ImportPlan:
    """The validated prompts of an export and the writes needed to bring them into a registry."""

    prompts: tuple[Prompt, ...]
    steps: tuple[ImportStep, ...]

    def check_compatible(self, *, force: bool = False) -> None:
        """Raise what :func:`apply_import` would raise before writing anything: an
        :class:`~promptreg.IncompatibleVersionError` for the first label move the target prompt's
        compatibility mode refuses (:attr:`ImportStep.refusal`), unless ``force``. A dry run calls
        it to fail as the real import would."""
        if force:
            return
        for step in self.steps:
            if step.refusal is not None:
                raise refusal_error(step.prompt, str(step.label), step.refusal)


def export_registry(registry: PromptRegistry) -> dict[str, Any]:
    """Every prompt of ``registry`` with its versions, labels and audit trail, as JSON-ready data.

    Raises whatever the registry raises when it is read.
    """
    prompts: list[dict[str, Any]] = []
    history: dict[str, list[dict[str, Any]]] = {}
    for name in registry.list_prompts():
        prompt = registry.get_prompt(name)
        if prompt is None:  # deleted between list and get: nothing to export
            continue
        prompts.append(prompt.model_dump(mode="json"))
        history[name] = [event.model_dump(mode="json") for event in registry.history(name)]
    return {
        "format": EXPORT_FORMAT,
        "format_version": EXPORT_FORMAT_VERSION,
        "exported_at": utcnow().isoformat(),
        "prompts": prompts,
        "history": history,
    }


def parse_export(data: object, *, max_text_bytes: int, max_metadata_bytes: int) -> tuple[Prompt, ...]:
    """Validate an export document; returns its prompts.

    Raises :class:`~promptreg.InvalidInputError` for anything that is not a complete, valid export:
    wrong format, malformed prompt, non-contiguous version numbers, a label pointing nowhere,
    text or metadata over the limits, a NUL character in a text field (no backend stores it), a
    name twice.
    """
    if not isinstance(data, Mapping) or data.get("format") != EXPORT_FORMAT:
        raise InvalidInputError(f'not a promptreg export (expected "format": "{EXPORT_FORMAT}")')
    if data.get("format_version") != EXPORT_FORMAT_VERSION:
        raise InvalidInputError(f"unsupported export format_version {data.get('format_version')!r}")
    raw_prompts = data.get("prompts")
    if not isinstance(raw_prompts, list):
        raise InvalidInputError('export has no "prompts" list')
    prompts: list[Prompt] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_prompts):
        try:
            prompt = Prompt.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInputError(f"prompts[{index}].{where}: {first['msg']}") from exc
        _check_prompt(prompt, max_text_bytes, max_metadata_bytes)
        if prompt.name in seen:
            raise InvalidInputError(f"prompt {prompt.name!r} appears twice in the export")
        seen.add(prompt.name)
        prompts.append(prompt)
    return tuple(prompts)


def plan_import(registry: PromptRegistry, data: object) -> ImportPlan:
    """Validate ``data`` (a parsed export) and compare it with ``registry``; writes nothing.

    Raises :class:`~promptreg.InvalidInputError` for an invalid export (anything the target would
    refuse), :class:`ImportConflictError` when an existing prompt has different content under the
    same version number, and :class:`~promptreg.ProtectedLabelError` when the import would move a
    protected label of the target. A label move the target prompt's compatibility mode refuses is marked in
    the plan (:attr:`ImportStep.refusal`, :meth:`ImportPlan.check_compatible`).
    """
    prompts = parse_export(data, max_text_bytes=registry.max_text_bytes, max_metadata_bytes=registry.max_metadata_bytes)
    steps: list[ImportStep] = []
    for prompt in prompts:
        existing = registry.get_prompt(prompt.name)
        deleted: dict[str, int] = {}
        if existing is not None and existing.compatibility != "none" and set(prompt.labels) - set(existing.labels):
            deleted = deleted_labels(registry.history(prompt.name))  # a deleted label is checked too
        steps.extend(_plan_prompt(prompt, existing, deleted))
    # Partials first: a prompt's steps (its versions, then its labels) after those of every prompt its
    # versions include; a version naming a partial's label is refused before that label exists.
    rank = reference_order(prompts)
    steps.sort(key=lambda step: rank.get(step.prompt, 0))  # stable: each prompt's steps keep their order
    _refuse_protected_moves(registry, steps)
    return ImportPlan(prompts, tuple(steps))


def _refuse_protected_moves(registry: PromptRegistry, steps: list[ImportStep]) -> None:
    """An import never moves a protected label of the target (registry/governance.py): refused here,
    before anything is written, with :class:`~promptreg.ProtectedLabelError` (unprotect it first, or
    request the move)."""
    if not any(step.label is not None for step in steps):
        return
    protected = {(p.prompt, p.label) for p in registry.protected_labels()}
    for step in steps:
        if step.label is not None and (step.prompt, step.label) in protected:
            raise ProtectedLabelError(step.prompt, step.label)


def apply_import(
    registry: PromptRegistry,
    plan: ImportPlan,
    *,
    author: str | None = None,
    reason: str | None = None,
    force: bool = False,
) -> list[ImportStep]:
    """Carry out ``plan``; returns the steps made. ``author``/``reason`` go on the label moves.

    Before anything is written: a label move the target's compatibility mode refuses raises
    :class:`~promptreg.IncompatibleVersionError` (:meth:`ImportPlan.check_compatible`; ``force``
    makes the moves anyway, recorded as forced), an invalid ``author`` or ``reason``
    :class:`~promptreg.InvalidInputError`. Label moves are compare-and-set against the plan
    (:class:`~promptreg.LabelConflictError` if a label moved meanwhile); a version that gets another
    number than planned (a concurrent writer) raises :class:`ImportConflictError`.

    On PostgreSQL the whole import is one transaction: an error leaves nothing written. On Redis and
    the JSON file steps made before an error stay made, and the error's message names them.
    """
    plan.check_compatible(force=force)
    validate_text_field(author, "author")
    validate_text_field(reason, "reason")
    return apply_in_batch(
        registry,
        "import",
        plan.steps,
        lambda done: _apply_steps(registry, plan, author, reason, force, done),
        lambda step: replace(step, refusal=None).describe(),
    )


def _apply_steps(
    registry: PromptRegistry, plan: ImportPlan, author: str | None, reason: str | None, force: bool,
    done: list[ImportStep],
) -> None:  # fmt: skip
    """Make the plan's steps in order, appending each to ``done`` as soon as it is made."""
    prompts = {prompt.name: prompt for prompt in plan.prompts}
    for step in plan.steps:
        prompt = prompts[step.prompt]
        if step.action == "create_prompt":
            registry.create_prompt(
                step.prompt, description=prompt.description, author=prompt.author, compatibility=prompt.compatibility
            )
        elif step.action == "set_compatibility":
            registry.set_compatibility(step.prompt, prompt.compatibility, author=author, reason=reason)
        elif step.action == "abort_rollout":
            registry.abort_rollout(step.prompt, str(step.label), author=author, reason=reason)
        elif step.action == "start_rollout":
            registry.start_rollout(step.prompt, str(step.label), int(step.version or 0), float(step.percent or 0),
                                   author=author, reason=reason, force=force)  # fmt: skip
        elif step.action == "set_rollout":
            registry.set_rollout(step.prompt, str(step.label), float(step.percent or 0), author=author, reason=reason)
        elif step.action == "add_version":
            source = _version(prompt, step.version)
            added = registry.add_version(
                step.prompt,
                None if source.messages is not None else source.prompt_text,
                messages=source.messages,
                config=source.config,
                author=source.author,
                metadata=source.metadata,
                message=source.message,
            )
            if added.version != source.version:
                done.append(replace(step, version=added.version))  # written, under another number
                raise ImportConflictError(
                    f"prompt {step.prompt!r} changed during the import: version {source.version} "
                    f"was stored as {added.version}"
                )
        else:
            registry.set_label(
                step.prompt,
                str(step.label),
                _version(prompt, step.version).version,
                expected_version=step.previous_version or 0,
                author=author,
                reason=reason,
                force=force,
            )
        done.append(step)


def _version(prompt: Prompt, number: int | None) -> PromptVersion:
    found = None if number is None else prompt.get_version_by_number(number)
    if found is None:  # plan_import only makes steps for versions it checked
        raise InvalidInputError(f"prompt {prompt.name!r} has no version {number} in the export")
    return found


def _check_prompt(prompt: Prompt, max_text_bytes: int, max_metadata_bytes: int) -> None:
    name = prompt.name
    try:
        validate_name(name)
        validate_text_field(prompt.description, "description")
        validate_text_field(prompt.author, "author")
        for index, version in enumerate(prompt.versions, 1):
            if version.version != index:
                raise InvalidInputError(f"versions must be numbered 1, 2, 3, ...; found {version.version} at {index}")
            validate_text(version.prompt_text, max_text_bytes)
            refuse_nul(version.prompt_text, f"version {index}: prompt text")
            if version.messages is not None:
                validate_messages(version.messages, max_text_bytes)
                if version.prompt_text:
                    raise InvalidInputError(f"version {version.version} has both prompt_text and messages")
            validate_metadata(version.metadata, max_metadata_bytes)
            validate_metadata(version.config, max_metadata_bytes, "config")
            validate_text_field(version.author, f"version {index}: author")
            validate_text_field(version.message, f"version {index}: message")
        for label, number in prompt.labels.items():
            validate_label(label, settable=True)
            if prompt.get_version_by_number(number) is None:
                raise InvalidInputError(f"label {label!r} points at version {number}, which the export lacks")
        for label, rollout in prompt.rollouts.items():
            validate_percent(rollout.percent)
            if (
                prompt.labels.get(label) in (None, rollout.version)
                or prompt.get_version_by_number(rollout.version) is None
            ):
                raise InvalidInputError(f"the rollout of label {label!r} needs the label and another version it has")
    except InvalidInputError as exc:
        raise type(exc)(f"prompt {name!r}: {exc}") from exc


def _same(a: PromptVersion, b: PromptVersion) -> bool:
    return (a.prompt_text, a.messages, a.config, a.metadata, a.author, a.message) == (
        b.prompt_text, b.messages, b.config, b.metadata, b.author, b.message
    )  # fmt: skip


def _plan_prompt(prompt: Prompt, existing: Prompt | None, deleted: Mapping[str, int]) -> list[ImportStep]:
    """The steps of one prompt; ``deleted`` maps the existing prompt's deleted labels to where they pointed."""
    name = prompt.name
    steps: list[ImportStep] = []
    have: list[PromptVersion] = [] if existing is None else existing.versions
    if existing is None:
        steps.append(ImportStep("create_prompt", name))
    for theirs, ours in zip(prompt.versions, have, strict=False):
        if not _same(theirs, ours):
            raise ImportConflictError(
                f"prompt {name!r} version {theirs.version} differs between the export and the registry; "
                "nothing was imported"
            )
    for version in prompt.versions[len(have) :]:
        steps.append(ImportStep("add_version", name, version=version.version))
    current = {} if existing is None else existing.labels
    running = {} if existing is None else existing.rollouts
    for label, target in sorted(running.items()):  # a label with a rollout cannot move: abort it first
        wanted = prompt.rollouts.get(label)
        if wanted is None or wanted.version != target.version or prompt.labels.get(label) != current.get(label):
            steps.append(ImportStep("abort_rollout", name, target.version, label))
    for label, number in sorted(prompt.labels.items()):
        now = current.get(label)
        if now == number:
            continue
        refusal = None
        last = now if now is not None else deleted.get(label)
        if existing is not None and last is not None and last != number:
            # The move is checked under the target's mode (set_compatibility, if any, comes after).
            report = check(existing.compatibility, existing.get_version_by_number(last), _version(prompt, number))
            refusal = None if report.compatible else report
        steps.append(ImportStep("set_label", name, number, label, now, refusal=refusal))
    aborted = {step.label for step in steps if step.action == "abort_rollout"}
    for label, rollout in sorted(prompt.rollouts.items()):
        kept = running.get(label)
        if kept is not None and label not in aborted:
            if kept.percent != rollout.percent:
                steps.append(ImportStep("set_rollout", name, rollout.version, label, percent=rollout.percent))
            continue
        stable = prompt.labels[label]
        report = check(
            prompt.compatibility if existing is None else existing.compatibility,
            _version(prompt, stable), _version(prompt, rollout.version),
        )  # fmt: skip
        refusal = None if report.compatible else report
        steps.append(ImportStep("start_rollout", name, rollout.version, label, stable, percent=rollout.percent,
                                refusal=refusal))  # fmt: skip
    if existing is not None and existing.compatibility != prompt.compatibility:
        steps.append(ImportStep("set_compatibility", name, compatibility=prompt.compatibility))
    return steps
