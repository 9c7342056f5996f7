"""The public face of ``registry``: exactly these names, one error tree, documented, one-way imports."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

from promptreg import registry

PUBLIC_NAMES = [
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
ERRORS = [name for name in PUBLIC_NAMES if name.endswith("Error")]
PACKAGE_DIR = Path(registry.__file__).parent


def test_all_is_exactly_the_public_api() -> None:
    assert sorted(registry.__all__) == PUBLIC_NAMES
    assert len(registry.__all__) == len(set(registry.__all__))


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("promptreg.registry")
    assert getattr(module, name) is getattr(registry, name)
    namespace: dict[str, object] = {}
    exec(f"from promptreg.registry import {name}", namespace)
    assert namespace[name] is getattr(registry, name)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from promptreg.registry import *", namespace)
    assert sorted(k for k in namespace if not k.startswith("__")) == PUBLIC_NAMES


@pytest.mark.parametrize("name", ERRORS)
def test_every_error_is_in_the_one_tree(name: str) -> None:
    error = getattr(registry, name)
    assert issubclass(error, registry.PromptRegistryError)
    assert issubclass(error, Exception)


def test_every_error_class_in_the_errors_module_is_exported() -> None:
    from promptreg.registry import errors

    defined = {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and not name.startswith("_")
    }
    assert defined == set(ERRORS)


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("PromptNotFoundError", KeyError),
        ("VersionNotFoundError", KeyError),
        ("LabelNotFoundError", KeyError),
        ("MissingVariableError", KeyError),
        ("InvalidInputError", ValueError),
        ("InvalidNameError", ValueError),
        ("PromptTooLargeError", ValueError),
        ("RegistryUnavailableError", ConnectionError),
        ("RegistryAuthError", ConnectionError),
        ("ReplicationTimeoutError", ConnectionError),
        ("PrimaryChangedError", ConnectionError),
        ("PromptFileError", ValueError),
        ("PromptTypeError", TypeError),
    ],
)
def test_errors_derive_from_the_builtin_that_fits(name: str, builtin: type[Exception]) -> None:
    assert issubclass(getattr(registry, name), builtin)


def test_name_and_size_errors_are_input_errors() -> None:
    assert issubclass(registry.InvalidNameError, registry.InvalidInputError)
    assert issubclass(registry.PromptTooLargeError, registry.InvalidInputError)
    assert issubclass(registry.PromptFileError, registry.InvalidInputError)


def test_an_auth_failure_is_a_kind_of_unavailable() -> None:
    # Code that retries on RegistryUnavailableError keeps working; code that must tell "wrong
    # password" from "down" catches RegistryAuthError first.
    assert issubclass(registry.RegistryAuthError, registry.RegistryUnavailableError)


def _public_members(cls: type) -> list[tuple[str, object]]:
    """Public functions and properties the class itself defines (not inherited from pydantic)."""
    members: list[tuple[str, object]] = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, staticmethod | classmethod):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            members.append((attr, value))
    return members


@pytest.mark.parametrize("name", PUBLIC_NAMES)
def test_public_names_and_their_methods_are_documented(name: str) -> None:
    obj = getattr(registry, name)
    assert (obj.__doc__ or "").strip(), f"{name} has no docstring"
    if inspect.isclass(obj):
        for attr, member in _public_members(obj):
            assert (member.__doc__ or "").strip(), f"{name}.{attr} has no docstring"


@pytest.mark.parametrize(
    "method", ["create_prompt", "add_version", "set_label", "delete_label", "rollback", "get_version", "history"]
)
def test_interface_docstrings_say_what_they_raise(method: str) -> None:
    doc = getattr(registry.PromptRegistry, method).__doc__ or ""
    assert "Raises" in doc and "Error" in doc, method


def test_every_backend_implements_the_interface() -> None:
    for backend in (registry.RedisPromptRegistry, registry.JsonFilePromptRegistry):
        assert issubclass(backend, registry.PromptRegistry)
        assert not inspect.isabstract(backend), backend.__abstractmethods__


def _library_modules() -> list[Path]:
    # Everything under registry/ except the application on the top floor, registry/cli/, which may use
    # both registry and client and talk to a terminal. The rule is by directory, not a list of files.
    cli_dir = PACKAGE_DIR / "cli"
    return sorted(p for p in PACKAGE_DIR.rglob("*.py") if cli_dir not in p.parents)


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"relative import in {path}:{node.lineno}"
            names.add(node.module or "")
    return names


def _imported_top_packages(path: Path) -> set[str]:
    """The top-level packages ``path`` imports; ``promptreg.X`` counts as ``X`` (registry, client)."""
    tops: set[str] = set()
    for name in _imported_modules(path):
        parts = name.split(".")
        tops.add(parts[1] if parts[0] == "promptreg" and len(parts) > 1 else parts[0])
    return tops


REPO = Path(__file__).resolve().parent.parent
BACKENDS = {
    REPO / "registry" / "redis": ("promptreg.registry.postgres", "promptreg.client"),
    REPO / "registry" / "postgres": ("promptreg.registry.redis", "promptreg.client", "redis"),
    REPO / "client" / "redis": ("promptreg.client.postgres", "promptreg.registry.postgres"),
    REPO / "client" / "postgres": ("promptreg.client.redis", "promptreg.registry.redis", "redis"),
}


@pytest.mark.parametrize("folder", sorted(BACKENDS), ids=lambda p: str(p.relative_to(REPO)))
def test_no_backend_folder_imports_another_backend(folder: Path) -> None:
    forbidden = BACKENDS[folder]
    modules = sorted(folder.rglob("*.py"))
    assert len(modules) >= 2, folder
    for path in modules:
        for name in _imported_modules(path):
            assert not any(name == bad or name.startswith(bad + ".") for bad in forbidden), (path.name, name)


def test_everything_is_imported_through_the_one_root() -> None:
    # The repository's registry/ and client/ are installed as promptreg.registry and promptreg.client:
    # an import of a bare `registry` or `client` works in the checkout only, and would find an
    # application's own client.py once installed.
    files = [
        p
        for top in ("registry", "client", "promptreg", "tests", "benchmarks", "devservers")
        for p in (REPO / top).rglob("*.py")
    ]
    assert len(files) > 100
    for path in files:
        for name in _imported_modules(path):
            assert name.split(".")[0] not in ("registry", "client"), f"{path.relative_to(REPO)} imports {name}"


def test_the_root_exports_the_registry_and_the_client() -> None:
    import promptreg
    from promptreg import client

    assert sorted(promptreg.__all__) == sorted([*PUBLIC_NAMES, *client.__all__])
    for name in promptreg.__all__:
        assert getattr(promptreg, name) is getattr(registry if name in PUBLIC_NAMES else client, name)


def test_only_the_cli_package_imports_client() -> None:
    importers = sorted(
        str(path.relative_to(PACKAGE_DIR.parent))
        for path in PACKAGE_DIR.rglob("*.py")
        if "client" in _imported_top_packages(path)
    )
    assert importers, "the CLI's watch/demo use client: the check must see them"
    assert all(name.startswith("registry/cli/") for name in importers), importers


def test_registry_library_never_imports_client_and_never_prints() -> None:
    modules = _library_modules()
    assert len(modules) > 10
    for path in modules:
        assert "client" not in _imported_top_packages(path), path.name
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "print", f"print() in {path.name}:{node.lineno}"
