"""The lookup's slow paths, as a base class of :class:`~promptreg.PromptClient`: a miss of the plain
view (a pinned version, a rollout without a key, a label or prompt that does not exist, a key that
is not a ``str``) and the inline ``fallback``. The fast paths are in ``PromptClient.get`` itself."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, cast

from promptreg.client.cached_version import CachedVersion, cached_text
from promptreg.client.composition import composes, pinned
from promptreg.client.views import Split
from promptreg.registry.errors import (
    InvalidInputError,
    LabelNotFoundError,
    PromptNotFoundError,
    RegistryUnavailableError,
)
from promptreg.registry.models import utcnow
from promptreg.registry.rollouts import percent_of
from promptreg.registry.template import compile_template
from promptreg.registry.validation import validate_label, validate_name, validate_version_number

if TYPE_CHECKING:
    from promptreg.client.cache import Cache
    from promptreg.client.feeds import Feed
    from promptreg.client.prepared import PreparedPrompt
    from promptreg.client.prompt_client import PromptClient
    from promptreg.client.status import StatusTracker

logger = logging.getLogger("promptreg.client")


class Lookups:
    """The miss path of ``get``: what the two dict subscripts of the fast path could not answer."""

    _lookup_cache: Cache
    _cache: Cache
    _status: StatusTracker
    _default_label: str
    _feed: Feed

    def prepare(
        self,
        name: str,
        variables: Mapping[str, Any] | None = None,
        /,
        *,
        label: str | None = None,
        key: str | None = None,
        version: int | None = None,
        **keyword_variables: Any,
    ) -> PreparedPrompt:
        """Look up and render a prompt for a model call: the messages (or text), the version's model
        configuration, and the attributes to attach to a span or log line (the same ones
        ``tracing=True`` sets). See :func:`promptreg.client.prepared.prepare`."""
        from promptreg.client.prepared import prepare

        return prepare(
            cast("PromptClient", self), name, variables, label=label, key=key, version=version, **keyword_variables
        )

    def rollouts(self) -> dict[str, dict[str, tuple[int, float]]]:
        """``{name: {label: (candidate version, percent)}}``: the rollouts the cache serves now."""
        return {
            name: {label: (candidate, percent_of(points)) for label, (candidate, points) in labels.items()}
            for name, labels in self._cache.rollouts.items()
        }

    def _fallback(self, name: str, text: str, cause: RegistryUnavailableError) -> CachedVersion:
        if not isinstance(text, str):
            raise InvalidInputError(f"fallback must be a str, got {type(text).__name__}") from cause
        if self._status.fallback_served() == 1:
            logger.warning("promptreg: serving the inline fallback for %r (and maybe others): %s", name, cause)
        # Built without validation: version 0 is what marks it as not from the registry.
        format_string, names = compile_template(text)
        return cached_text(0, text, format_string, names, utcnow(), None, None, {"fallback": True}, None)

    def _lookup_miss(self, name: str, label: str | None, version: int | None, key: object = None) -> CachedVersion:
        cache = self._lookup_cache
        if version is None and cache.rollouts:  # a rollout (missing from the plain view): picked at once
            try:
                split = cache.split(name, label)
            except TypeError:  # unhashable name or label: validated below
                split = None
            if split is not None:
                return _pick(split, key)
        if label is None and type(version) is int:  # a pinned version seen before: no validation needed
            try:
                found = cache.versions.get((name, version))
            except TypeError:  # unhashable name: validated below
                found = None
            if found is not None:
                return found if not composes(found) else pinned(cache, name, found)
        validate_name(name)
        if label is not None:
            validate_label(label)
        if version is not None:
            if label is not None:
                raise InvalidInputError("give a label or a version, not both")
            validate_version_number(version)
            if cache.subset is not None and name not in cache.subset:
                raise cache.subset.not_served(name)
            found = cache.add_version(name, self._feed.fetch_version(name, version))
            return found if not composes(found) else pinned(cache, name, found)
        label = self._default_label if label is None else label
        hit = cache.view.get(label, {}).get(name)
        if hit is not None:  # the view was swapped since the fast path looked
            return hit
        if cache.subset is not None and name not in cache.subset:
            raise cache.subset.not_served(name)
        broken = cache.compositions.broken.get((name, label))
        if broken is not None:  # it includes a partial it cannot be composed with: never served raw
            raise broken
        if name in cache.pointers:
            raise LabelNotFoundError(name, label)
        if not cache.loaded:
            raise RegistryUnavailableError(
                f"prompt {name!r} is not cached and the client has no state yet ({self._status.state.value})"
            )
        raise PromptNotFoundError(name)


def _pick(split: Split, key: object) -> CachedVersion:
    if key is None:
        return split.pick_random()
    if isinstance(key, int) and not isinstance(key, bool):
        key = str(key)
    if not isinstance(key, str):
        raise InvalidInputError(f"key must be a str (a user or session id), got {type(key).__name__}")
    try:
        return split.pick(key)
    except UnicodeEncodeError:  # a lone surrogate: hashed as its escaped form, the same in every process
        return split.pick(key.encode("utf-8", "backslashreplace").decode("ascii"))


def keyword_only_after_label(get: Callable[..., Any]) -> inspect.Signature:
    """``get(name, label=None, *, key=None, version=None, fallback=None)``: the signature ``help()``
    shows for ``PromptClient.get``, whose parameters after ``label`` are declared positional only
    for speed (CPython 3.11 does not specialize calls of functions with keyword-only parameters)."""
    signature = inspect.signature(get)
    keyword = inspect.Parameter.KEYWORD_ONLY
    kinds = {"key", "version", "fallback"}
    parameters = [p.replace(kind=keyword) if p.name in kinds else p for p in signature.parameters.values()]
    return signature.replace(parameters=parameters)
