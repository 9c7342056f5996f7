"""OpenTelemetry in ``PromptClient``: span attributes (``tracing=True``), content only when asked
(``trace_content=True``), metrics (``metrics=True``), and nothing at all when off.

Spans and metrics go through the real SDK (``TracerProvider`` + ``InMemorySpanExporter``,
``MeterProvider`` + ``InMemoryMetricReader``), given explicitly: no global provider is set. The current
span comes from the context, which needs no provider.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

from promptreg import InvalidInputError, PromptClient, PromptRegistryFactory
from promptreg.client import ChangeEvent, ClientState
from promptreg.client import telemetry as telemetry_module
from promptreg.client.prepared import prepare
from promptreg.client.telemetry import RENDERED_MAX_CHARS, instrument
from promptreg.registry import PromptRegistry, RedisPromptRegistry
from tests.redis_server import RedisServer, wait_until

TEXT = "critic"
V1 = "v1: review {{movie}}"
V2 = "v2: review {{movie}} as a {{level}} critic"
CHAT = "support-bot"
MESSAGES = [
    {"role": "system", "content": "You are a {{tone}} agent."},
    {"role": "user", "content": "{{question}}"},
]
IDENTITY = {"gen_ai.prompt.name", "gen_ai.prompt.version", "promptreg.prompt.version", "promptreg.prompt.sha256"}
CONTENT = {"promptreg.prompt.variables", "promptreg.prompt.rendered"}


def seed(registry: PromptRegistry) -> None:
    registry.create_prompt(TEXT)
    registry.add_version(TEXT, V1)
    registry.add_version(TEXT, V2)
    registry.set_label(TEXT, "production", 2)
    registry.set_label(TEXT, "staging", 1)
    registry.create_prompt(CHAT)
    registry.add_version(CHAT, messages=MESSAGES, config={"model": "gpt-4o", "temperature": 0.2})
    registry.set_label(CHAT, "production", 1)


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    """A seeded JSON-file registry's URL."""
    registry = PromptRegistryFactory.from_url(f"file://{tmp_path}/r.json")
    seed(registry)
    registry.close()
    yield f"file://{tmp_path}/r.json"


class Spans:
    """A tracer whose finished spans are kept in memory (the real SDK, not installed globally)."""

    def __init__(self, **provider_options: Any) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(**provider_options)
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests.test_telemetry")

    def finished(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def only(self) -> dict[str, Any]:
        (span,) = self.finished()
        return dict(span.attributes or {})


@pytest.fixture
def spans() -> Iterator[Spans]:
    found = Spans()
    yield found
    found.provider.shutdown()


@pytest.fixture
def reader() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    metric_reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[metric_reader])
    yield provider, metric_reader
    provider.shutdown()


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    """The data points of the metric ``name`` in one collection."""
    data = reader.get_metrics_data()
    found: list[Any] = []
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            assert scope.scope.name == "promptreg"
            found.extend(p for m in scope.metrics if m.name == name for p in m.data.data_points)
    return found


def by_attributes(found: list[Any]) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted((p.attributes or {}).items())): p for p in found}


# -- tracing ---------------------------------------------------------------------------------------------


def test_a_lookup_sets_the_version_on_the_current_span_and_no_content(url: str, spans: Spans) -> None:
    with PromptClient(url, tracing=True, start_timeout=10) as prompts:
        with spans.tracer.start_as_current_span("handler"):
            found = prompts.get(TEXT)
        assert found.version == 2
        assert spans.only() == {
            "gen_ai.prompt.name": TEXT,
            "gen_ai.prompt.version": "2",
            "promptreg.prompt.version": 2,
            "promptreg.prompt.label": "production",
            "promptreg.prompt.sha256": hashlib.sha256(V2.encode()).hexdigest(),
        }
        spans.exporter.clear()
        with spans.tracer.start_as_current_span("render"):
            assert prompts.render(TEXT, {"movie": "Alien"}, label="staging") == "v1: review Alien"
        attributes = spans.only()
        assert attributes["promptreg.prompt.label"] == "staging" and attributes["promptreg.prompt.version"] == 1
        assert attributes["promptreg.prompt.sha256"] == hashlib.sha256(V1.encode()).hexdigest()
        assert not CONTENT & attributes.keys()  # no variables nor text unless trace_content=True
        assert "Alien" not in json.dumps(attributes)


