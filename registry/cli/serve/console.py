"""The web console of ``promptreg serve`` (placeholder until the console lands)."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route


def console_routes(server: Any) -> list[Route]:
    """The console's routes."""
    return []
