"""The propagation latency CDF (PNG), drawn when matplotlib (the ``[plot]`` extra) is installed."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cdf(values: list[float]) -> tuple[list[float], list[float]]:
    ordered = sorted(values)
    n = len(ordered)
    return ordered, [(i + 1) / n for i in range(n)]


def propagation_cdf(path: Path, raw: dict[str, Any], summary: dict[str, Any], clients: int) -> str:
    """Write the CDF to ``path``; returns what happened (the path, or why there is no plot)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not written: matplotlib is not installed (pip install matplotlib, the [plot] extra of promptreg-live)"
    ttl = summary["ttl_cache"]["ttl_s"]
    fig, ax = plt.subplots(figsize=(9, 6.2), dpi=110)
    curves = [
        (raw["raw"]["samples_ms"], "raw redis-py pub/sub, every subscriber (floor)", "tab:gray", "-"),
        (raw["raw"]["last_per_move_ms"], "raw pub/sub, last subscriber per move", "tab:gray", "--"),
        (raw["client"]["samples_ms"], "promptreg set_label -> on_change, every client", "tab:blue", "-"),
        (raw["client"]["last_per_move_ms"], "promptreg, last client per move", "tab:blue", "--"),
    ]
    fleet = [max(r["served_ms"]) for r in raw["rollbacks"] if r["served_ms"]]
    if fleet:
        curves.append((fleet, "promptreg rollback -> get() in every client (fleet-wide)", "tab:green", "-."))
    for values, label, color, style in curves:
        if values:
            xs, ys = _cdf(values)
            ax.step(xs, ys, where="post", label=label, color=color, linestyle=style)
    # A 60 s TTL cache: per-client staleness uniform on [0, ttl] (analytic), and its last of N clients.
    xs = [0.05 * (ttl * 1000 / 0.05) ** (i / 400) for i in range(401)]  # log-spaced, 0.05 ms .. ttl
    ax.plot(xs, [x / (ttl * 1000) for x in xs], color="tab:red", label=f"{ttl:g} s TTL cache, per client (analytic)")
    ax.plot(xs, [(x / (ttl * 1000)) ** clients for x in xs], color="tab:red", linestyle="--",
            label=f"{ttl:g} s TTL cache, last of {clients} clients (analytic)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlim(0.05, ttl * 1000 * 1.5)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("time from the label move until the process has the new version (ms, log scale)")
    ax.set_ylabel("fraction of deliveries")
    ax.set_title(f"Label move reaching {clients} processes on one 2-core machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return str(path)