def test_a_pinned_version_has_no_label_and_a_chat_version_hashes_its_messages(url: str, spans: Spans) -> None:
    with PromptClient(url, tracing=True, start_timeout=10) as prompts:
        with spans.tracer.start_as_current_span("pinned"):
            prompts.get(TEXT, version=1)
        attributes = spans.only()
        assert attributes["gen_ai.prompt.version"] == "1" and "promptreg.prompt.label" not in attributes
        spans.exporter.clear()
        with spans.tracer.start_as_current_span("chat"):
            prompts.render_chat(CHAT, tone="calm", question="Where is my order?")
        canonical = json.dumps(MESSAGES, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert spans.only()["promptreg.prompt.sha256"] == hashlib.sha256(canonical.encode()).hexdigest()


def test_trace_content_adds_the_variable_names_and_the_rendered_text_cut_to_a_bound(url: str, spans: Spans) -> None:
    with PromptClient(url, trace_content=True, start_timeout=10) as prompts:
        with spans.tracer.start_as_current_span("handler"):
            text = prompts.render_text(TEXT, {"level": "harsh", "label": "not-a-label"}, movie="Alien")
        attributes = spans.only()
        assert attributes["promptreg.prompt.variables"] == ("label", "level", "movie")  # names, never values
        assert attributes["promptreg.prompt.rendered"] == text == "v2: review Alien as a harsh critic"
        assert attributes["promptreg.prompt.label"] == "production"  # the mapping's "label" is a variable
        spans.exporter.clear()
        with spans.tracer.start_as_current_span("long"):
            prompts.render(TEXT, movie="x" * 10_000, level="harsh")
        rendered = spans.only()["promptreg.prompt.rendered"]
        assert len(rendered) == RENDERED_MAX_CHARS and rendered.endswith("…") and rendered.startswith("v2: review xx")
        spans.exporter.clear()
        with spans.tracer.start_as_current_span("chat"):
            messages = prompts.render(CHAT, tone="calm", question="Where?")
        assert json.loads(spans.only()["promptreg.prompt.rendered"]) == messages


def test_a_span_not_recording_costs_one_question(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> dict[str, Any]:
        raise AssertionError("attributes computed for a span that does not record")

    monkeypatch.setattr(telemetry_module, "lookup_attributes", fail)
    unsampled = Spans(sampler=ALWAYS_OFF)
    try:
        with PromptClient(url, tracing=True, start_timeout=10) as prompts:
            assert prompts.get(TEXT).version == 2  # no span at all
            with unsampled.tracer.start_as_current_span("not sampled") as span:
                assert not span.is_recording()
                assert prompts.get(TEXT).version == 2
        assert unsampled.finished() == []
    finally:
        unsampled.provider.shutdown()


def test_the_hash_is_computed_once_per_version(url: str, spans: Spans, monkeypatch: pytest.MonkeyPatch) -> None:
    hashed: list[int] = []
    content = telemetry_module._content

    def counted(version: Any) -> bytes:
        hashed.append(version.version)
        return content(version)

    monkeypatch.setattr(telemetry_module, "_content", counted)
    with PromptClient(url, tracing=True, start_timeout=10) as prompts, spans.tracer.start_as_current_span("handler"):
        for _ in range(50):
            prompts.get(TEXT)
            prompts.get(TEXT, "staging")
    assert sorted(hashed) == [1, 2]


def test_the_hook_replaces_instance_attributes_only_and_close_removes_them(url: str, spans: Spans) -> None:
    with PromptClient(url, start_timeout=10) as plain:
        assert not {"get", "render"} & vars(plain).keys()
    prompts = PromptClient(url, trace_content=True, start_timeout=10)
    try:
        assert {"get", "render", "render_text", "render_chat"} <= vars(prompts).keys()
        assert "get" in vars(PromptClient) and PromptClient.get.__name__ == "get"  # the class is untouched
    finally:
        prompts.close()
    assert not {"get", "render", "render_text", "render_chat"} & vars(prompts).keys()
    with spans.tracer.start_as_current_span("after close"):
        assert prompts.get(TEXT).version == 2  # still answers, no longer traced
    assert spans.only() == {}


def test_with_telemetry_off_promptreg_imports_nothing_of_opentelemetry(url: str) -> None:
    # redis-py (8.x) imports the OpenTelemetry SDK itself when it is installed, so the check is that no
    # promptreg module imports any of it and nothing of it is loaded beyond what redis-py loads.
    script = f"""
        import builtins, importlib, sys

        def otel_modules():
            return {{name for name in sys.modules if name.split(".")[0] == "opentelemetry"}}

        by_promptreg = []
        real_import, real_import_module = builtins.__import__, importlib.import_module

        def spy(name, globals=None, locals=None, fromlist=(), level=0):
            importer = (globals or {{}}).get("__name__", "")
            if name.split(".")[0] == "opentelemetry" and importer.split(".")[0] == "promptreg":
                by_promptreg.append((importer, name))
            return real_import(name, globals, locals, fromlist, level)

        def spy_module(name, package=None):
            importer = sys._getframe(1).f_globals.get("__name__", "")
            if name.split(".")[0] == "opentelemetry" and importer.split(".")[0] == "promptreg":
                by_promptreg.append((importer, name))
            return real_import_module(name, package)

        builtins.__import__, importlib.import_module = spy, spy_module
        import redis
        loaded_by_redis = otel_modules()
        from promptreg import PromptClient
        from promptreg.client.prepared import prepare
        with PromptClient({url!r}, start_timeout=10) as prompts:
            assert "get" not in vars(prompts)
            prompts.render({TEXT!r}, movie="Alien", level="harsh")
            prompts.get({TEXT!r}, "staging")
            assert prepare(prompts, {TEXT!r}, movie="Alien", level="harsh").attributes
        print(by_promptreg, sorted(otel_modules() - loaded_by_redis))
    """
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] []"


def test_without_the_opentelemetry_api_instrument_says_what_to_install(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # import opentelemetry now raises ImportError
    with PromptClient(url, start_timeout=10) as prompts:
        with pytest.raises(InvalidInputError, match=r"promptreg-live\[otel\]"):
            instrument(prompts, tracing=True, metrics=False, trace_content=False)
        assert "get" not in vars(prompts)


# -- metrics ---------------------------------------------------------------------------------------------


def test_lookups_are_counted_by_prompt_label_and_version(
    url: str, reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, metric_reader = reader
    with PromptClient(url, metrics=True, meter_provider=provider, start_timeout=10) as prompts:
        for _ in range(3):
            prompts.get(TEXT)
        prompts.render(TEXT, movie="Alien", level="harsh", label="production")
        prompts.get(TEXT, "staging")
        prompts.get(TEXT, version=1)
        counted = by_attributes(points(metric_reader, "promptreg.client.lookups"))
        assert {key: p.value for key, p in counted.items()} == {
            (
                ("gen_ai.prompt.name", TEXT),
                ("promptreg.prompt.label", "production"),
                ("promptreg.prompt.version", 2),
            ): 4,
            (("gen_ai.prompt.name", TEXT), ("promptreg.prompt.label", "staging"), ("promptreg.prompt.version", 1)): 1,
            (("gen_ai.prompt.name", TEXT), ("promptreg.prompt.version", 1)): 1,  # pinned: no label
        }
        states = by_attributes(points(metric_reader, "promptreg.client.state"))
        assert {key[0][1]: p.value for key, p in states.items()} == {
            "initializing": 0,
            "live": 1,
            "stale": 0,
            "closed": 0,
        }
        (resyncs,) = points(metric_reader, "promptreg.client.resyncs")
        assert resyncs.value == prompts.status().resyncs >= 1  # a file client reloads the file whole
        (revision,) = points(metric_reader, "promptreg.client.revision")
        assert revision.value == prompts.status().rev > 0
    # Closed: the client no longer reports its state, and the lookups counted stay counted.
    assert points(metric_reader, "promptreg.client.state") == []
    assert sum(p.value for p in points(metric_reader, "promptreg.client.lookups")) == 6


def test_two_clients_on_one_meter_provider_are_both_counted(
    url: str, reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, metric_reader = reader
    with (
        PromptClient(url, metrics=True, meter_provider=provider, start_timeout=10) as first,
        PromptClient(url, metrics=True, meter_provider=provider, start_timeout=10) as second,
    ):
        first.get(TEXT)
        second.get(TEXT)
        second.get(TEXT)
        (counted,) = points(metric_reader, "promptreg.client.lookups")
        assert counted.value == 3
        live = by_attributes(points(metric_reader, "promptreg.client.state"))
        assert live[(("promptreg.client.state", "live"),)].value == 2


def test_the_apply_lag_is_recorded_from_the_write_time_of_each_change(
    url: str, reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, metric_reader = reader
    with PromptClient(url, metrics=True, meter_provider=provider, start_timeout=10) as prompts:
        now = time.time()
        prompts._notify([
            ChangeEvent(TEXT, "production", 1, 2, 10, now - 0.040),
            ChangeEvent(TEXT, "staging", 2, 1, 11, now - 0.020),
            ChangeEvent(TEXT, "production", 2, 1, 12, None),  # from a resync: no write time, not recorded
        ])  # fmt: skip
        lags = by_attributes(points(metric_reader, "promptreg.client.apply_lag"))
        production = lags[(("promptreg.prompt.label", "production"),)]
        assert production.count == 1 and 0.040 <= production.sum < 5
        assert lags[(("promptreg.prompt.label", "staging"),)].count == 1


@pytest.mark.redis
def test_on_redis_a_label_move_records_its_lag_and_a_rollout_its_variant(
    redis_server: RedisServer, namespace: str, spans: Spans, reader: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    provider, metric_reader = reader
    registry = RedisPromptRegistry.from_url(redis_server.url, namespace=namespace)
    seed(registry)
    prompts = PromptClient(
        redis_server.url, namespace=namespace, tracing=True, metrics=True, meter_provider=provider, start_timeout=10
    )
    try:
        assert prompts.status().state is ClientState.LIVE
        registry.set_label(TEXT, "production", 1)
        assert wait_until(lambda: prompts.get(TEXT).version == 1, 10)
        (lag,) = points(metric_reader, "promptreg.client.apply_lag")
        assert lag.count == 1 and 0 <= lag.sum < 5
        assert lag.attributes == {"promptreg.prompt.label": "production"}

        registry.start_rollout(TEXT, "production", 2, 50)
        assert wait_until(lambda: prompts._cache.split(TEXT, None) is not None, 10)
        seen: dict[str, int] = {}
        for user in range(40):
            with spans.tracer.start_as_current_span("handler"):
                found = prompts.get(TEXT, key=f"user-{user}")
            variant = spans.finished()[-1].attributes["promptreg.rollout.variant"]  # type: ignore[index]
            assert variant == ("candidate" if found.version == 2 else "stable")
            seen[variant] = seen.get(variant, 0) + 1
        assert set(seen) == {"stable", "candidate"}
        counted = by_attributes(points(metric_reader, "promptreg.client.lookups"))
        assert {key: p.value for key, p in counted.items() if ("promptreg.rollout.variant", "candidate") in key} == {
            (("gen_ai.prompt.name", TEXT), ("promptreg.prompt.label", "production"), ("promptreg.prompt.version", 2),
             ("promptreg.rollout.variant", "candidate")): seen["candidate"],
        }  # fmt: skip
        with PromptClient(redis_server.url, namespace=namespace, tracing=True, start_timeout=10) as traced:
            spans.exporter.clear()
            with spans.tracer.start_as_current_span("tracing only"):
                found = traced.get(TEXT, key="user-7")
            expected = "candidate" if found.version == 2 else "stable"
            assert spans.only()["promptreg.rollout.variant"] == expected
            prepared = prepare(traced, TEXT, key="user-7", movie="Alien", level="harsh")
            assert prepared.version is found and prepared.attributes["promptreg.rollout.variant"] == expected
    finally:
        prompts.close()
        registry.close()
