"""Composition on every backend: each reference form, nesting, every refusal (nothing written), the
compatibility of dependents checked inside a partial's move, and the reads (``resolve=True``,
``dependents``, ``check_dependents``)."""

from __future__ import annotations

import pytest

from promptreg.registry import (
    CompositionError,
    CompositionTooLargeError,
    IncompatibleDependentError,
    IncompatibleVersionError,
    InvalidNameError,
    PartialCycleError,
    PartialDepthError,
    PartialNotFoundError,
    PartialTypeError,
    PromptRegistry,
    PromptVersion,
)
from promptreg.registry.composition import MAX_DEPTH, Memo, Reference, compose, references
from tests.backends import Backend


def _prompt(reg: PromptRegistry, name: str, *texts: str, labels: dict[str, int] | None = None) -> None:
    reg.create_prompt(name)
    for text in texts:
        reg.add_version(name, text)
    for label, version in (labels or {}).items():
        reg.set_label(name, label, version)


@pytest.fixture
def shared(reg: PromptRegistry) -> PromptRegistry:
    """``safety`` (v1 production, v2 staging) and ``style`` included by ``bot`` at every form."""
    _prompt(reg, "safety", "Be safe, {{user}}.", "Be very safe, {{user}}.", labels={"production": 1, "staging": 2})
    _prompt(reg, "style", "Write plainly.", labels={"production": 1})
    return reg


def test_parse_each_reference_form() -> None:
    assert references("a {{> p}} b {{>q@staging}} c {{> r@3 }} {{> p}}") == (
        Reference("p"), Reference("q", label="staging"), Reference("r", version=3),
    )  # fmt: skip
    assert references("no partial {{x}} {{ > not one}}") == ()


def test_same_label_reference_follows_the_label(shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}} Answer {{question}}.", labels={"production": 1, "staging": 1})
    prod = shared.get_version("bot", label="production", resolve=True)
    assert prod.prompt_text == "Be safe, {{user}}. Answer {{question}}."
    assert prod.variables == {"user", "question"}
    assert prod.partials == {"safety": 1}
    staging = shared.get_version("bot", label="staging", resolve=True)
    assert staging.prompt_text == "Be very safe, {{user}}. Answer {{question}}."
    assert staging.partials == {"safety": 2}
    # Unresolved, the version is what was stored.
    assert shared.get_version("bot", label="production").prompt_text == "{{> safety}} Answer {{question}}."


def test_fixed_label_and_fixed_version(shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety@staging}} | {{> safety@1}} | {{> style}}", labels={"production": 1})
    found = shared.get_version("bot", label="production", resolve=True)
    assert found.prompt_text == "Be very safe, {{user}}. | Be safe, {{user}}. | Write plainly."
    assert found.partials == {"safety": 2, "style": 1}  # one partial at two versions: the first use's
    assert str(found.render(user="Ann")).startswith("Be very safe, Ann.")


def test_nested_partials_and_chat_dependents(shared: PromptRegistry) -> None:
    _prompt(shared, "preamble", "{{> safety}} {{> style}}", labels={"production": 1})
    shared.create_prompt("chat-bot")
    shared.add_version("chat-bot", messages=[{"role": "system", "content": "{{> preamble}}"},
                                             {"role": "user", "content": "{{question}}"}])  # fmt: skip
    shared.set_label("chat-bot", "production", 1)
    found = shared.get_version("chat-bot", label="production", resolve=True)
    assert found.messages is not None
    assert found.messages[0]["content"] == "Be safe, {{user}}. Write plainly."
    assert found.partials == {"preamble": 1, "safety": 1, "style": 1}
    assert found.variables == {"user", "question"}
    assert shared.dependents("safety") == {"chat-bot": {"production": 1}, "preamble": {"production": 1}}


def _unchanged(backend: Backend, shared: PromptRegistry, action: object) -> None:
    before = backend.raw()
    rev = shared.revision()
    assert callable(action)
    action()
    assert shared.revision() == rev
    assert backend.raw() == before


