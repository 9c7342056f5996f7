"""Prompts as code: a folder of ``*.prompt`` files -> the registry, idempotently.

A prompt file is an optional YAML front matter between two ``---`` lines, then the template body,
the way Dotprompt files look::

    ---
    labels: [production]          # a list, or a single string
    metadata: {model: gpt-4o, temperature: 0.2}
    description: Reviews a movie  # used when the prompt is created
    message: Shorter instructions # the commit message of a new version
    ---
    You are a {{criticlevel}} movie critic. Write a review for {{movie}}.

The prompt name is the file's path under the folder without ``.prompt`` (``team/critic.prompt``
gives ``team/critic``). The body is taken exactly as written (after the closing ``---`` line); a
leading UTF-8 byte order mark is dropped and Windows line ends read as ``\n``.

Dotprompt's chat form is understood too: ``model:`` and ``config:`` in the front matter become the
version's ``config`` (``{"model": ..., **config}``), ``{{role "system"}}`` markers in the body make a
chat version (one message per marker; text before the first one is a ``user`` message) and
``{{history}}`` in such a body is the history placeholder (see :func:`promptreg.registry.chat.dotprompt_messages`).

A body may include other prompts (``{{> name}}``, ``{{> name@label}}``, ``{{> name@3}}``): files are
written partials first and the plan is checked as the backends check each write, before anything
is written (:mod:`promptreg.registry.sync_order`).

A version's identity is its text (or messages) plus its config and metadata. A file equal to an
existing version reuses that version: no new version is added, and the file's labels move to it
only if they point at a version with different content. So running a sync twice changes nothing,
and reverting a file in git moves its labels back to the old version without adding one. A label
move the prompt's compatibility mode refuses (checked against where the label last pointed, also
for a deleted label) is shown in the plan (:attr:`SyncStep.refusal`) and stops :func:`apply_sync`
before anything is written, unless ``force=True``.

:func:`plan_sync` reads and validates every file and compares it with the registry, writing
nothing; :func:`apply_sync` carries a plan out. Any file holding something a backend would refuse
(an invalid name, label or value, a size over the registry's limits, a NUL character in a text
field) stops the sync before anything is written, with a :class:`PromptFileError` naming the file;
a dry run fails the same way. On PostgreSQL the whole sync is one transaction (all or nothing); on
Redis and the JSON file each write is atomic on its own, and an error during the sync (a label
someone moved meanwhile) says which writes were already made. The folder is read as hostile input
(it comes from pull requests): see :mod:`promptreg.registry.prompt_files` for links, size bounds and the
strict YAML loader.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from promptreg.registry.base import PromptRegistry
from promptreg.registry.batch import apply_in_batch
from promptreg.registry.chat import dotprompt_messages, validate_messages
from promptreg.registry.compatibility import CompatibilityReport, compare, deleted_labels, interface_of, refusal_error
from promptreg.registry.errors import InvalidInputError, PromptFileError, PromptRegistryError
from promptreg.registry.models import Prompt, PromptVersion, describe_label_move
from promptreg.registry.prompt_files import (
    check_partial_syntax,
    file_size_limit,
    front_matter_config,
    front_matter_labels,
    front_matter_limit,
    read_bounded,
    split_front_matter,
    walk_prompt_files,
)
from promptreg.registry.sync_order import check_plan, describe_graph_refusal, order_files
from promptreg.registry.validation import (
    MAX_METADATA_BYTES,
    MAX_TEXT_BYTES,
    refuse_nul,
    validate_label,
    validate_metadata,
    validate_name,
    validate_text,
    validate_text_field,
)

SUFFIX = ".prompt"
"""The file suffix sync reads; every other file is ignored."""

FRONT_MATTER_KEYS = frozenset({"labels", "metadata", "description", "message", "model", "config"})
"""The keys a prompt file's front matter may hold."""

StepAction = Literal["create_prompt", "add_version", "set_label", "request_move"]


