"""promptreg: prompts as production code — immutable versions, movable labels, and a thin client whose
in-process cache is kept fresh by push.

::

    from promptreg import PromptClient, PromptRegistryFactory

    registry = PromptRegistryFactory.from_url("redis://localhost:6379/0")
    registry.create_prompt("movie-critic")
    registry.add_version("movie-critic", "Review {{movie}} as a {{criticlevel}} critic.")
    registry.set_label("movie-critic", "production", 1)

    prompts = PromptClient("redis://localhost:6379/0")
    text = prompts.render("movie-critic", movie="Alien", criticlevel="harsh")  # no I/O

Everything a user writes against is importable from here (exactly ``__all__``). The write side lives
in :mod:`promptreg.registry` (its backends in ``promptreg.registry.redis`` and
``promptreg.registry.postgres``, the command line in ``promptreg.registry.cli``), the read side in
:mod:`promptreg.client`. In the repository these are the top-level folders ``registry/`` and
``client/``; the packaging maps them under this root, so nothing is installed under a generic
top-level name such as ``client``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from promptreg.client import CachedVersion, ChangeEvent, ClientState, ClientStatus, ErrorKind, PromptClient
    from promptreg.registry import (
        Approval,
        ApprovalError,
        AuditEvent,
        AuthenticationRequiredError,
        CompatibilityReport,
        CompositionError,
        CompositionTooLargeError,
        ConfigurationError,
        FleetMember,
        FleetWait,
        ImportConflictError,
        IncompatibleDependentError,
        IncompatibleVersionError,
        InvalidInputError,
        InvalidNameError,
        JsonFilePromptRegistry,
        LabelConflictError,
        LabelNotFoundError,
        LabelProtection,
        MigrationResult,
        MissingVariableError,
        MoveRequest,
        PartialCycleError,
        PartialDepthError,
        PartialNotFoundError,
        PartialTypeError,
        PermissionDeniedError,
        PostgresPromptRegistry,
        PrimaryChangedError,
        Prompt,
        PromptExistsError,
        PromptFileError,
        PromptNotFoundError,
        PromptRegistry,
        PromptRegistryError,
        PromptRegistryFactory,
        PromptTooLargeError,
        PromptTypeError,
        PromptVersion,
        PromptVersionLike,
        ProtectedLabelError,
        RedisPromptRegistry,
        RegistryAuthError,
        RegistryCorruptError,
        RegistryUnavailableError,
        ReplicationTimeoutError,
        RequestNotFoundError,
        RequestState,
        RequestStateError,
        RollbackUnavailableError,
        Rollout,
        RolloutActiveError,
        RolloutNotFoundError,
        StateReadError,
        VersionNotFoundError,
    )

__all__ = [
    "Approval",
    "ApprovalError",
    "AuditEvent",
    "AuthenticationRequiredError",
    "CachedVersion",
    "ChangeEvent",
    "ClientState",
    "ClientStatus",
    "CompatibilityReport",
    "CompositionError",
    "CompositionTooLargeError",
    "ConfigurationError",
    "ErrorKind",
    "FleetMember",
    "FleetWait",
    "ImportConflictError",
    "IncompatibleDependentError",
    "IncompatibleVersionError",
    "InvalidInputError",
    "InvalidNameError",
    "JsonFilePromptRegistry",
    "LabelConflictError",
    "LabelNotFoundError",
    "LabelProtection",
    "MigrationResult",
    "MissingVariableError",
    "MoveRequest",
    "PartialCycleError",
    "PartialDepthError",
    "PartialNotFoundError",
    "PartialTypeError",
    "PermissionDeniedError",
    "PostgresPromptRegistry",
    "PrimaryChangedError",
    "Prompt",
    "PromptClient",
    "PromptExistsError",
    "PromptFileError",
    "PromptNotFoundError",
    "PromptRegistry",
    "PromptRegistryError",
    "PromptRegistryFactory",
    "PromptTooLargeError",
    "PromptTypeError",
    "PromptVersion",
    "PromptVersionLike",
    "ProtectedLabelError",
    "RedisPromptRegistry",
    "RegistryAuthError",
    "RegistryCorruptError",
    "RegistryUnavailableError",
    "ReplicationTimeoutError",
    "RequestNotFoundError",
    "RequestState",
    "RequestStateError",
    "RollbackUnavailableError",
    "Rollout",
    "RolloutActiveError",
    "RolloutNotFoundError",
    "StateReadError",
    "VersionNotFoundError",
]

_CLIENT_NAMES = frozenset({"CachedVersion", "ChangeEvent", "ClientState", "ClientStatus", "ErrorKind", "PromptClient"})


def __getattr__(name: str) -> Any:
    # Loaded on first use (PEP 562), so `import promptreg.registry.cli` (the command line) does not
    # also import the client, and an application that only reads pays nothing for the CLI.
    if name not in __all__:
        raise AttributeError(f"module 'promptreg' has no attribute {name!r}")
    module = importlib.import_module("promptreg.client" if name in _CLIENT_NAMES else "promptreg.registry")
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
