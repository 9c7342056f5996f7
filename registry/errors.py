"""The one error tree of promptreg.

Every error promptreg raises derives from :class:`PromptRegistryError`, so callers can catch
everything with one class. Where a builtin fits, the error also derives from it, so existing
``except KeyError`` / ``except ValueError`` / ``except ConnectionError`` code keeps working::

    PromptRegistryError
    ├── PromptNotFoundError        (KeyError)   no prompt of that name
    ├── VersionNotFoundError       (KeyError)   the prompt has no such version
    ├── LabelNotFoundError         (KeyError)   the prompt has no such label
    ├── PromptExistsError                       create_prompt on a name already taken
    ├── LabelConflictError                      compare-and-set on a label failed
    ├── RollbackUnavailableError                the label has no earlier position to go back to
    ├── ProtectedLabelError                     a direct move of a protected label (request it instead)
    ├── RequestNotFoundError       (KeyError)   no move request with that id
    ├── RequestStateError                       the request is not pending/approved (decided or expired)
    ├── ApprovalError                           the requester approving its own request, or twice
    ├── IncompatibleVersionError                a label move the prompt's compatibility mode refuses
    │   └── IncompatibleDependentError          a partial's move that a dependent's mode refuses
    ├── CompositionError                        a partial reference that cannot be resolved
    │   ├── PartialNotFoundError   (KeyError)   the partial, its label or its version is missing
    │   ├── PartialCycleError                   partials that include each other
    │   ├── PartialDepthError                   partials nested deeper than 8
    │   ├── PartialTypeError                    a chat prompt, or a label with a rollout, used as a partial
    │   └── CompositionTooLargeError            a composed text over the limit (partials included many times)
    ├── InvalidInputError          (ValueError) input refused before anything was written
    │   ├── InvalidNameError                    a prompt name, label or namespace is malformed
    │   ├── PromptTooLargeError                 prompt text or metadata over the configured limit
    │   ├── PromptFileError                     a prompt file (sync) cannot be used; names the file
    │   └── ImportConflictError                 an export disagrees with the registry it is imported into
    ├── MissingVariableError       (KeyError)   render() without every template variable
    ├── PromptTypeError            (TypeError)  render_text() on a chat version, render_chat() on a text one
    ├── RegistryCorruptError                    stored data that cannot be read (left untouched)
    ├── StateReadError                          the client's state read never settled (writes kept racing it)
    ├── ConfigurationError                      the installation or settings cannot work (a missing extra, no such file)
    ├── AuthenticationRequiredError             promptreg serve: no valid token (HTTP 401)
    ├── PermissionDeniedError                   promptreg serve: the token's role may not do this (HTTP 403)
    └── RegistryUnavailableError   (ConnectionError) the store cannot be reached
        ├── RegistryAuthError                   the store refused the credentials or their rights
        └── ReplicationTimeoutError             a write applied, but fewer replicas confirmed it than asked
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path


class PromptRegistryError(Exception):
    """Base class of every error raised by promptreg."""


class _KeyErrorMessage(KeyError):  # noqa: N818 (a mixin, not raised alone)
    """KeyError whose ``str()`` is the message itself, not its ``repr()``."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PromptNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """No prompt with this name exists."""

    def __init__(self, name: str) -> None:
        super().__init__(f"prompt {name!r} not found")
        self.name = name


class VersionNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """The prompt exists but has no such version."""

    def __init__(self, name: str, version: int) -> None:
        super().__init__(f"prompt {name!r} has no version {version}")
        self.name = name
        self.version = version


class LabelNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """The prompt exists but has no such label."""

    def __init__(self, name: str, label: str) -> None:
        super().__init__(f"prompt {name!r} has no label {label!r}")
        self.name = name
        self.label = label


class PromptExistsError(PromptRegistryError):
    """``create_prompt`` was called with a name that is already taken."""

    def __init__(self, name: str) -> None:
        super().__init__(f"prompt {name!r} already exists")
        self.name = name


class LabelConflictError(PromptRegistryError):
    """A compare-and-set on a label failed: it did not point where the caller expected."""

    def __init__(self, name: str, label: str, expected: int, actual: int | None) -> None:
        want = "to be unset" if expected == 0 else f"at version {expected}"
        have = "is unset" if actual is None else f"points at version {actual}"
        super().__init__(f"label {label!r} of prompt {name!r} {have}, expected it {want}")
        self.name = name
        self.label = label
        self.expected = expected
        self.actual = actual


class RollbackUnavailableError(PromptRegistryError):
    """``rollback`` found no earlier version for the label to return to."""

    def __init__(self, name: str, label: str) -> None:
        super().__init__(f"label {label!r} of prompt {name!r} has no earlier version to roll back to")
        self.name = name
        self.label = label


class ProtectedLabelError(PromptRegistryError):
    """A direct move (``set_label``, ``rollback``, ``delete_label``, a rollout) of a protected label:
    it moves only through an approved request (``request_label_move``); nothing was written."""

    def __init__(self, name: str, label: str) -> None:
        super().__init__(
            f"label {label!r} of prompt {name!r} is protected: request the move (promptreg request) "
            "and have another identity approve it"
        )
        self.name = name
        self.label = label


class RequestNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """No move request with that id."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no move request {request_id!r}")
        self.request_id = request_id