@dataclass(frozen=True, slots=True)
class PromptFile:
    """One parsed and validated prompt file."""

    path: Path
    name: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    labels: tuple[str, ...] = ()
    description: str | None = None
    message: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    """A chat file's messages (``text`` is then empty)."""
    config: dict[str, Any] = field(default_factory=dict)

    def as_version(self) -> PromptVersion:
        """The file's content as a version (numbered 1): its variables, placeholders, config."""
        return PromptVersion(version=1, prompt_text=self.text, messages=self.messages, config=self.config)


def describe_write(
    action: str,
    prompt: str,
    version: int | None,
    label: str | None,
    previous_version: int | None,
    source: Path | None = None,
) -> str:
    """One line for a planned write (sync or import), e.g. ``movie-critic: label production 2 -> 3``."""
    if action == "create_prompt":
        return f"{prompt}: create prompt"
    if action == "add_version":
        return f"{prompt}: add version {version}" + (f" (from {source})" if source is not None else "")
    if action == "request_move":
        return f"{prompt}: request label {describe_label_move(label, previous_version, version)} (protected)"
    return f"{prompt}: label {describe_label_move(label, previous_version, version)}"


def describe_refusal(report: CompatibilityReport, previous_version: int | None) -> str:
    """The ``  INCOMPATIBLE (...)`` tail of a planned label move the compatibility mode refuses."""
    parts: list[str] = [report.mode]
    if report.type_change is not None:
        parts.append(" -> ".join(report.type_change))
    if report.added:
        parts.append(f"needs {', '.join(report.added)}")
    if report.kind_changes:
        parts.append(f"{', '.join(report.kind_changes)} variable <-> placeholder")
    if report.removed:
        parts.append(f"drops {', '.join(report.removed)}")
    if report.current_version != previous_version:
        parts.append(f"against version {report.current_version}, where the deleted label pointed")
    return f"  INCOMPATIBLE ({'; '.join(parts)})"


@dataclass(frozen=True, slots=True)
class SyncStep:
    """One write a sync makes (or, in a plan, will make).

    ``version`` is the version added or the one a label moves to; in a plan, a version still to be
    added carries the number it is expected to get. ``previous_version`` is where a label pointed
    before (``None``: it did not exist).
    """

    action: StepAction
    prompt: str
    path: Path
    version: int | None = None
    label: str | None = None
    previous_version: int | None = None
    refusal: CompatibilityReport | None = None
    """For a label move the prompt's compatibility mode refuses: the report (``None``: the move passes).
    Its ``current_version`` is the version the move is checked against: ``previous_version``, or
    for a deleted label where it pointed when it was deleted."""
    graph_refusal: PromptRegistryError | None = None
    """For a label move the composition checks refuse unless forced (a dependent's compatibility
    mode, a prompt left without its partial): the error the write would raise (``None``: it passes)."""

    @property
    def refused(self) -> bool:
        """Whether the move goes through only with ``force``."""
        return self.refusal is not None or self.graph_refusal is not None

    def describe(self) -> str:
        """A one-line human description, e.g. ``movie-critic: label production 2 -> 3``."""
        line = describe_write(self.action, self.prompt, self.version, self.label, self.previous_version, self.path)
        if self.refusal is not None:
            line += describe_refusal(self.refusal, self.previous_version)
        return line if self.graph_refusal is None else line + describe_graph_refusal(self.graph_refusal)


