"""``prepare()``: a prompt looked up and rendered into what a chat-completions call takes.

:class:`PreparedPrompt` holds the messages (a text version becomes one ``user`` message), the model
settings of the version, the version itself and the attributes that say which version it is (the
ones ``tracing=True`` sets on spans, :func:`~promptreg.client.telemetry.prompt_attributes`), so a
caller can attach them to its own span or log line whether or not tracing is on::

    prepared = prepare(prompts, "support-bot", question="Where is my order?")
    span.set_attributes(prepared.attributes)
    reply = openai_client.chat.completions.create(**prepared.openai_kwargs())
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, cast

from promptreg.client.cached_version import CachedVersion
from promptreg.client.telemetry import lookup_attributes
from promptreg.registry.errors import InvalidInputError

if TYPE_CHECKING:
    from promptreg.client.prompt_client import PromptClient

__all__ = ["OPENAI_CONFIG_KEYS", "PreparedPrompt", "prepare"]

OPENAI_CONFIG_KEYS = frozenset({
    "model", "temperature", "top_p", "max_tokens", "max_completion_tokens", "n", "stop", "presence_penalty",
    "frequency_penalty", "logit_bias", "logprobs", "top_logprobs", "seed", "response_format", "tools",
    "tool_choice", "parallel_tool_calls", "reasoning_effort", "service_tier", "user", "metadata", "store",
})  # fmt: skip
"""The ``config`` keys :meth:`PreparedPrompt.openai_kwargs` passes on: parameters of OpenAI's
``chat.completions.create``. ``stream`` is left out on purpose (it changes what the call returns:
the caller decides), and so is every other key (kept in :attr:`PreparedPrompt.config`)."""


@dataclass(frozen=True, slots=True)
class PreparedPrompt:
    """A prompt version rendered for one call: what :func:`prepare` returns.

    ``messages``: the chat messages (``{"role", "content"}``), a text version's text as one ``user``
    message. ``text``: the rendered text of a text version (``None`` for chat). ``version``: the
    :class:`~promptreg.CachedVersion` that served it. ``config``: the version's model settings
    (``model``, ``temperature``...), read-only. ``attributes``: the span attributes that identify the
    version (``gen_ai.prompt.name``, ``gen_ai.prompt.version``, ``promptreg.prompt.version``,
    ``promptreg.prompt.sha256``, ``promptreg.prompt.label`` unless a version was pinned,
    ``promptreg.rollout.variant`` during a rollout), the same whether or not tracing is on.
    """

    messages: list[dict[str, str]]
    text: str | None
    version: CachedVersion
    config: Mapping[str, Any]
    attributes: dict[str, str | int]

    def openai_kwargs(self) -> dict[str, Any]:
        """``{"messages": [...], **settings}`` for ``client.chat.completions.create(**...)``: the
        messages (a new list) and the keys of :attr:`config` in :data:`OPENAI_CONFIG_KEYS`."""
        kwargs: dict[str, Any] = {key: value for key, value in self.config.items() if key in OPENAI_CONFIG_KEYS}
        kwargs["messages"] = list(self.messages)
        return kwargs


def prepare(
    client: PromptClient,
    name: str,
    variables: Mapping[str, Any] | None = None,
    /,
    *,
    label: str | None = None,
    key: str | None = None,
    version: int | None = None,
    **keyword_variables: Any,
) -> PreparedPrompt:
    """Look ``name`` up in ``client`` (``label``, ``key`` and ``version`` as
    :meth:`~promptreg.PromptClient.get` takes them) and render it with the variables, given as
    keywords or as a mapping after the name (which takes any name, ``label`` and ``key`` included; a
    keyword wins), as :meth:`~promptreg.PromptClient.render` does.

    Raises what :meth:`~promptreg.PromptClient.get` and :meth:`~promptreg.PromptClient.render` raise:
    :class:`~promptreg.PromptNotFoundError`, :class:`~promptreg.LabelNotFoundError`,
    :class:`~promptreg.MissingVariableError`, :class:`~promptreg.InvalidInputError` (variables that
    are not a mapping of ``str`` names)...
    """
    found = client.get(name, label, key=key, version=version)
    values = keyword_variables if variables is None else _merged(variables, keyword_variables)
    rendered = found.render(**values)
    if found.messages is None:
        text = cast(str, rendered)
        messages = [{"role": "user", "content": text}]
    else:
        text = None
        messages = cast(list[dict[str, str]], rendered)
    return PreparedPrompt(
        messages=messages,
        text=text,
        version=found,
        config=MappingProxyType(found.config),
        attributes=lookup_attributes(client, name, label, version is not None, found),
    )


def _merged(variables: Mapping[str, Any], keywords: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(variables, Mapping):
        raise InvalidInputError(f"template variables must be a mapping of names, got {type(variables).__name__}")
    merged = dict(variables)
    for name in merged:
        if not isinstance(name, str):
            raise InvalidInputError(f"template variable names must be str, got {name!r}")
    merged.update(keywords)
    return merged