def test_refusals_when_a_version_is_added(backend: Backend, shared: PromptRegistry) -> None:
    shared.create_prompt("bot")
    shared.create_prompt("chatty")
    shared.add_version("chatty", messages=[{"role": "system", "content": "hi"}])
    shared.set_label("chatty", "production", 1)
    cases: list[tuple[str, type[CompositionError]]] = [
        ("{{> nobody}}", PartialNotFoundError),
        ("{{> safety@9}}", PartialNotFoundError),
        ("{{> safety@canary}}", PartialNotFoundError),
        ("{{> bot}}", PartialCycleError),
        ("{{> chatty}}", PartialTypeError),
    ]
    for text, error in cases:
        with pytest.raises(error):
            _unchanged(backend, shared, lambda text=text: shared.add_version("bot", text))
    with pytest.raises(KeyError):  # a missing partial is also a KeyError, like a missing prompt
        shared.add_version("bot", "{{> nobody}}")


def test_a_cycle_through_labels_is_refused(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "b", "B", labels={"production": 1})
    _prompt(shared, "a", "A {{> b}}", labels={"production": 1})
    # b v2 includes a: as a version it is refused, since a@production includes b.
    with pytest.raises(PartialCycleError) as caught:
        _unchanged(backend, shared, lambda: shared.add_version("b", "B {{> a}}"))
    assert caught.value.path[0] == "b"


def test_depth_over_the_limit_is_refused(backend: Backend, reg: PromptRegistry) -> None:
    _prompt(reg, "p0", "leaf", labels={"production": 1})
    for depth in range(1, MAX_DEPTH + 1):  # p8 includes p7 ... p0: depth 8 is allowed
        _prompt(reg, f"p{depth}", f"{{{{> p{depth - 1}}}}}", labels={"production": 1})
    assert reg.get_version(f"p{MAX_DEPTH}", label="production", resolve=True).prompt_text == "leaf"
    reg.create_prompt("too-deep")
    with pytest.raises(PartialDepthError):
        _unchanged(backend, reg, lambda: reg.add_version("too-deep", f"{{{{> p{MAX_DEPTH}}}}}"))


def test_a_move_leaving_a_dependent_without_its_partial(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}}", labels={"production": 1})
    # Deleting the partial's label would leave bot@production unresolved.
    with pytest.raises(PartialNotFoundError) as caught:
        _unchanged(backend, shared, lambda: shared.delete_label("safety", "production"))
    assert caught.value.moved == ("safety", "production") and caught.value.name == "bot"
    # A dependent moved to a label its partial lacks.
    _prompt(shared, "other", "{{> style}}")
    with pytest.raises(PartialNotFoundError):
        _unchanged(backend, shared, lambda: shared.set_label("other", "staging", 1))
    # Forced, both go through and are recorded as forced.
    event = shared.set_label("other", "staging", 1, force=True)
    assert event.forced
    event = shared.delete_label("safety", "production", force=True)
    assert event.forced
    with pytest.raises(PartialNotFoundError):
        shared.get_version("bot", label="production", resolve=True)


def test_partial_move_checked_against_every_dependent(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}} {{question}}", labels={"production": 1})
    shared.set_compatibility("bot", "backward")
    shared.add_version("safety", "Be safe, {{user}}, in {{language}}.")  # v3 needs a new variable
    with pytest.raises(IncompatibleDependentError) as caught:
        _unchanged(backend, shared, lambda: shared.set_label("safety", "production", 3))
    error = caught.value
    assert isinstance(error, IncompatibleVersionError)
    assert (error.dependent, error.dependent_label, error.added) == ("bot", "production", ("language",))
    assert "bot" in str(error) and "language" in str(error)
    # What check_dependents shows, writing nothing.
    (report,) = shared.check_dependents("safety", "production", 3)
    assert (report.dependent, report.label, report.report and report.report.added) == ("bot", "production",
                                                                                      ("language",))  # fmt: skip
    # A compatible move goes through; the staging label is not followed by bot: not checked.
    shared.set_label("safety", "staging", 3)
    shared.add_version("safety", "Safe.")  # v4 drops user: backward accepts it
    assert not shared.set_label("safety", "production", 4).forced
    assert shared.get_version("bot", label="production", resolve=True).prompt_text == "Safe. {{question}}"
    forced = shared.set_label("safety", "production", 3, force=True)
    assert forced.forced


def test_rollback_of_a_partial_is_checked_too(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}}", labels={"production": 1})
    shared.set_compatibility("bot", "full")
    shared.add_version("safety", "Be safe.")  # v3 drops user
    with pytest.raises(IncompatibleDependentError):
        shared.set_label("safety", "production", 3)
    shared.set_label("safety", "production", 2)  # same interface as v1: accepted under full
    assert shared.rollback("safety", "production").version == 1


