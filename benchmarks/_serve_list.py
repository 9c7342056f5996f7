"""The registry the serve benchmark runs on, and the prompt list measured on it.

:func:`seed` writes the prompts (``benchmarks/startup.py``'s layout) and the resolve prompt;
:func:`measure_list_cold` times list pages the server has not read yet, through the API and the
console (signed in by cookie, as a browser is), and returns the replies the baseline repeats;
:func:`measure_list_warm` times the same first pages warm, alternating between ``promptreg serve``
and the baseline answering the same bytes.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from benchmarks import _report
from benchmarks._serve_http import Http, HttpServer, bearer
from benchmarks._serve_plan import CONSOLE_PATH, LABEL, LIST_PATH, NAME, PAGE, TEXT, Plan
from benchmarks.startup import populate
from promptreg.registry import RedisPromptRegistry
from promptreg.registry.cli.serve.auth import SESSION_COOKIE


def seed(url: str, namespace: str, prompts: int) -> RedisPromptRegistry:
    """``prompts`` prompts written directly (``benchmarks/startup.py``'s layout, index included),
    then the resolve prompt through the registry API: versions 1 and 2, ``production`` -> 1."""
    populate(url, namespace, prompts)
    registry = RedisPromptRegistry.from_url(url, namespace=namespace)
    registry.create_prompt(NAME, description="serve benchmark")
    registry.add_version(NAME, f"{TEXT}one.", author="bench")
    registry.add_version(NAME, f"{TEXT}two.", author="bench")
    registry.set_label(NAME, LABEL, 1, author="bench")
    return registry


def seeded_names(prompts: int) -> list[str]:
    """Every prompt name :func:`seed` writes, sorted as the list pages them."""
    return sorted([*(f"team{i % 50}/prompt-{i}" for i in range(prompts)), NAME])


def measure_list_cold(plan: Plan, serve: HttpServer, reader: str) -> dict[str, Any]:
    """Cold pages: pages whose prompts the server has not described yet (it reads each prompt's
    description once, on the first page that shows it). The API's first page as the first list
    request since start, then further API pages and console pages, each a page never read before
    (by cursor: the name before the page). Returns the figures and the replies the baseline repeats."""
    names = seeded_names(plan.prompts)
    pages = -(-len(names) // PAGE)
    per_kind = max(0, min(plan.cold_pages, (pages - 1) // 2))
    cursors = [names[k * PAGE - 1] for k in range(1, 1 + 2 * per_kind)]
    http_ = Http(serve.port)
    headers = {**bearer(reader), "Accept": "application/json"}
    statuses: list[int] = []
    api_cold: list[float] = []
    console_cold: list[float] = []
    try:
        first = http_.get(LIST_PATH, headers)
        if first.status != 200:
            raise RuntimeError(f"GET {LIST_PATH}: {first.status} {first.body[:200]!r}")
        page = first.json()
        if [p["name"] for p in page["prompts"]] != names[:PAGE] or page["total"] != len(names):
            raise RuntimeError("the first page is not the seeded prompts' first names")
        for cursor in cursors[:per_kind]:
            reply = http_.get(f"{LIST_PATH}&cursor={quote(cursor, safe='')}", headers)
            statuses.append(reply.status)
            api_cold.append(reply.ms)
        signed_in = http_.request("POST", "/api/v1/session", {"Content-Type": "application/json"},
                                  json.dumps({"token": reader}).encode())  # fmt: skip
        cookie = (signed_in.headers.get("set-cookie") or "").split(";")[0]
        console_headers = {"Cookie": cookie, "Accept": "text/html"}
        console = http_.get(CONSOLE_PATH, console_headers)  # page 1, described by the API's first request
        present = console.status == 200 and console.headers.get("content-type", "").startswith("text/html")
        if present:
            for cursor in cursors[per_kind:]:
                reply = http_.get(f"{CONSOLE_PATH}?cursor={quote(cursor, safe='')}", console_headers)
                statuses.append(reply.status)
                console_cold.append(reply.ms)
    finally:
        http_.close()
    first_page = {"ms": first.ms, "bytes": len(first.body), "total": page["total"], "on_page": len(page["prompts"])}
    return {
        "first_page": first_page,
        "api_cold_pages_ms": api_cold,
        "console_cold_pages_ms": console_cold,
        "non_200": sum(status != 200 for status in statuses),
        "console": {
            "present": present,
            "status": console.status,
            "first_ms": console.ms,
            "bytes": len(console.body),
            "signed_in": signed_in.status == 200 and cookie.startswith(SESSION_COOKIE),
        },
        "replies": {"list": first, "console": console if present else None, "console_headers": console_headers},
    }


def measure_list_warm(plan: Plan, serve: HttpServer, baseline: HttpServer, reader: str,
                      console_headers: dict[str, str] | None) -> dict[str, Any]:  # fmt: skip
    """Warm requests, alternating between ``promptreg serve`` and the baseline (same bytes)."""
    targets = [("list", LIST_PATH, {**bearer(reader), "Accept": "application/json"})]
    if console_headers is not None:
        targets.append(("console", CONSOLE_PATH, console_headers))
    servers = {"serve": Http(serve.port), "baseline": Http(baseline.port)}
    out: dict[str, Any] = {}
    try:
        for kind, path, headers in targets:
            times: dict[str, list[float]] = {"serve": [], "baseline": []}
            statuses: dict[str, list[int]] = {"serve": [], "baseline": []}
            for conn in servers.values():
                conn.get(path, headers)  # the connection's first request: not measured
            for i in range(plan.list_requests):
                for which in ("serve", "baseline") if i % 2 == 0 else ("baseline", "serve"):
                    reply = servers[which].get(path, headers)
                    times[which].append(reply.ms)
                    statuses[which].append(reply.status)
            out[kind] = {
                "serve_ms": _report.summarize(times["serve"]),
                "baseline_ms": _report.summarize(times["baseline"]),
                "non_200": sum(s != 200 for v in statuses.values() for s in v),
            }
            out[kind]["ratio_p50"] = _report.ratio(out[kind]["serve_ms"]["p50"], out[kind]["baseline_ms"]["p50"])
    finally:
        for conn in servers.values():
            conn.close()
    return out