class RequestStateError(PromptRegistryError):
    """The request cannot take this step in its ``state`` (``rejected``, ``applied``, ``expired``,
    or not yet ``approved`` for ``apply_request``); nothing was written."""

    def __init__(self, request_id: str, state: str) -> None:
        super().__init__(f"move request {request_id!r} is {state}")
        self.request_id = request_id
        self.state = state


class ApprovalError(PromptRegistryError):
    """An approval or rejection the rules refuse: by the requester itself, or a second approval by
    the same identity; nothing was written."""

    def __init__(self, request_id: str, reason: str) -> None:
        super().__init__(f"move request {request_id!r}: {reason}")
        self.request_id = request_id
        self.reason = reason


class RolloutActiveError(PromptRegistryError):
    """A rollout is running on the label: a plain move (``set_label``, ``rollback``,
    ``delete_label``) or a second ``start_rollout`` is refused until it is promoted or aborted;
    nothing was written. ``candidate`` is the rollout's candidate version (``None``: unknown)."""

    def __init__(self, name: str, label: str, candidate: int | None) -> None:
        which = "" if candidate is None else f" (candidate version {candidate})"
        super().__init__(f"label {label!r} of prompt {name!r} has a rollout running{which}: promote or abort it first")
        self.name = name
        self.label = label
        self.candidate = candidate


class RolloutNotFoundError(PromptRegistryError, _KeyErrorMessage):
    """``set_rollout``, ``promote_rollout`` or ``abort_rollout`` of a label with no rollout running."""

    def __init__(self, name: str, label: str) -> None:
        super().__init__(f"label {label!r} of prompt {name!r} has no rollout running")
        self.name = name
        self.label = label


class IncompatibleVersionError(PromptRegistryError):
    """A label move (``set_label``, ``rollback``, ``sync``) the prompt's compatibility mode refuses;
    nothing was written.

    ``added`` are the inputs (template variables and placeholders) the target version needs that the
    label's current version does not take, ``removed`` those it drops (each sorted); ``mode`` is the
    prompt's mode. ``force=True`` makes the move anyway (recorded as ``AuditEvent.forced``).
    """

    def __init__(
        self, name: str, label: str, version: int, current: int | None, mode: str,
        added: Iterable[str], removed: Iterable[str],
    ) -> None:  # fmt: skip
        self.name = name
        self.label = label
        self.version = version
        self.current = current
        self.mode = mode
        self.added: tuple[str, ...] = tuple(sorted(added))
        self.removed: tuple[str, ...] = tuple(sorted(removed))
        why = []
        if self.added:
            why.append(f"version {version} needs {', '.join(self.added)}, which version {current} does not take")
        if self.removed:
            why.append(f"it no longer takes {', '.join(self.removed)}")
        super().__init__(
            f"prompt {name!r}: label {label} {current} -> {version} refused under {mode} compatibility: "
            f"{'; '.join(why)} (force to move anyway)"
        )


class IncompatibleDependentError(IncompatibleVersionError):
    """A move of a partial's label that the compatibility mode of a prompt including it refuses;
    nothing was written.

    ``dependent`` and ``dependent_label`` name the prompt and the label whose composed interface
    would change; ``name`` / ``label`` are the partial moved; ``added`` / ``removed`` are the
    dependent's inputs (variables and placeholders) the move adds or drops. ``force=True`` moves
    anyway (recorded as ``AuditEvent.forced``).
    """

    def __init__(
        self, dependent: str, dependent_label: str, name: str, label: str, mode: str,
        added: Iterable[str], removed: Iterable[str], why: Iterable[str] = (),
    ) -> None:  # fmt: skip
        super().__init__(name, label, 0, None, mode, added, removed)
        self.dependent = dependent
        self.dependent_label = dependent_label
        detail = "; ".join(why) or "its interface changes"
        self.args = (
            f"moving label {label} of partial {name!r} would change {dependent!r} at {dependent_label}, which "
            f"{mode} compatibility refuses: {detail} (force to move anyway)",
        )


