"""The rollout rows of ``benchmarks/lookup.py``: ``PromptClient.get`` of prompts whose label has a
rollout running, with a ``key`` (the keyed view: a class test, a CRC-32 of the key, one comparison)
and without one (the miss path, picked at random), against the floor of the same run.

Measured after the other rows of a size, on the same client and registry: every sampled prompt gets
a second version and a 10% rollout of it on ``production`` (through the registry's API, pushed to
the client like any change), so the label's dict is the full-size one. Two floors: the usual
one-dict-lookup method called ``get(name)``, and the same method called ``get(name, key=user)`` (a
keyword call costs more in CPython; the rows with a key are timed by that same loop).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks import _baselines, _report, _timing
from promptreg.registry import RedisPromptRegistry

PERCENT = 10
USERS = 997
"""Distinct user keys cycled through the timed loop (prime: they pair with every name)."""

ROLLOUT = {
    "floor_keyword": "CPython floor called with a keyword: get(name, key=user)",
    "promptreg_rollout_key": f"PromptClient.get(name, key=user), {PERCENT}% rollout on every name",
    "promptreg_rollout_random": f"PromptClient.get(name), {PERCENT}% rollout on every name (random pick)",
    "promptreg_key_no_rollout": "PromptClient.get(name, key=user), no rollout (the keyed view)",
}


class KeyedFloor:
    """The floor, called as a keyed lookup is: one dict lookup in a method taking a ``key``."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def get(self, name: str, label: str | None = None, *, key: str | None = None) -> Any:
        return self._data[name]


def start_rollouts(url: str, namespace: str, names: list[str], client: Any, label: str) -> float:
    """A second version and a rollout of it on ``label`` for each of ``names``; seconds until the
    client serves every one of them."""
    started = time.perf_counter()
    with RedisPromptRegistry.from_url(url, namespace=namespace) as registry:
        for name in names:
            text = registry.get_version(name, version=1).prompt_text
            registry.add_version(name, text + " (candidate)", author="bench")
            registry.start_rollout(name, label, 2, PERCENT, author="bench")
    deadline = time.monotonic() + 120
    while sum(len(labels) for labels in client.rollouts().values()) < len(names):
        if time.monotonic() > deadline:
            raise RuntimeError("the client did not apply every rollout within 120 s")
        time.sleep(0.01)
    return time.perf_counter() - started


def measure(
    client: Any, versions: dict[str, Any], rolled: list[str], plain: list[str], size: int, plan: dict[str, Any]
) -> list[dict[str, Any]]:
    """Rows (1 and 4 threads) of the rollout contenders, the floors measured in the same rounds."""
    block = plan["block"]

    def cycle(items: list[Any]) -> list[Any]:
        cycled: list[Any] = (items * (-(-block // len(items))))[: max(len(items), block)]
        return cycled

    users = [f"user-{i}" for i in range(USERS)]
    rolled_keys = cycle(rolled)
    rolled_pairs = cycle([(name, users[i % USERS]) for i, name in enumerate(rolled * 3)])
    plain_pairs = cycle([(name, users[i % USERS]) for i, name in enumerate(plain * 3)])
    contenders: dict[str, tuple[Any, list[Any], bool]] = {
        "floor": (_baselines.DictFloor(versions).get, rolled_keys, False),
        "floor_keyword": (KeyedFloor(versions).get, rolled_pairs, True),
        "promptreg_rollout_key": (client.get, rolled_pairs, True),
        "promptreg_rollout_random": (client.get, rolled_keys, False),
        "promptreg_key_no_rollout": (client.get, plain_pairs, True),
    }
    for get, keys, keyed in contenders.values():  # warm
        for item in keys[:block]:
            if keyed:
                get(item[0], key=item[1])
            else:
                get(item)
    rows: list[dict[str, Any]] = []
    for threads in (1, 4):
        samples = {name: _timing.Samples() for name in contenders}
        for _ in range(plan["rounds"]):
            for name, (get, keys, keyed) in contenders.items():
                repeats = plan["repeats"] // plan["rounds"]
                samples[name].add(_timing.time_lookups(get, keys, block, repeats, threads, keyed=keyed))
        floor = _report.summarize(samples["floor"].per_lookup_ns)
        keyword_floor = _report.summarize(samples["floor_keyword"].per_lookup_ns)
        for name, got in samples.items():
            if name == "floor":
                continue  # the main rows have the floor of this size
            found = _timing.row(name, size, threads, got, floor)
            found["ratio_to_keyword_floor_median"] = _report.ratio(found["median_ns"], keyword_floor["p50"])
            found["floor_median_ns"] = floor["p50"]
            rows.append(found)
    return rows
