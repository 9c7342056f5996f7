"""What one run of ``benchmarks/serve.py`` works with: the fixed names and paths, and its sizes.

The prompt the resolve and change-stream measurements use (:data:`NAME`, :data:`LABEL`), the paths
the load generator and the list measurement request, the change stream's target, and :class:`Plan`,
the sizes and repetitions the command's options chose. Every other ``_serve_*`` module reads these;
nothing here starts a process or measures anything.
"""

from __future__ import annotations

from dataclasses import dataclass

NAME = "bench-serve"
LABEL = "production"
TEXT = (
    "You are a support assistant for {{product}}. Answer in {{language}}, in at most three short "
    "paragraphs. Quote the policy section you used, never invent order numbers, and hand over to a "
    "human when the customer asks for one. Keep a neutral tone and ask one clarifying question when "
    "the request is ambiguous. This is version "
)
PAGE = 100
LIST_PATH = f"/api/v1/prompts?limit={PAGE}"
RESOLVE_PATH = f"/api/v1/prompts/{NAME}/resolve?label={LABEL}"
CONSOLE_PATH = "/"
WARMUP_MOVES = 2
"""Label moves made before the measured ones (their arrivals are checked, not timed)."""
TARGET_MS = 100.0
"""The change stream's target: every subscriber has a move within this many ms."""
READY_TIMEOUT = 120.0
"""Seconds a server gets to answer after its start, and the SSE subscribers to get their ``ready``."""


@dataclass(frozen=True)
class Plan:
    """Sizes and repetitions of one run."""

    quick: bool
    rounds: int
    seconds: float
    warmup: float
    concurrency: tuple[int, ...]
    subscribers: int
    moves: int
    spacing: float
    prompts: int
    list_requests: int
    cold_pages: int
    load_processes: int
    stream_processes: int
