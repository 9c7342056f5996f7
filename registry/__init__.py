"""promptreg's registry: prompts with immutable versions and movable labels.

The public API is exactly ``__all__``; every other module is an implementation detail.
"""

from promptreg.registry.base import PromptRegistry
from promptreg.registry.compatibility import CompatibilityReport
from promptreg.registry.errors import (
    ConfigurationError,
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
from promptreg.registry.factory import PromptRegistryFactory
from promptreg.registry.file_store import JsonFilePromptRegistry
from promptreg.registry.fleet import FleetMember, FleetWait
from promptreg.registry.migration import MigrationResult
from promptreg.registry.models import AuditEvent, Prompt, PromptVersion
from promptreg.registry.postgres.store import PostgresPromptRegistry
from promptreg.registry.redis.store import RedisPromptRegistry

__all__ = [
    "AuditEvent",
    "CompatibilityReport",
    "ConfigurationError",
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
