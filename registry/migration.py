"""The result of :meth:`promptreg.PromptRegistry.migrate` (``promptreg migrate``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What :meth:`promptreg.PromptRegistry.migrate` did.

    ``changed`` is whether anything was written; ``prompts`` how many prompts' index entries were
    (re)built; ``message`` one line for people.
    """

    changed: bool
    prompts: int
    message: str
