"""``PromptVersion.render`` against ``str.format`` (the floor) and the 0.1.0 render, in one run.

The same template and variables for every contender: ``str.format`` with the equivalent format
string (the floor users compare with), ``format_map`` of that string with the variables' dict
already built (the template engine's floor: what ``render`` calls, without the call itself),
``PromptVersion.render`` (the registry's model: one ``format_map`` on a string kept in a slot),
``CachedVersion.render`` (what ``PromptClient.get`` returns: the same call on a slotted object), and the
0.1.0 render (the template read through a pydantic private attribute, parts joined in a loop),
rebuilt here as the baseline. Each is timed with ``timeit`` in interleaved repeats; the figure is
the median per call, the ratio is against ``str.format`` in the same run. ``benchmarks/lookup.py``
prints these rows too, with ``PromptClient.render`` (lookup and render) on its seeded prompts.

    python -m benchmarks.render [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import timeit
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as ``python benchmarks/render.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel, PrivateAttr

from benchmarks import _report
from promptreg.client.cached_version import cached_from_model
from promptreg.registry.models import PromptVersion
from promptreg.registry.template import _PLACEHOLDER, Template

TEMPLATES = {
    "3 variables": (
        "You are {{role}}. Answer the question about {{topic}} in {{language}}, briefly.",
        {"role": "a support agent", "topic": "billing", "language": "English"},
    ),
    "1 KB, 6 variables": (
        ("Context: {{context}}\n" + "Rules: be exact, cite sources, no guesses. " * 20)
        + "User {{user}} asks about {{topic}} in {{language}} on {{date}}: {{question}}",
        {"context": "docs", "user": "ann", "topic": "tax", "language": "en", "date": "today", "question": "why?"},
    ),
}


class OldTemplate:
    """The 0.1.0 ``Template.render``: a missing-variable check, then parts joined in a loop."""

    def __init__(self, text: str) -> None:
        parsed = Template(text)
        pieces = _PLACEHOLDER.split(text)  # the 0.1.0 parse: literal parts and names, alternating
        self.parts: list[str] = pieces[0::2]
        self.names: list[str] = pieces[1::2]
        self.variables = parsed.variables

    def render(self, values: Mapping[str, Any]) -> str:
        if not self.names:
            return self.parts[0]
        missing = self.variables.difference(values)
        if missing:
            raise KeyError(missing)
        out = [self.parts[0]]
        for i, name in enumerate(self.names, 1):
            out.append(str(values[name]))
            out.append(self.parts[i])
        return "".join(out)


class OldVersion(BaseModel):
    """The 0.1.0 ``PromptVersion`` render path: the template in a pydantic private attribute."""

    prompt_text: str
    _template: OldTemplate = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        self._template = OldTemplate(self.prompt_text)

    def render(self, /, **variables: Any) -> str:
        return self._template.render(variables)


def contenders_for(text: str, values: dict[str, Any]) -> dict[str, Callable[[], object]]:
    """The render contenders for one template and its variables (each returns the same text)."""
    version = PromptVersion(version=1, prompt_text=text)
    old = OldVersion(prompt_text=text)
    fmt = Template(text).format_string
    return {
        "str.format": functools.partial(fmt.format, **values),
        "format_map (engine floor)": functools.partial(fmt.format_map, values),
        "PromptVersion.render": functools.partial(version.render, **values),
        "CachedVersion.render (get()'s)": functools.partial(cached_from_model(version).render, **values),
        "0.1.0 render": functools.partial(old.render, **values),
    }


def time_contenders(contenders: dict[str, Callable[[], object]], quick: bool) -> dict[str, float]:
    """Median ns per call of each contender, timed in interleaved repeats."""
    number, repeats = (4_000, 3) if quick else (100_000, 15)  # quick: the smoke run
    assert len({str(f()) for f in contenders.values()}) == 1  # the same text from all
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):  # interleaved: drift on a shared machine hits every contender alike
        for name, call in contenders.items():
            samples[name].append(timeit.timeit(call, number=number) / number * 1e9)
    return {name: statistics.median(values_ns) for name, values_ns in samples.items()}


def measure(quick: bool) -> dict[str, dict[str, float]]:
    """``{template title: {contender: median ns per call}}`` for :data:`TEMPLATES`."""
    return {title: time_contenders(contenders_for(text, values), quick) for title, (text, values) in TEMPLATES.items()}


def table(results: dict[str, dict[str, float]]) -> str:
    """The render table: median ns per call and the ratio to ``str.format`` of the same run."""
    rows = []
    for title, figures in results.items():
        floor = figures["str.format"]
        for name, ns in figures.items():
            rows.append([title, name, _report.fmt(ns), _report.fmt_ratio(_report.ratio(ns, floor))])
    return _report.table(["template", "render", "median ns/call", "vs str.format"], rows, title="render()")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter repeats (a few seconds)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    results = measure(args.quick)
    print(table(results))
    _report.write_json(args.json, {"render": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
