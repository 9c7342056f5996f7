"""Statistics, tables and JSON output shared by the benchmarks.

Percentiles use linear interpolation between closest ranks (numpy's default, ``method="linear"``).
Tables are Markdown pipe tables so the printed output pastes into the README unchanged.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

_NUMBER = re.compile(r"[-+]?[0-9][0-9,]*(\.[0-9]+)?(x|%| ?[a-zµ]{1,2})?|inf")
NOISE_NOTE = (
    "Machine: shared and noisy (2 cores, other jobs running): absolute numbers move from run to run; "
    "compare each figure with its floor/baseline measured in the same run."
)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation; raises on no values."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def summarize(values: Sequence[float]) -> dict[str, float]:
    """``n``, ``min``, ``p50`` (the median), ``p90``, ``p99``, ``max`` and ``mean`` of ``values``."""
    if not values:
        raise ValueError("summary of no values")
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": float(ordered[0]),
        "p50": percentile(ordered, 50),
        "p90": percentile(ordered, 90),
        "p99": percentile(ordered, 99),
        "max": float(ordered[-1]),
        "mean": float(statistics.fmean(ordered)),
    }


def ratio(value: float, floor: float) -> float:
    """``value / floor`` (``inf`` for a zero floor)."""
    return value / floor if floor > 0 else math.inf


def fmt(value: float | None, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, thousands separated; ``-`` for ``None``."""
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = max(0, digits - 1 - magnitude)
    return f"{value:,.{decimals}f}"


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{fmt(value, 3)}x"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], title: str | None = None) -> str:
    """A Markdown pipe table (numbers right-aligned), with an optional bold title line above it."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in text_rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def numeric(cell: str) -> bool:
        return _NUMBER.fullmatch(cell) is not None

    lines = []
    if title:
        lines += [f"**{title}**", ""]
    lines.append("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    lines.append("|" + "|".join("-" * (w + 1) + ":" if i else "-" * (w + 2) for i, w in enumerate(widths)) + "|")
    for row in text_rows:
        cells = [c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(redis_server_version: str, postgres_server_version: str | None = None) -> dict[str, Any]:
    """Where the figures come from: machine, interpreter, library and server versions, load.

    ``redis_server_version`` is ``"-"`` for a run on PostgreSQL alone.
    """
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "redis_py": _version("redis"),
        "hiredis": _version("hiredis"),
        "redis_server": redis_server_version,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "note": NOISE_NOTE,
    }
    if postgres_server_version is not None:
        env["postgres_server"] = postgres_server_version
        env["psycopg"] = _version("psycopg")
    return env


def environment_line(env: dict[str, Any]) -> str:
    load = env.get("load_average_1_5_15")
    load_text = "/".join(f"{x:.2f}" for x in load) if load else "?"
    return (
        f"Python {env['python']} on {env['platform']}, {env['cpu_count']} CPUs, load {load_text}; "
        f"redis-py {env['redis_py']} (hiredis: {env['hiredis']}); redis-server {env['redis_server']}"
        + (f"; PostgreSQL {env['postgres_server']} (psycopg {env['psycopg']})" if "postgres_server" in env else "")
    )


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (pretty-printed, atomically) when a path was given."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def heading(text: str) -> str:
    return f"\n## {text}\n"