def test_own_move_compares_composed_interfaces(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "Hello.", "{{> safety}} Hello.", labels={"production": 1})
    shared.set_compatibility("bot", "backward")
    # v2 adds the partial's variable "user": the composed interface changes, so backward refuses.
    with pytest.raises(IncompatibleVersionError):
        _unchanged(backend, shared, lambda: shared.set_label("bot", "production", 2))


def test_rollouts_and_partials_do_not_mix(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}}", "{{> safety}}!", labels={"production": 1})
    shared.add_version("style", "Write briefly.")
    shared.set_label("style", "staging", 1)
    with pytest.raises(PartialTypeError):
        _unchanged(backend, shared, lambda: shared.start_rollout("bot", "production", 2, 10))
    with pytest.raises(PartialTypeError):
        _unchanged(backend, shared, lambda: shared.start_rollout("safety", "production", 2, 10))
    # A label nobody includes can be rolled out; then no dependent may include it there.
    shared.start_rollout("style", "staging", 2, 10)
    shared.create_prompt("fresh")
    shared.add_version("fresh", "{{> style}}")
    with pytest.raises(PartialTypeError):
        _unchanged(backend, shared, lambda: shared.set_label("fresh", "staging", 1))


def test_dependents_and_check_read_nothing_written(shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}}", labels={"production": 1, "staging": 1})
    _prompt(shared, "pinned", "{{> safety@1}}", labels={"production": 1})
    assert shared.dependents("safety") == {"bot": {"production": 1, "staging": 1}, "pinned": {"production": 1}}
    assert shared.dependents("safety", "staging") == {"bot": {"staging": 1}}
    assert shared.dependents("style") == {}
    assert [r.dependent for r in shared.check_dependents("safety", "production", None)] == ["bot"]
    assert shared.check_dependents("safety", "production", None)[0].error is not None


def test_export_import_writes_partials_first(backend: Backend, shared: PromptRegistry) -> None:
    from promptreg.registry.backup import apply_import, export_registry, plan_import

    _prompt(shared, "a-bot", "{{> safety}} {{> style@1}}", labels={"production": 1})  # sorts before its partials
    exported = export_registry(shared)
    target = backend.other("copy")
    apply_import(target, plan_import(target, exported))
    assert target.get_version("a-bot", label="production", resolve=True).prompt_text == (
        "Be safe, {{user}}. Write plainly."
    )
    copied = export_registry(target)["prompts"]
    assert [(p["name"], p["labels"], [v["prompt_text"] for v in p["versions"]]) for p in copied] == [
        (p["name"], p["labels"], [v["prompt_text"] for v in p["versions"]]) for p in exported["prompts"]
    ]
    assert "partials" not in copied[0]["versions"][0]  # a stored version's JSON keeps its format


def test_check_compatibility_compares_what_set_label_compares(backend: Backend, shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "Hello.", "{{> safety}} Hello.", labels={"production": 1})
    shared.set_compatibility("bot", "backward")
    report = shared.check_compatibility("bot", "production", 2)
    assert not report.compatible and report.added == ("user",)  # the partial's variable, composed
    with pytest.raises(IncompatibleVersionError):
        shared.set_label("bot", "production", 2)


def test_a_partial_is_included_without_its_final_newline(shared: PromptRegistry) -> None:
    _prompt(shared, "footer", "Thanks.\n", labels={"production": 1})
    _prompt(shared, "bot", "{{> footer}} Bye.\n{{> footer}}", labels={"production": 1})
    assert shared.get_version("bot", label="production", resolve=True).prompt_text == "Thanks. Bye.\nThanks."


def test_the_dependent_refusal_says_what_changes(shared: PromptRegistry) -> None:
    _prompt(shared, "bot", "{{> safety}}", labels={"production": 1})
    shared.set_compatibility("bot", "backward")
    shared.add_version("safety", "{{user}} {{region}}")
    with pytest.raises(IncompatibleDependentError) as caught:
        shared.set_label("safety", "production", 3)
    message = str(caught.value)
    assert "None" not in message and "'bot' at production" in message and "it would need region" in message


