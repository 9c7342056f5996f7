"""promptreg's registry: prompts with immutable versions and movable labels.

The public API is exactly ``__all__``; every other module is an implementation detail.
"""

from registry.base import PromptRegistry
from registry.compatibility import CompatibilityReport
from registry.errors import (
    DemoError,
    ImportConflictError,
    IncompatibleVersionError,
    InvalidInputError,
    InvalidNameError,
    LabelConflictError,
    LabelNotFoundError,
    MissingVariableError,
    PrimaryChangedError,
    PromptExistsError,
    PromptFileError,
    PromptNotFoundError,
    PromptRegistryError,
    PromptTooLargeError,
    PromptTypeError,
    RegistryAuthError,
    RegistryCorruptError,
    RegistryUnavailableError,
    ReplicationTimeoutError,
    RollbackUnavailableError,
    StateReadError,
    VersionNotFoundError,
)
from registry.factory import PromptRegistryFactory
from registry.file_store import JsonFilePromptRegistry
from registry.fleet import FleetMember, FleetWait
from registry.migration import MigrationResult
from registry.models import AuditEvent, Prompt, PromptVersion
from registry.postgres_store import PostgresPromptRegistry
from registry.redis_store import RedisPromptRegistry

__all__ = [
    "AuditEvent",
    "CompatibilityReport",
    "DemoError",
    "FleetMember",
    "FleetWait",
    "ImportConflictError",
    "IncompatibleVersionError",
    "InvalidInputError",
    "InvalidNameError",
    "JsonFilePromptRegistry",
    "LabelConflictError",
    "LabelNotFoundError",
    "MigrationResult",
    "MissingVariableError",
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
    "RedisPromptRegistry",
    "RegistryAuthError",
    "RegistryCorruptError",
    "RegistryUnavailableError",
    "ReplicationTimeoutError",
    "RollbackUnavailableError",
    "StateReadError",
    "VersionNotFoundError",
]