@dataclass(frozen=True, slots=True)
class SyncPlan:
    """What a sync of ``directory`` will write: ``steps`` in order, for the ``files`` read.

    An empty ``steps`` means the registry already matches the folder.
    """

    directory: Path
    files: tuple[PromptFile, ...]
    steps: tuple[SyncStep, ...]

    @property
    def changes(self) -> bool:
        """Whether applying the plan writes anything."""
        return bool(self.steps)

    def check_compatible(self, *, force: bool = False) -> None:
        """Raise what :func:`apply_sync` would raise before writing anything: an
        :class:`~promptreg.IncompatibleVersionError` for the first label move the prompt's compatibility
        mode refuses (:attr:`SyncStep.refusal`), or the error of the first move the composition
        checks refuse (:attr:`SyncStep.graph_refusal`), unless ``force``. A dry run calls it to fail
        as the real run would."""
        if force:
            return
        for step in self.steps:
            if step.refusal is not None:
                raise refusal_error(step.prompt, str(step.label), step.refusal)
            if step.graph_refusal is not None:
                raise step.graph_refusal


def parse_prompt_file(
    path: Path,
    name: str,
    *,
    max_text_bytes: int = MAX_TEXT_BYTES,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
    real_path: Path | None = None,
) -> PromptFile:
    """Read and validate one prompt file; ``name`` is the prompt name it maps to.

    ``real_path`` is the file to read when ``path`` is a link inside the folder (see
    :func:`read_prompt_files`); ``path`` itself is never followed if it is a link. The file size
    and the front-matter size are bounded before anything is parsed (see
    :mod:`promptreg.registry.prompt_files`). Raises :class:`PromptFileError` (naming ``path``) for an
    unreadable, oversized, non-regular or non-UTF-8 file, bad, unterminated or non-JSON front matter
    (naming the line), unknown front-matter keys, an invalid name, label or metadata, a NUL
    character in the text, description or message (no backend stores it), or an empty body.
    """
    limit = file_size_limit(max_text_bytes, max_metadata_bytes)
    data = read_bounded(path if real_path is None else real_path, limit, shown=path)
    try:
        raw = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PromptFileError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    # Universal newlines, as read_text gives: a checkout on Windows yields the same text as on Linux.
    # A leading byte order mark (Windows editors write one) is no part of the text, and left in
    # place it would hide the opening '---' line: the front matter would become prompt text.
    raw = raw.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    front, body = split_front_matter(path, raw, front_matter_limit(max_metadata_bytes))
    unknown = sorted(str(key) for key in front if key not in FRONT_MATTER_KEYS)
    if unknown:
        allowed = ", ".join(sorted(FRONT_MATTER_KEYS))
        raise PromptFileError(path, f"unknown front matter key(s) {', '.join(unknown)} (allowed: {allowed})")
    try:
        validate_name(name)
        validate_text(body, max_text_bytes)
        chat = dotprompt_messages(body)
        messages = None if chat is None else validate_messages(chat, max_text_bytes)
        config = front_matter_config(front.get("model"), front.get("config"), max_metadata_bytes)
        labels = front_matter_labels(front.get("labels"))
        metadata = front.get("metadata")
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidInputError(f"metadata must be a mapping, got {type(metadata).__name__}")
        clean_metadata = validate_metadata(metadata, max_metadata_bytes)
        description = validate_text_field(front.get("description"), "description")
        message = validate_text_field(front.get("message"), "message")
        # What every backend refuses (validation.refuse_nul): checked here, so no write has been made yet.
        text = body if messages is None else ""
        refuse_nul(text, "the prompt text")
        check_partial_syntax(body, first_line=raw.count("\n", 0, len(raw) - len(body)) + 1)
        validate_text_field(_reason(path), "the file's path (it becomes the reason of its label moves)")
    except InvalidInputError as exc:
        raise PromptFileError(path, str(exc)) from exc
    if not body.strip():
        raise PromptFileError(path, "the prompt body is empty")
    return PromptFile(path, name, text, clean_metadata, labels, description, message, messages, config)


