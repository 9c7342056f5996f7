"""promptreg's registry: prompts with immutable versions and movable labels.

The public API is exactly ``__all__``; every other module is an implementation detail. The two
server backends load on first use (PEP 562), so a program on the JSON file (the command line's
default) does not import redis-py or psycopg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from promptreg.registry.base import PromptRegistry
from promptreg.registry.compatibility import CompatibilityReport
from promptreg.registry.errors import (
    ApprovalError,
    AuthenticationRequiredError,
    CompositionError,
    CompositionTooLargeError,
    ConfigurationError,
    ImportConflictError,
    IncompatibleDependentError,
    IncompatibleVersionError,
    InvalidInputError,
    InvalidNameError,
    LabelConflictError,
    LabelNotFoundError,
    MissingVariableError,
    PartialCycleError,
    PartialDepthError,
    PartialNotFoundError,
    PartialTypeError,
    PermissionDeniedError,
    PrimaryChangedError,
    PromptExistsError,
    PromptFileError,
    PromptNotFoundError,
    PromptRegistryError,
    PromptTooLargeError,
    PromptTypeError,
    ProtectedLabelError,
    RegistryAuthError,
    RegistryCorruptError,
    RegistryUnavailableError,
    ReplicationTimeoutError,
    RequestNotFoundError,
    RequestStateError,
    RollbackUnavailableError,
    RolloutActiveError,
    RolloutNotFoundError,
    StateReadError,
    VersionNotFoundError,
)
from promptreg.registry.factory import PromptRegistryFactory
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.fleet import FleetMember, FleetWait
from promptreg.registry.governance import Approval, LabelProtection, MoveRequest, RequestState
from promptreg.registry.migration import MigrationResult
from promptreg.registry.models import AuditEvent, Prompt, PromptVersion, PromptVersionLike, Rollout

__all__ = [
    "Approval",
    "ApprovalError",
    "AuditEvent",
    "AuthenticationRequiredError",
    "CompatibilityReport",
    "CompositionError",
    "CompositionTooLargeError",
    "ConfigurationError",
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

if TYPE_CHECKING:
    from promptreg.registry.postgres.store import PostgresPromptRegistry
    from promptreg.registry.redis.store import RedisPromptRegistry

_BACKENDS = {
    "PostgresPromptRegistry": "promptreg.registry.postgres.store",
    "RedisPromptRegistry": "promptreg.registry.redis.store",
}


def __getattr__(name: str) -> Any:
    module = _BACKENDS.get(name)
    if module is None:
        raise AttributeError(f"module 'promptreg.registry' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
