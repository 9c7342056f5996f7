"""The composition benchmark's figures (``benchmarks/composition.py``): the summary of a run from the
parent's moves and the processes' stamps, and its tables."""

from __future__ import annotations

from typing import Any

from benchmarks import _report
from benchmarks._composition_seed import PARTIAL, SOLO

KINDS = {SOLO: "plain", PARTIAL: "partial"}
"""The moved prompt -> the kind of move in the summary."""
TARGET = 1.3
"""``get()`` of a composed prompt: at most this many times the floor (median)."""


def _stats(values: list[float]) -> dict[str, float] | None:
    return _report.summarize(values) if values else None


def summary_of(moves: list[dict[str, Any]], reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind of move (``plain``, ``partial``): every figure over all (move, process) pairs, per
    move, and in the parent; then the ratios partial / plain."""
    stamps = [{rev: (name, version, entered, served, ok) for rev, name, version, entered, served, ok in r["stamps"]}
              for r in reports]  # fmt: skip
    applies = [{rev: (prompt, cpu, wall) for rev, prompt, cpu, wall in r["applies"]} for r in reports]
    out: dict[str, Any] = {}
    for name, kind in KINDS.items():
        mine = [m for m in moves if m["name"] == name]
        served: list[float] = []
        entered: list[float] = []
        checks: list[float] = []
        last: list[float] = []
        cpu: list[float] = []
        wall: list[float] = []
        fleet_cpu: list[float] = []
        missed = wrong = no_apply = 0
        missed_by: set[int] = set()
        for move in mine:
            rev, called = move["rev"], move["called_ns"]
            arrivals = []
            total_cpu = 0.0
            for index, (got, spent) in enumerate(zip(stamps, applies, strict=True)):
                hit = got.get(rev)
                if hit is None or not hit[4] or hit[1] != move["version"]:
                    missed += 1
                    wrong += hit is not None
                    missed_by.add(index)
                else:
                    arrivals.append((hit[3] - called) / 1e6)
                    entered.append((hit[2] - called) / 1e6)
                    checks.append((hit[3] - hit[2]) / 1e6)
                applied = spent.get(rev)
                if applied is None or applied[0] != name:
                    no_apply += 1
                    continue
                cpu.append(applied[1] / 1e6)
                wall.append(applied[2] / 1e6)
                total_cpu += applied[1] / 1e6
            served += arrivals
            if arrivals:
                last.append(max(arrivals))
            fleet_cpu.append(total_cpu)
        set_label = [(m["returned_ns"] - m["called_ns"]) / 1e6 for m in mine]
        leads = [(m["published_ns"] - m["called_ns"]) / 1e6 for m in mine if m["published_ns"] is not None]
        out[kind] = {
            "prompt": name,
            "moves": len(mine),
            "served_ms": _stats(served),
            "on_change_ms": _stats(entered),
            "check_ms": _stats(checks),
            "last_process_ms": _stats(last),
            "set_label_ms": _stats(set_label),
            "before_publish_ms": _stats(leads),
            "unaligned_moves": len(mine) - len(leads),
            "apply_cpu_ms": _stats(cpu),
            "apply_wall_ms": _stats(wall),
            "fleet_apply_cpu_per_move_ms": _stats(fleet_cpu),
            "missed": missed,
            "served_wrong": wrong,
            "processes_that_missed": len(missed_by),
            "apply_not_recorded": no_apply,
            "waits_timed_out": sum(m["timed_out"] for m in mine),
        }
    plain, partial = out["plain"], out["partial"]
    ratios: dict[str, float | None] = {}
    for key in ("served_ms", "last_process_ms", "set_label_ms", "apply_cpu_ms"):
        for q in ("p50", "p99"):
            a, b = partial[key], plain[key]
            ratios[f"{key[:-3]}_{q}"] = None if a is None or b is None else _report.ratio(a[q], b[q])
    out["ratios_partial_to_plain"] = ratios
    out["missed_moves"] = plain["missed"] + partial["missed"]
    return out


def counts(reports: list[dict[str, Any]], expected_version: int) -> dict[str, Any]:
    return {
        "texts_exact_at_end": sum(r["texts_ok"] for r in reports),
        "processes_at_final_version": sum(r["partial_version"] == expected_version for r in reports),
        "client_states": sorted({r["state"] for r in reports}),
    }


def _cells(stats: dict[str, float] | None, *keys: str) -> list[str]:
    return ["-" if stats is None else _report.fmt(stats[k]) for k in keys]


def lookup_table(lookup: dict[str, Any], backend: str) -> str:
    names = {
        "floor": "CPython floor: a method doing one dict lookup",
        "plain": "PromptClient.get, plain prompt of the same size",
        "composed": "PromptClient.get, composed prompt (2 partials, one nested)",
    }
    rows = [
        (names[r["contender"]], _report.fmt(r["median_ns"]), _report.fmt(r["p99_ns"]),
         _report.fmt_ratio(r["ratio_to_floor_median"]), _report.fmt_ratio(r["ratio_to_floor_p99"]),
         _report.fmt_ratio(r["ratio_to_plain_median"]))
        for r in lookup["rows"]
    ]  # fmt: skip
    headers = ["get() of", "median ns", "p99 ns", "median / floor", "p99 / floor", "median / plain"]
    title = f"get() of a composed prompt, 1 thread ({backend}; {lookup['names']:,} names looked up in turn)"
    return _report.table(headers, rows, title=title)


def lookup_verdict(lookup: dict[str, Any]) -> str:
    composed = next(r for r in lookup["rows"] if r["contender"] == "composed")
    ratio = composed["ratio_to_floor_median"]
    met = "met" if ratio <= TARGET else "NOT met"
    return f"Target: get() of a composed prompt <= {TARGET}x the floor (median): {ratio:.2f}x, {met}."


def propagation_table(s: dict[str, Any], clients: int, dependents: int, backend: str) -> str:
    rows = []
    for kind, text in (("plain", "plain label move (no dependents): baseline"),
                       ("partial", f"partial move ({dependents:,} dependents recomposed)")):  # fmt: skip
        k = s[kind]
        ratio_p50 = ratio_p99 = "-"
        if kind == "partial":
            ratio_p50 = _report.fmt_ratio(s["ratios_partial_to_plain"]["served_p50"])
            ratio_p99 = _report.fmt_ratio(s["ratios_partial_to_plain"]["served_p99"])
        n = "-" if k["served_ms"] is None else f"{k['served_ms']['n']:,}"
        rows.append((text, n, *_cells(k["served_ms"], "p50", "p99", "max"),
                     *_cells(k["last_process_ms"], "p50", "p99"), ratio_p50, ratio_p99, str(k["missed"])))  # fmt: skip
    headers = ["move", "samples", "p50 ms", "p99 ms", "max ms", "last process p50 ms", "last process p99 ms",
               "p50 / plain", "p99 / plain", "missed"]  # fmt: skip
    title = f"set_label() call -> every dependent served recomposed, {clients} processes ({backend})"
    return _report.table(headers, rows, title=title)


def breakdown_table(s: dict[str, Any], backend: str) -> str:
    rows = []
    for kind, text in (("plain", "plain label move"), ("partial", "partial move")):
        k = s[kind]
        rows.append((text, *_cells(k["before_publish_ms"], "p50"), *_cells(k["set_label_ms"], "p50", "p99"),
                     *_cells(k["on_change_ms"], "p50"), *_cells(k["check_ms"], "p50"),
                     *_cells(k["served_ms"], "p50")))  # fmt: skip
    headers = ["move", "call -> publishing command", "call -> set_label returns", "(p99)",
               "call -> on_change (p50 of processes)", "check in the process", "call -> served (p50)"]  # fmt: skip
    return _report.table(headers, rows, title=f"Where the time goes, medians in ms ({backend})")


def cpu_table(s: dict[str, Any], clients: int, backend: str) -> str:
    rows = []
    for kind, text in (("plain", "plain label move"), ("partial", "partial move")):
        k = s[kind]
        ratio = "-" if kind == "plain" else _report.fmt_ratio(s["ratios_partial_to_plain"]["apply_cpu_p50"])
        n = "-" if k["apply_cpu_ms"] is None else f"{k['apply_cpu_ms']['n']:,}"
        rows.append((text, n, *_cells(k["apply_cpu_ms"], "p50", "p99", "max"), *_cells(k["apply_wall_ms"], "p50",
                     "p99"), *_cells(k["fleet_apply_cpu_per_move_ms"], "p50"), ratio))  # fmt: skip
    headers = ["move", "samples", "CPU p50 ms", "CPU p99 ms", "CPU max ms", "wall p50 ms", "wall p99 ms",
               f"fleet CPU per move ({clients} processes) p50 ms", "CPU p50 / plain"]  # fmt: skip
    title = f"Client CPU per move: Cache.apply of the change message, feed thread CPU time ({backend})"
    return _report.table(headers, rows, title=title)


def print_run(run: dict[str, Any], config: dict[str, Any]) -> None:
    backend, n, deps = run["backend"], config["clients"], config["dependents"]
    print(f"\n### {backend}\n")
    seeded = run["seed_seconds"]
    print(
        f"Seeded {deps:,} dependents (compatibility {config['compatibility']}) and {deps:,} plain look-alikes "
        f"through the public API in {sum(seeded.values()):.1f} s (dependents {seeded['dependents_s']:.1f} s).\n"
    )
    lookup = run.get("lookup")
    if lookup is not None:
        print(
            f"Per-lookup ns = time of a block of {config['lookup']['block']} get() calls / "
            f"{config['lookup']['block']}, {config['lookup']['repeats']} blocks per contender in "
            f"{config['lookup']['rounds']} interleaved rounds, GC off while timing; text "
            f"{lookup['text_chars']} chars (benchmarks/_timing.py, the floor of benchmarks/lookup.py).\n"
        )
        print(lookup_table(lookup, backend))
        print(f"\n{lookup_verdict(lookup)}")
    s = run.get("summary")
    if s is None:
        return
    m = config["moves"]
    print(f"\n{n} PromptClient processes, one partial included by {deps:,} prompts at production. {m} measured "
          f"moves of each kind (after {config['warmup_moves']} warm-up each) in alternating blocks of "
          f"{config['block']}, the plain move first; the next move starts when every process serves the last one, "
          f"after a 2-10 ms pause. Latency = CLOCK_MONOTONIC in the process once its on_change callback has "
          f"checked every dependent (get(dep).partials['{PARTIAL}'] is the new version) - CLOCK_MONOTONIC "
          f"in the parent as set_label() is called.\n")  # fmt: skip
    print(propagation_table(s, n, deps, backend))
    counted = run["counts"]
    p, q = s["partial"], s["plain"]
    print(f"\nMissed moves: {s['missed_moves']} (of {2 * m} x {n}; a process missed a move if it never served it "
          f"or served another version); processes that missed any: partial {p['processes_that_missed']}, plain "
          f"{q['processes_that_missed']}; every dependent's text exactly the expected composition at the end: "
          f"{counted['texts_exact_at_end']}/{n} processes; client states: {', '.join(counted['client_states'])}; "
          f"moves timed from the call with no publishing command seen: {p['unaligned_moves'] + q['unaligned_moves']}."
          "\n")  # fmt: skip
    print(breakdown_table(s, backend))
    print()
    print(cpu_table(s, n, backend))