def read_prompt_files(
    directory: Path,
    *,
    max_text_bytes: int = MAX_TEXT_BYTES,
    max_metadata_bytes: int = MAX_METADATA_BYTES,
) -> list[PromptFile]:
    """Every ``*.prompt`` file under ``directory`` (recursively), parsed and validated, sorted by name.

    Only regular files inside ``directory`` are read: a symbolic link (file or folder) whose target
    is outside it is refused before any file is read; a link to a file inside it is read; a link to
    a folder inside it is not followed (its real path is synced). Raises :class:`PromptFileError`
    if ``directory`` is not a folder or any file is invalid.
    """
    files: list[PromptFile] = []
    for path, real_path in list(walk_prompt_files(directory, SUFFIX)):
        relative = path.relative_to(directory).with_suffix("")
        files.append(
            parse_prompt_file(
                path,
                relative.as_posix(),
                max_text_bytes=max_text_bytes,
                max_metadata_bytes=max_metadata_bytes,
                real_path=real_path,
            )
        )
    return files


def plan_sync(registry: PromptRegistry, directory: Path | str, *, labels: Iterable[str] = ()) -> SyncPlan:
    """Read ``directory`` and compare it with ``registry``; writes nothing.

    ``labels`` are added to every file's own labels (e.g. ``staging`` for a staging pipeline).
    Files including each other's prompts are planned partials first. Raises
    :class:`PromptFileError` for any invalid file (and for files that include each other, or a
    partial the registry would refuse: see :mod:`promptreg.registry.sync_order`),
    :class:`~promptreg.InvalidNameError` for an invalid extra label, and whatever the registry
    raises when it is read.
    """
    extra = tuple(validate_label(label, settable=True) for label in labels)
    folder = Path(directory)
    limits = {"max_text_bytes": registry.max_text_bytes, "max_metadata_bytes": registry.max_metadata_bytes}
    files = order_files(read_prompt_files(folder, **limits))
    protected = {(p.prompt, p.label) for p in registry.protected_labels()}
    steps: list[SyncStep] = []
    for prompt_file in files:
        prompt = registry.get_prompt(prompt_file.name)
        wanted = (*prompt_file.labels, *extra)
        deleted: dict[str, int] = {}
        if prompt is not None and prompt.compatibility != "none" and any(n not in prompt.labels for n in wanted):
            deleted = deleted_labels(registry.history(prompt.name))  # a deleted label is checked too
        steps.extend(_plan_file(prompt_file, prompt, extra, deleted))
    steps = _requests(registry, steps, protected)
    refused = check_plan(registry, {f.name: f for f in files}, steps)
    steps = [replace(s, graph_refusal=refused[i]) if i in refused else s for i, s in enumerate(steps)]
    return SyncPlan(folder, tuple(files), tuple(steps))


def apply_sync(
    registry: PromptRegistry, plan: SyncPlan, *, author: str | None = None, force: bool = False
) -> list[SyncStep]:
    """Carry out ``plan``; returns the steps as made (with the version numbers actually added).

    Everything a backend would refuse was checked when the plan was made (:func:`plan_sync`); a
    plan with a move the compatibility mode refuses raises :class:`~promptreg.IncompatibleVersionError`
    and an invalid ``author`` :class:`~promptreg.InvalidInputError`, both before anything is written
    (the moves are made anyway with ``force``, recorded as forced); each move is checked again inside
    its write. Label moves are compare-and-set against the plan, so a label someone moved since the
    plan was made raises :class:`~promptreg.LabelConflictError` instead of being overwritten.

    On PostgreSQL the whole sync is one transaction: an error leaves nothing written. On Redis and
    the JSON file each step is its own atomic write: steps made before an error stay made, the
    error's message names them (:func:`name_what_was_written`), and re-running the sync finishes
    the job.
    """
    plan.check_compatible(force=force)
    validate_text_field(author, "author")
    return apply_in_batch(
        registry,
        "sync",
        plan.steps,
        lambda done: _apply_steps(registry, plan, author, force, done),
        lambda step: replace(step, refusal=None, graph_refusal=None).describe(),
    )