def test_import_with_a_fixed_label_reference(backend: Backend, shared: PromptRegistry) -> None:
    from promptreg.registry.backup import apply_import, export_registry, plan_import

    _prompt(shared, "a-bot", "{{> safety@staging}}", labels={"production": 1})
    target = backend.other("copy")
    apply_import(target, plan_import(target, export_registry(shared)))
    assert target.get_version("a-bot", label="production", resolve=True).prompt_text == "Be very safe, {{user}}."


class _Graph:
    """A graph in a dict: ``name -> (labels, {number: text})``."""

    def __init__(self, prompts: dict[str, tuple[dict[str, int], dict[int, str]]]) -> None:
        self.prompts = prompts

    def labels(self, name: str) -> dict[str, int] | None:
        found = self.prompts.get(name)
        return None if found is None else found[0]

    def version(self, name: str, number: int) -> PromptVersion | None:
        found = self.prompts.get(name)
        text = None if found is None else found[1].get(number)
        return None if text is None else PromptVersion(version=number, prompt_text=text)

    def has_rollout(self, name: str, label: str) -> bool:
        return False


def test_a_shared_memo_gives_the_same_compositions_and_refusals() -> None:
    chain = {f"p{i}": ({"production": 1}, {1: f"{{{{> p{i - 1}}}}}" if i else "leaf"}) for i in range(MAX_DEPTH + 1)}
    graph = _Graph({**chain, "a": ({"production": 1}, {1: "A {{> b}}"}), "b": ({"production": 1}, {1: "B {{> c}}"}),
                    "c": ({"production": 1}, {1: "C"})})  # fmt: skip
    memo: Memo = {}
    top = graph.version(f"p{MAX_DEPTH}", 1)
    assert top is not None and compose(graph, f"p{MAX_DEPTH}", "production", top, memo).prompt_text == "leaf"
    deeper = PromptVersion(version=1, prompt_text=f"{{{{> p{MAX_DEPTH}}}}}")
    with pytest.raises(PartialDepthError):  # p8's height comes from the memo: still measured on this path
        compose(graph, "q", "production", deeper, memo)
    first = compose(graph, "a", "production", PromptVersion(version=1, prompt_text="A {{> b}}"), memo)
    again = compose(graph, "x", "production", PromptVersion(version=1, prompt_text="{{> b}} {{> a}}"), memo)
    assert (first.prompt_text, first.partials) == ("A B C", {"b": 1, "c": 1})
    followed = frozenset({("a", "production"), ("b", "production"), ("c", "production")})
    assert (again.prompt_text, again.partials, again.follows) == ("B C A B C", {"b": 1, "c": 1, "a": 1}, followed)
    with pytest.raises(PartialCycleError):  # c includes b, whose memo entry includes c
        compose(graph, "c", "production", PromptVersion(version=2, prompt_text="{{> b}}"), memo)


def test_a_composition_that_multiplies_past_the_limit_is_refused(backend: Backend, reg: PromptRegistry) -> None:
    _prompt(reg, "p0", "x" * 300, labels={"production": 1})
    _prompt(reg, "p1", "{{> p0}}" * 40, labels={"production": 1})  # 12,000 characters composed
    _prompt(reg, "p2", "{{> p1}}" * 40, labels={"production": 1})  # 480,000
    assert len(reg.get_version("p2", label="production", resolve=True).prompt_text) == 480_000
    reg.create_prompt("p3")
    with pytest.raises(CompositionTooLargeError):  # 19,200,000: refused while composing, nothing written
        _unchanged(backend, reg, lambda: reg.add_version("p3", "{{> p2}}" * 40))
    # A partial growing past it under a label a dependent follows is refused the same way.
    _prompt(reg, "wide", "{{> p2}}" * 7, labels={"production": 1})  # 3,360,000
    reg.add_version("p0", "y" * 390)
    with pytest.raises(CompositionTooLargeError):  # 4,368,000 at production
        _unchanged(backend, reg, lambda: reg.set_label("p0", "production", 2))


def test_a_reference_with_an_overlong_name_is_refused(backend: Backend, reg: PromptRegistry) -> None:
    reg.create_prompt("bot")
    with pytest.raises(InvalidNameError):
        _unchanged(backend, reg, lambda: reg.add_version("bot", "{{> " + "n" * 200 + "}}"))
    with pytest.raises(InvalidNameError):
        _unchanged(backend, reg, lambda: reg.add_version("bot", "{{> bot@" + "l" * 100 + "}}"))
