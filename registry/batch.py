"""Applying a plan (``sync``, ``import``) as one batch, and saying what an error left written.

On PostgreSQL a batch is one transaction, so an error leaves nothing; on Redis and the JSON file
each write is atomic on its own, so an error names the writes already made (running again
continues from there).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from promptreg.registry.base import PromptRegistry
from promptreg.registry.errors import PromptRegistryError, RegistryUnavailableError, ReplicationTimeoutError

StepT = TypeVar("StepT")

MAX_WRITES_NAMED = 20
"""How many of the writes already made an error during :func:`~promptreg.registry.sync.apply_sync` or
:func:`~promptreg.registry.backup.apply_import` names (then it says how many more)."""


def name_what_was_written(error: BaseException, operation: str, written: Sequence[str], *, atomic: bool) -> None:
    """Make ``error``, raised while ``operation`` (``sync``, ``import``) applied its plan, say what
    was written before it: the message of a promptreg error grows by that (type and attributes stay),
    any other error gets it as a note.

    ``written`` describes the writes made, in order (each a complete write); ``atomic`` says the
    writes were one transaction, so none of them stays (unless the store became unreachable while
    committing: then the error is left as it is, since the outcome is unknown).
    """
    if atomic:
        if isinstance(error, RegistryUnavailableError):
            return
        told = f"{operation} stopped: nothing was written (the {operation} is one transaction, rolled back)"
    elif not written:
        told = f"{operation} stopped before its first write: nothing was written"
    else:
        named = "; ".join(written[:MAX_WRITES_NAMED])
        more = f"; and {len(written) - MAX_WRITES_NAMED} more" if len(written) > MAX_WRITES_NAMED else ""
        told = (
            f"{operation} stopped after {len(written)} write(s), which stay made (each is complete; running the "
            f"{operation} again continues from there): {named}{more}"
        )
    if isinstance(error, PromptRegistryError):
        error.args = (f"{error} ({told})",)
    else:
        error.add_note(told)


def apply_in_batch(
    registry: PromptRegistry,
    operation: str,
    steps: Sequence[StepT],
    apply: Callable[[list[StepT]], None],
    describe: Callable[[StepT], str],
) -> list[StepT]:
    """Run ``apply(done)`` (which appends each step of ``steps`` to ``done`` as it is made) as one
    batch of ``registry`` (one transaction where the backend has them); returns ``done``. An error
    is re-raised saying what was written before it (:func:`name_what_was_written`); a write whose
    replication wait timed out counts as made (it is on the primary)."""
    done: list[StepT] = []
    try:
        with registry._batch():
            apply(done)
    except BaseException as exc:
        made = list(done)
        if isinstance(exc, ReplicationTimeoutError) and len(done) < len(steps):
            made.append(steps[len(done)])  # applied on the primary, not yet replicated
        name_what_was_written(exc, operation, [describe(step) for step in made], atomic=registry._atomic_batches)
        raise
    return done