def _apply_steps(
    registry: PromptRegistry, plan: SyncPlan, author: str | None, force: bool, done: list[SyncStep]
) -> None:
    """Make the plan's steps in order, appending each to ``done`` as soon as it is made."""
    added: dict[str, int] = {}
    files = {f.name: f for f in plan.files}
    for step in plan.steps:
        source = files[step.prompt]
        if step.action == "create_prompt":
            registry.create_prompt(step.prompt, description=source.description, author=author)
            done.append(step)
        elif step.action == "add_version":
            version = registry.add_version(
                step.prompt,
                None if source.messages is not None else source.text,
                messages=source.messages,
                config=source.config,
                author=author,
                metadata=source.metadata,
                message=source.message,
            )
            added[step.prompt] = version.version
            done.append(replace(step, version=version.version))
        elif step.action == "request_move":
            assert step.label is not None and step.version is not None
            target = added.get(step.prompt, step.version)
            registry.request_label_move(
                step.prompt, step.label, target, author=author or "promptreg sync", reason=_reason(step.path)
            )
            done.append(replace(step, version=target))
        else:
            assert step.label is not None and step.version is not None
            target = added.get(step.prompt, step.version)
            registry.set_label(
                step.prompt,
                step.label,
                target,
                expected_version=step.previous_version or 0,
                author=author,
                reason=_reason(step.path),
                force=force,
            )
            done.append(replace(step, version=target))


def _requests(registry: PromptRegistry, steps: list[SyncStep], protected: set[tuple[str, str]]) -> list[SyncStep]:
    """The moves of protected labels as move requests (registry/governance.py): sync asks, an
    approver decides. A request already pending for the same move is not asked again, so re-running
    sync changes nothing."""
    if not protected:
        return steps
    pending = {(r.prompt, r.label, r.version) for r in registry.list_requests(state="pending", limit=1000)}
    out: list[SyncStep] = []
    for step in steps:
        if step.action != "set_label" or (step.prompt, step.label) not in protected:
            out.append(step)
        elif (step.prompt, step.label, step.version) not in pending:
            out.append(replace(step, action="request_move", refusal=None))
    return out


def _reason(path: Path) -> str:
    """The reason recorded with a label move a file makes."""
    return f"sync from {path}"


def _plan_file(
    prompt_file: PromptFile, prompt: Prompt | None, extra_labels: Sequence[str], deleted: Mapping[str, int]
) -> list[SyncStep]:
    """The steps of one file; ``deleted`` maps the prompt's deleted labels to where they pointed."""
    name, path = prompt_file.name, prompt_file.path
    steps: list[SyncStep] = []
    if prompt is None:
        steps.append(SyncStep("create_prompt", name, path))
    same = [] if prompt is None else [v.version for v in prompt.versions if _same_content(v, prompt_file)]
    if same:
        target = same[-1]
    else:
        target = 1 if prompt is None or prompt.latest is None else prompt.latest.version + 1
        steps.append(SyncStep("add_version", name, path, version=target))
    current = {} if prompt is None else prompt.labels
    for label in dict.fromkeys((*prompt_file.labels, *extra_labels)):
        now = current.get(label)
        if now is not None and now in same:
            continue  # already on a version with this content: re-running sync must change nothing
        refusal = None
        last = now if now is not None else deleted.get(label)
        if prompt is not None and last is not None and last != target:
            before = prompt.get_version_by_number(last)
            report = compare(prompt.compatibility, None if before is None else interface_of(before),
                             interface_of(prompt_file.as_version()), target, last)  # fmt: skip
            refusal = None if report.compatible else report
        steps.append(
            SyncStep("set_label", name, path, version=target, label=label, previous_version=now, refusal=refusal)
        )
    return steps


def _same_content(version: PromptVersion, prompt_file: PromptFile) -> bool:
    return (version.prompt_text, version.messages, version.config, version.metadata) == (
        prompt_file.text,
        prompt_file.messages,
        prompt_file.config,
        prompt_file.metadata,
    )
