"""The propagation benchmark's figures (``benchmarks/propagation.py``): the summary of a run, its
tables, and the analytic staleness of a TTL cache printed beside them."""

from __future__ import annotations

from typing import Any

from benchmarks import _report
from benchmarks._propagation_paths import Paths

TTL_SECONDS = 60.0
FLOOR_TEXT = {
    "publish": ("raw redis-py pub/sub", "PUBLISH", "SUBSCRIBE"),
    "spublish": ("raw redis-py sharded pub/sub", "SPUBLISH", "SSUBSCRIBE"),
    "notify": ("raw psycopg LISTEN/NOTIFY", "NOTIFY", "LISTEN"),
}
"""Per raw path: the floor's name, the parent's send and the subscriber's command."""


def ttl_staleness(clients: int, ttl: float = TTL_SECONDS) -> dict[str, Any]:
    """Analytic staleness of a TTL cache after a label move (not measured).

    Model: each process fetched its entry at a moment unrelated to the move, so the entry's
    remaining life at the move is uniform on [0, ttl]; the process serves the old version that long
    (plus one refresh round trip, ignored; stale-while-revalidate serves one more stale answer).
    Per process: the q-quantile is ``q * ttl``. Last of N processes: the max of N uniforms, whose
    q-quantile is ``ttl * q ** (1 / N)`` and mean ``ttl * N / (N + 1)``.
    """
    return {
        "method": "analytic: remaining TTL uniform on [0, ttl], independent per process",
        "ttl_s": ttl,
        "per_client_s": {"p50": 0.5 * ttl, "p99": 0.99 * ttl, "max": ttl},
        "last_client_s": {
            "p50": ttl * 0.5 ** (1 / clients),
            "p99": ttl * 0.99 ** (1 / clients),
            "mean": ttl * clients / (clients + 1),
            "max": ttl,
        },
    }


def summary_of(raw: dict[str, Any], clients: int) -> dict[str, Any]:
    client, floor = raw["client"], raw["raw"]
    rollback_fleet = [max(r["served_ms"]) for r in raw["rollbacks"] if r["served_ms"]]
    rollback_all = [t for r in raw["rollbacks"] for t in r["served_ms"]]
    notified_fleet = [max(r["on_change_ms"]) for r in raw["rollbacks"] if r["on_change_ms"]]
    notified_all = [t for r in raw["rollbacks"] for t in r["on_change_ms"]]
    out: dict[str, Any] = {
        "promptreg_on_change_ms": _report.summarize(client["samples_ms"]),
        "promptreg_last_client_per_move_ms": _report.summarize(client["last_per_move_ms"]),
        "raw_pubsub_ms": _report.summarize(floor["samples_ms"]),
        "raw_pubsub_last_subscriber_per_move_ms": _report.summarize(floor["last_per_move_ms"]),
        "missed_moves": sum(client["missed_per_process"]),
        "missed_raw_messages": sum(floor["missed_per_process"]),
        "rollback_fleet_ms": _report.summarize(rollback_fleet) if rollback_fleet else None,
        "rollback_per_client_ms": _report.summarize(rollback_all) if rollback_all else None,
        "rollback_on_change_fleet_ms": _report.summarize(notified_fleet) if notified_fleet else None,
        "rollback_on_change_per_client_ms": _report.summarize(notified_all) if notified_all else None,
        "rollback_not_served": sum(r["not_served"] for r in raw["rollbacks"]),
        "write_lead_us": _report.summarize(raw["write_lead_us"]),
        "unaligned_moves": raw["unaligned_moves"],
        "ttl_cache": ttl_staleness(clients),
    }
    a, b = out["promptreg_on_change_ms"], out["raw_pubsub_ms"]
    c, d = out["promptreg_last_client_per_move_ms"], out["raw_pubsub_last_subscriber_per_move_ms"]
    out["ratios_to_raw"] = {
        "p50": _report.ratio(a["p50"], b["p50"]), "p99": _report.ratio(a["p99"], b["p99"]),
        "max": _report.ratio(a["max"], b["max"]), "last_client_p50": _report.ratio(c["p50"], d["p50"]),
        "last_client_p99": _report.ratio(c["p99"], d["p99"]),
    }  # fmt: skip
    return out


