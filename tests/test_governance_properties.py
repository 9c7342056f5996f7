"""Random sequences of protected-label operations (requests, approvals by several identities,
rejections, applies, direct moves, protecting and unprotecting) run in lockstep on a backend and on
the JSON file: every step has the same outcome (the same typed refusal, or the same request state),
and the final labels, protections and requests are the same. The Redis and PostgreSQL backends
implement the life cycle in scripts and SQL functions of their own; this checks they agree with the
Python one step by step."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from promptreg.registry import JsonFilePromptRegistry, MoveRequest, PromptRegistry, PromptRegistryError
from tests.backends import fresh_namespace, kinds, open_backend
from tests.registry_model import EXAMPLES, MACHINE_SETTINGS

NAME = "bot"
LABELS = ("production", "staging")
WHO = ("ana", "bo", "cy")

ops = st.lists(
    st.one_of(
        st.tuples(st.just("request"), st.sampled_from(WHO), st.sampled_from(LABELS), st.integers(1, 4)),
        st.tuples(st.just("approve"), st.sampled_from(WHO), st.integers(0, 5), st.booleans()),
        st.tuples(st.just("reject"), st.sampled_from(WHO), st.integers(0, 5)),
        st.tuples(st.just("apply"), st.sampled_from(WHO), st.integers(0, 5)),
        st.tuples(st.just("set"), st.sampled_from(LABELS), st.integers(1, 3)),
        st.tuples(st.just("protect"), st.sampled_from(LABELS), st.integers(1, 3)),
        st.tuples(st.just("unprotect"), st.sampled_from(LABELS)),
    ),
    min_size=1,
    max_size=25,
)


class Side:
    """One registry under test, and the requests it made, by the order they were made in."""

    def __init__(self, registry: PromptRegistry, approvals: int) -> None:
        self.registry = registry
        self.requests: list[str] = []
        registry.create_prompt(NAME)
        for text in ("v1 {{x}}", "v2 {{x}}", "v3 {{x}}"):
            registry.add_version(NAME, text)
        registry.set_label(NAME, "production", 1)
        registry.protect_label(NAME, "production", approvals=approvals)

    def step(self, op: tuple[Any, ...]) -> object:
        reg = self.registry
        try:
            kind = op[0]
            if kind == "request":
                made = reg.request_label_move(NAME, op[2], op[3], author=op[1], reason="r")
                self.requests.append(made.id)
                return summary(made)
            if kind in ("approve", "reject", "apply"):
                if op[2] >= len(self.requests):
                    return "no such request"
                request_id = self.requests[op[2]]
                if kind == "approve":
                    return summary(reg.approve(request_id, author=op[1], apply=op[3]))
                if kind == "reject":
                    return summary(reg.reject(request_id, author=op[1]))
                return summary(reg.apply_request(request_id, author=op[1]))
            if kind == "set":
                return reg.set_label(NAME, op[1], op[2]).action
            if kind == "protect":
                return reg.protect_label(NAME, op[1], approvals=op[2]).action
            return reg.unprotect_label(NAME, op[1]).action
        except PromptRegistryError as exc:
            return type(exc).__name__

    def final(self) -> object:
        reg = self.registry
        prompt = reg.get_prompt(NAME)
        assert prompt is not None
        requests = [summary(reg.get_request(request_id)) for request_id in self.requests]
        protections = [(p.label, p.approvals) for p in reg.protected_labels(NAME)]
        return prompt.labels, protections, requests


def summary(request: MoveRequest) -> tuple[object, ...]:
    """What a request is, without its id and times (random, and each backend's clock)."""
    return (request.label, request.version, request.from_version, request.author, request.state.value,
            request.approvals_required, [a.author for a in request.approvals], request.decided_by)  # fmt: skip


@pytest.mark.parametrize("kind", kinds("fakeredis", "redis", "postgres"))
def test_every_backend_decides_like_the_json_file(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    with open_backend(kind, request, fresh_namespace(), tmp_path) as backend:

        @settings(MACHINE_SETTINGS, max_examples=EXAMPLES)
        @given(sequence=ops, approvals=st.integers(1, 2))
        def run(sequence: list[tuple[Any, ...]], approvals: int) -> None:
            tag = uuid.uuid4().hex[:12]
            with (
                JsonFilePromptRegistry(tmp_path / f"{tag}.json") as model,
                backend.other(tag) as tested,
            ):
                expected, actual = Side(model, approvals), Side(tested, approvals)
                for op in sequence:
                    assert actual.step(op) == expected.step(op), op
                assert actual.final() == expected.final()

        run()