class CompositionError(PromptRegistryError):
    """A ``{{> partial}}`` reference that cannot be resolved; nothing was written.

    ``name`` / ``label`` are the prompt being composed and the label it was resolved at (``None``:
    a version being added, at no label yet).
    """

    def __init__(self, message: str, name: str, label: str | None) -> None:
        super().__init__(message)
        self.name = name
        self.label = label


class PartialNotFoundError(CompositionError, _KeyErrorMessage):
    """A partial that does not exist, lacks the label it is resolved at, or the version it names.

    ``partial`` is its name, ``partial_label`` / ``partial_version`` what was missing (both
    ``None``: the prompt itself). ``moved``, when set, is the ``(partial, label)`` whose move or
    deletion would leave ``name`` without it (refused unless forced).
    """

    def __init__(
        self, name: str, label: str | None, partial: str, partial_label: str | None, partial_version: int | None,
        *, moved: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        if partial_version is not None:
            what = f"partial {partial!r} has no version {partial_version}"
        elif partial_label is not None:
            what = f"partial {partial!r} has no label {partial_label!r}"
        else:
            what = f"partial {partial!r} does not exist"
        where = f"prompt {name!r}" + ("" if label is None else f" at {label}")
        cause = "" if moved is None else f"moving label {moved[1]} of {moved[0]!r} would leave it unresolved: "
        super().__init__(f"{cause}{where} includes {{{{> {partial}}}}}: {what}", name, label)
        self.partial = partial
        self.partial_label = partial_label
        self.partial_version = partial_version
        self.moved = moved


class PartialCycleError(CompositionError):
    """Partials that include each other; ``path`` is the chain of names, ending where it began."""

    def __init__(self, name: str, label: str | None, path: Iterable[str]) -> None:
        self.path: tuple[str, ...] = tuple(path)
        super().__init__(f"prompt {name!r}: partials include each other: {' -> '.join(self.path)}", name, label)


class PartialDepthError(CompositionError):
    """Partials nested deeper than the limit; ``path`` is the chain of names."""

    def __init__(self, name: str, label: str | None, path: Iterable[str], limit: int) -> None:
        self.path: tuple[str, ...] = tuple(path)
        super().__init__(f"prompt {name!r}: partials nest deeper than {limit}: {' -> '.join(self.path)}", name, label)


class CompositionTooLargeError(CompositionError):
    """A composition whose text would exceed ``limit`` characters: partials included many times,
    nested, multiply (8 levels of 100 includes of a short text would make more text than any
    memory holds), so the size is bounded while composing and the write is refused."""

    def __init__(self, name: str, label: str | None, limit: int) -> None:
        super().__init__(f"prompt {name!r}: composed with its partials, its text exceeds {limit:,} characters", name,
                         label)  # fmt: skip
        self.limit = limit


class PartialTypeError(CompositionError):
    """A partial that cannot be included: a chat prompt (only text is included), or a label with a
    rollout running (a composition is one text, not a split). ``partial`` is its name."""

    def __init__(self, name: str, label: str | None, partial: str, reason: str, *, rollout: bool = False) -> None:
        super().__init__(f"prompt {name!r} cannot include {partial!r}: {reason}", name, label)
        self.partial = partial
        self.rollout = rollout
        """Whether the refusal is a rollout (it ends), rather than the partial's type (it stays)."""


class InvalidInputError(PromptRegistryError, ValueError):
    """Input was refused before anything was written."""


class InvalidNameError(InvalidInputError):
    """A prompt name, label or namespace does not match its pattern or length limit."""


class PromptTooLargeError(InvalidInputError):
    """Prompt text or metadata is larger than the registry's configured limit."""


class PromptFileError(InvalidInputError):
    """A prompt file cannot be used: unreadable, a link out of its folder, too big, bad YAML, an
    unknown key, an invalid name or value.

    ``path`` is the offending file (or folder); ``reason`` says what is wrong (with the line where
    there is one). Raised before anything is written.
    """

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class ImportConflictError(InvalidInputError):
    """The export disagrees with what the target registry already holds (a version with the same
    number and other content); nothing was written."""


class MissingVariableError(PromptRegistryError, _KeyErrorMessage):
    """``render`` was called without values for some template variables.

    ``missing`` holds every missing name, sorted.
    """

    def __init__(self, missing: Iterable[str]) -> None:
        self.missing: tuple[str, ...] = tuple(sorted(set(missing)))
        super().__init__("missing template variables: " + ", ".join(self.missing))


class RegistryCorruptError(PromptRegistryError):
    """Stored data could not be read (corrupt or foreign file, malformed record).

    The data is left exactly as it was found.
    """


class StateReadError(PromptRegistryError):
    """The registry's prompt and label sets kept changing while a client read its state (the 0.1.0
    layout's read); the client retries later and reports it in ``status().last_error``."""


class ConfigurationError(PromptRegistryError):
    """The installation or the settings cannot work, and retrying will not help: an optional
    dependency that is not installed (psycopg for PostgreSQL), a server binary the command needs, or
    a registry file that does not exist where a command only reads (a mistyped ``--url``). Not a
    :class:`RegistryUnavailableError`: code that retries while the store is down must not retry this.
    """


class RegistryUnavailableError(PromptRegistryError, ConnectionError):
    """The backing store (Redis, the file system) cannot be reached."""


class RegistryAuthError(RegistryUnavailableError):
    """The store was reached but refused us: wrong password, unknown user, or an ACL that does
    not allow the command (``NOPERM``). The message says which; it never holds the password."""


class ReplicationTimeoutError(RegistryUnavailableError):
    """A write was applied on the primary, but fewer replicas than ``wait_replicas`` confirmed it
    within ``wait_timeout`` (Redis ``WAIT``): a failover now could lose it.

    ``event`` is the applied write, as the method would have returned it (an
    :class:`~promptreg.AuditEvent` for label writes, a :class:`~promptreg.PromptVersion` for
    ``add_version``, a :class:`~promptreg.Prompt` for ``create_prompt``); ``confirmed`` is how many
    replicas had it, ``wanted`` how many were asked for. Do not blindly retry: the write is there.
    """

    def __init__(self, event: object, confirmed: int, wanted: int) -> None:
        super().__init__(
            f"the write was applied on the primary but only {confirmed} of {wanted} replicas confirmed it "
            "in time (WAIT): it may be lost if the primary fails now"
        )
        self.event = event
        self.confirmed = confirmed
        self.wanted = wanted


class PrimaryChangedError(ReplicationTimeoutError):
    """A write was applied on a Sentinel-managed primary, but when it returned the sentinels named
    another node, or a failover was under way: the failover may take it back (Redis then drops every
    write the old primary took that its replicas did not have).

    A :class:`ReplicationTimeoutError`: ``event`` is the applied write, ``confirmed`` how many
    replicas ``WAIT`` counted (0 without ``wait_replicas``), ``reason`` what the sentinels said. The
    change message is not published. Read the registry's state once the failover ended before
    writing again.
    """

    def __init__(self, event: object, reason: str, confirmed: int, wanted: int) -> None:
        RegistryUnavailableError.__init__(
            self,
            f"the write was applied on the primary, but {reason}: a failover may take it back; "
            "read the registry's state once it ended before writing again",
        )
        self.event = event
        self.reason = reason
        self.confirmed = confirmed
        self.wanted = wanted


class PromptTypeError(PromptRegistryError, TypeError):
    """A typed render found the other type of version: ``render_text`` a chat version, or
    ``render_chat`` a text version (:class:`promptreg.PromptClient`). Nothing was rendered.

    ``name`` and ``version`` say which version; ``expected`` is the type the method renders
    (``"text"`` or ``"chat"``), ``actual`` the type of the version found.
    """

    def __init__(self, name: str, version: int, expected: str, actual: str) -> None:
        method = "render_chat" if actual == "chat" else "render_text"
        super().__init__(
            f"prompt {name!r} version {version} is a {actual} prompt, not {expected}: use {method}() or render()"
        )
        self.name = name
        self.version = version
        self.expected = expected
        self.actual = actual


class AuthenticationRequiredError(PromptRegistryError):
    """``promptreg serve``: the request carries no valid token (HTTP 401)."""


class PermissionDeniedError(PromptRegistryError):
    """``promptreg serve``: the token's role may not do this (HTTP 403)."""