def print_run(summary: dict[str, Any], raw: dict[str, Any], config: dict[str, Any], paths: Paths) -> None:
    n, m = config["clients"], config["moves"]
    floor, send, listen = FLOOR_TEXT[paths.raw_kind]
    print(f"\n### {paths.backend}, topology {paths.topology}\n")
    print(
        f"{n} PromptClient processes and {n} raw {listen} processes ({paths.where}); {m} measured moves per "
        f"fleet (after {config['warmup_moves']} warm-up), in alternating blocks of {config['block']}; the next move "
        f"starts when every process has the last one, after a 2-10 ms pause. Latency = arrival stamp in the process "
        f"(CLOCK_MONOTONIC) - stamp in the parent as the command that publishes enters the driver: set_label()'s "
        f"{'statement calling pg_notify' if send == 'NOTIFY' else 'write script (FCALL) or deferred ' + send} / "
        f"the floor's {send}. Left out of promptreg's figures: set_label()'s Python before that command, p50 "
        f"{_report.fmt(summary['write_lead_us']['p50'])} us (moves timed from the call instead, the driver "
        f"path not recognised: {summary['unaligned_moves']['client']} promptreg, "
        f"{summary['unaligned_moves']['raw']} floor).\n"
    )
    s = summary
    rows = []
    for label, key, ratio_key in (
        (f"{floor} (floor), every subscriber", "raw_pubsub_ms", None),
        ("promptreg set_label -> on_change, every client", "promptreg_on_change_ms", ""),
        (f"{floor}, last subscriber per move", "raw_pubsub_last_subscriber_per_move_ms", None),
        ("promptreg, last client per move", "promptreg_last_client_per_move_ms", "last_client_"),
    ):
        st = s[key]
        ratios = s["ratios_to_raw"]
        p99_ratio = None if ratio_key is None else ratios[f"{ratio_key}p99"]
        p50_ratio = None if ratio_key is None else ratios[f"{ratio_key}p50"]
        rows.append((label, f"{st['n']:,}", _report.fmt(st["p50"]), _report.fmt(st["p99"]), _report.fmt(st["max"]),
                     _report.fmt_ratio(p50_ratio), _report.fmt_ratio(p99_ratio)))  # fmt: skip
    headers = ["path", "samples", "p50 ms", "p99 ms", "max ms", "p50 / floor", "p99 / floor"]
    print(_report.table(headers, rows, title=f"Label move -> {n} processes ({paths.backend}, {paths.topology})"))
    expected = raw["expected_events_per_client"]
    complete = sum(count == expected for count in raw["events_per_client"])
    print(
        f"\nMissed moves: {s['missed_moves']} (of {m} x {n}); raw messages missed: {s['missed_raw_messages']}; "
        f"clients that counted all {expected} changes: {complete}/{n}; clients at the final version: "
        f"{raw['clients_at_final_version']}/{n}; client states: {', '.join(raw['client_states'])}; fleet reports "
        f"(acknowledgements included) per client: median {_median(raw['reports_per_client'])} for {expected} changes."
    )
    ttl = s["ttl_cache"]
    rollback_rows = []
    for text, fleet, per in (
        ("promptreg: rollback() -> on_change in every client", s["rollback_on_change_fleet_ms"],
         s["rollback_on_change_per_client_ms"]),
        ("promptreg: rollback() -> get() serves it in every client", s["rollback_fleet_ms"],
         s["rollback_per_client_ms"]),
    ):  # fmt: skip
        if fleet and per:
            rollback_rows.append((text, str(fleet["n"]), _report.fmt(fleet["p50"]), _report.fmt(fleet["max"]),
                                  _report.fmt(per["p50"]), _report.fmt(per["p99"])))  # fmt: skip
    rollback_rows.append(
        ("60 s TTL cache (analytic, uniform 0-60 s)", "-", _report.fmt(ttl["last_client_s"]["p50"] * 1000),
         _report.fmt(ttl["last_client_s"]["max"] * 1000), _report.fmt(ttl["per_client_s"]["p50"] * 1000),
         _report.fmt(ttl["per_client_s"]["p99"] * 1000))
    )  # fmt: skip
    print()
    print(
        _report.table(
            ["fleet-wide rollback", "runs", "fleet p50 ms", "fleet max ms", "per-client p50 ms", "per-client p99 ms"],
            rollback_rows,
            title=f"Fleet-wide rollback, {n} processes (fleet = until the last process has it; same trials)",
        )
    )
    print(
        f"\nTTL cache model: each process's entry has a remaining life uniform on 0-{ttl['ttl_s']:g} s when the "
        f"label moves, independently; the last of {n} processes then serves the old version for "
        f"{ttl['last_client_s']['mean']:.1f} s on average. Analytic, not measured."
    )
    if s["rollback_not_served"]:
        print(f"WARNING: {s['rollback_not_served']} client(s) did not serve a rollback within 30 s")


def side_by_side(runs: list[dict[str, Any]]) -> str:
    """One table: each run's floor and promptreg, p50/p99 and ratios, missed."""
    rows = []
    for r in runs:
        s, paths = r["summary"], r["paths"]
        floor = FLOOR_TEXT[paths.raw_kind][0]
        fl, pr = s["raw_pubsub_ms"], s["promptreg_on_change_ms"]
        lf, lp = s["raw_pubsub_last_subscriber_per_move_ms"], s["promptreg_last_client_per_move_ms"]
        ratios = s["ratios_to_raw"]
        rows.append((paths.backend, paths.topology, f"{floor} (floor)", _report.fmt(fl["p50"]), _report.fmt(fl["p99"]),
                     _report.fmt(lf["p50"]), "-", "-", str(s["missed_raw_messages"])))  # fmt: skip
        rows.append((paths.backend, paths.topology, "promptreg set_label -> on_change", _report.fmt(pr["p50"]),
                     _report.fmt(pr["p99"]), _report.fmt(lp["p50"]), _report.fmt_ratio(ratios["p50"]),
                     _report.fmt_ratio(ratios["p99"]), str(s["missed_moves"])))  # fmt: skip
    headers = ["backend", "topology", "path", "p50 ms", "p99 ms", "last client p50 ms", "p50 / floor", "p99 / floor",
               "missed"]  # fmt: skip
    return _report.table(headers, rows, title="Side by side (each ratio to the floor of its own backend, same run)")


def _median(values: list[int | None]) -> str:
    known = sorted(v for v in values if v is not None)
    return "-" if not known else f"{known[len(known) // 2]:,}"


def counts(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "events_per_client": raw["events_per_client"],
        "expected_events_per_client": raw["expected_events_per_client"],
        "missed_per_client": raw["client"]["missed_per_process"],
        "missed_per_raw_subscriber": raw["raw"]["missed_per_process"],
        "clients_at_final_version": raw["clients_at_final_version"],
        "waits_timed_out": raw["waits_timed_out"],
        "client_states": raw["client_states"],
        "reports_per_client": raw["reports_per_client"],
    }
