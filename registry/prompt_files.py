"""Reading prompt files safely: the folder walk, bounded reads, and a strict front-matter loader.

``promptreg sync`` runs in CI on pull requests, so a prompt folder is written by whoever can open
one. This module reads such a folder as hostile input:

- Only regular files inside the folder are read. A symbolic link (to a file or a folder) that
  resolves outside it is refused, so a ``*.prompt`` link to ``/proc/self/environ`` or to a
  secrets file can never be uploaded into the registry. Links that stay inside are read (files)
  or not followed (folders: their real path is walked anyway). FIFOs and devices are refused
  without being opened for a blocking read.
- The walk is a loop, not a recursion, and stops at folders nested deeper than
  :data:`MAX_FOLDER_DEPTH` levels (no prompt name can be that long), naming the folder.
- Sizes are bounded before anything is parsed: the whole file, then the front matter.
- Front matter is YAML restricted to JSON: no anchors or aliases (no "billion laughs"), no tags
  beyond the JSON types (no timestamps, sets, binary), string keys only, integers in 64 bits,
  finite floats, bounded nesting. Every refusal names the file's line.
- A body's partial references (``{{> name}}``, ``{{> name@label}}``, ``{{> name@3}}``, the
  Handlebars partial syntax of Dotprompt) are kept as written; a ``{{>`` that is not one of them
  (Handlebars partial parameters or a name promptreg refuses) is refused, naming the line, rather
  than left in the text as literal characters (:func:`check_partial_syntax`).

Every problem raises :class:`~promptreg.registry.errors.PromptFileError` naming the file (and line).
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from promptreg.registry.composition import MARK, REFERENCE
from promptreg.registry.errors import InvalidInputError, PromptFileError
from promptreg.registry.validation import (
    INT64_MAX,
    INT64_MIN,
    MAX_METADATA_DEPTH,
    MAX_NAME_LENGTH,
    validate_label,
    validate_metadata,
)

_FENCE = "---"
FRONT_MATTER_DEPTH = MAX_METADATA_DEPTH + 2
"""How deeply front matter may nest: the front matter mapping and ``metadata`` add two levels."""
_FRONT_MATTER_SLACK = 32 * 1024  # description, message and labels beside the metadata
MAX_FOLDER_DEPTH = MAX_NAME_LENGTH // 2
"""How many levels of folders a prompt folder may hold (64): each level adds at least two characters
(``a/``) to the names of the prompts below it, so a deeper file could not have a valid name. A
deeper folder is refused, naming it, before any file is read."""


def front_matter_limit(max_metadata_bytes: int) -> int:
    """The most bytes a file's front matter may hold: twice the metadata limit (YAML is wordier
    than compact JSON) plus room for description, message and labels."""
    return 2 * max_metadata_bytes + _FRONT_MATTER_SLACK


def file_size_limit(max_text_bytes: int, max_metadata_bytes: int) -> int:
    """The most bytes a prompt file may hold: the text limit, the front-matter limit, the fences."""
    return max_text_bytes + front_matter_limit(max_metadata_bytes) + 2 * (len(_FENCE) + 2)


def walk_prompt_files(directory: Path, suffix: str) -> Iterator[tuple[Path, Path]]:
    """Yield ``(path, real_path)`` for every ``*suffix`` file under ``directory``, sorted by path.

    ``real_path`` is what will be read: ``path`` itself, or a link's target inside the folder.
    Raises :class:`PromptFileError` for a missing or unreadable folder, a link (file or folder)
    whose target is outside ``directory``, or a folder more than :data:`MAX_FOLDER_DEPTH` levels
    down, before anything is read. The walk keeps its own stack (no recursion), so no shape of
    folder can exhaust Python's.
    """
    try:
        root = directory.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise PromptFileError(directory, "not a directory") from exc
    if not root.is_dir():
        raise PromptFileError(directory, "not a directory")
    found: list[tuple[Path, Path]] = []
    pending: list[tuple[Path, int]] = [(root, 0)]
    while pending:
        current, depth = pending.pop()
        for entry in _list_folder(current, directory / current.relative_to(root)):
            path = Path(entry.path)
            if _is_folder(entry):  # a link to a folder too: checked, never walked
                if entry.is_symlink():
                    _inside(root, path, directory, "folder")  # refuse a way out; never followed
                elif depth >= MAX_FOLDER_DEPTH:
                    shown = directory / path.relative_to(root)
                    raise PromptFileError(shown, f"folder nested deeper than {MAX_FOLDER_DEPTH} levels: refused")
                else:
                    pending.append((path, depth + 1))
            elif entry.name.endswith(suffix):
                real = _inside(root, path, directory, "file") if entry.is_symlink() else path
                found.append((directory / path.relative_to(root), real))
    found.sort(key=lambda item: item[0].as_posix())
    yield from found


def _list_folder(folder: Path, shown: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except OSError as exc:
        raise PromptFileError(shown, f"cannot read folder: {exc.strerror or exc}") from exc


def _is_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()  # follows a link, as os.walk does
    except OSError:
        return False


def _inside(root: Path, link: Path, directory: Path, kind: str) -> Path:
    shown = directory / link.relative_to(root)
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise PromptFileError(shown, f"symbolic link to a {kind} that does not exist (or a loop)") from exc
    if not target.is_relative_to(root):
        raise PromptFileError(shown, f"symbolic link to a {kind} outside {directory}: refused")
    return target


def read_bounded(path: Path, max_bytes: int, *, shown: Path | None = None) -> bytes:
    """The bytes of the regular file ``path``, refusing one over ``max_bytes`` before reading it.

    Opens with ``O_NOFOLLOW`` (a link swapped in after the walk is refused, not followed) and
    ``O_NONBLOCK`` (a FIFO cannot hang the read), then checks the open file is regular.
    ``shown`` is the path named in errors (default ``path``).
    """
    shown = path if shown is None else shown
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        reason = "is a symbolic link: refused" if exc.errno == errno.ELOOP else f"cannot read: {exc.strerror or exc}"
        raise PromptFileError(shown, reason) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PromptFileError(shown, "not a regular file: refused")
        if info.st_size > max_bytes:
            raise PromptFileError(shown, f"file is {info.st_size} bytes, the limit is {max_bytes}")
        chunks: list[bytes] = []
        remaining = max_bytes + 1  # a file growing after fstat is still cut at the limit
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except OSError as exc:
        raise PromptFileError(shown, f"cannot read: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise PromptFileError(shown, f"file is over {max_bytes} bytes, the limit is {max_bytes}")
    return data


def split_front_matter(path: Path, raw: str, max_front_matter_bytes: int) -> tuple[dict[str, Any], str]:
    """Split ``raw`` into its front matter (a mapping, parsed strictly) and the body.

    A file that does not start with a ``---`` line has no front matter. Raises
    :class:`PromptFileError` for unterminated or oversized front matter, YAML the strict loader
    refuses (naming the line), or front matter that is not a mapping.
    """
    lines = raw.splitlines(keepends=True)
    if not lines or lines[0].rstrip("\r\n").rstrip() != _FENCE:
        return {}, raw
    for index in range(1, len(lines)):
        if lines[index].rstrip("\r\n").rstrip() == _FENCE:
            header = "".join(lines[1:index])
            body = "".join(lines[index + 1 :])
            break
    else:
        raise PromptFileError(path, "front matter has no closing '---' line")
    size = len(header.encode("utf-8"))
    if size > max_front_matter_bytes:
        raise PromptFileError(path, f"front matter is {size} bytes, the limit is {max_front_matter_bytes}")
    front = load_strict_yaml(header, path, first_line=2) if header.strip() else None
    if front is None:
        return {}, body
    if not isinstance(front, dict):
        raise PromptFileError(path, f"front matter must be a mapping, got {type(front).__name__}")
    return front, body


def front_matter_config(model: object, config: object, max_bytes: int) -> dict[str, Any]:
    """Dotprompt's ``model:`` and ``config:`` front matter as one config mapping (validated as
    metadata); raises :class:`~promptreg.InvalidInputError`."""
    if config is not None and not isinstance(config, Mapping):
        raise InvalidInputError(f"config must be a mapping, got {type(config).__name__}")
    if model is not None and not isinstance(model, str):
        raise InvalidInputError(f"model must be a string, got {type(model).__name__}")
    merged = dict(config or {})
    if model is not None:
        merged["model"] = model
    return validate_metadata(merged, max_bytes, "config")


def front_matter_labels(value: object) -> tuple[str, ...]:
    """The ``labels:`` of a front matter (a list, or one string), validated, each once."""
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise InvalidInputError(f"labels must be a list or a single string, got {type(value).__name__}")
    return tuple(dict.fromkeys(validate_label(label, settable=True) for label in value))


_PARTIAL_START = re.compile(re.escape(MARK))


def check_partial_syntax(body: str, *, first_line: int = 1) -> None:
    """Refuse a ``{{>`` in ``body`` that does not start a partial reference promptreg resolves
    (``{{> name}}``, ``{{> name@label}}``, ``{{> name@3}}``): Handlebars partial parameters
    (``{{> card title="x"}}``), dynamic partials (``{{> (which)}}``) or a name that cannot be a
    prompt's would otherwise stay in the text as literal characters. Raises
    :class:`~promptreg.InvalidInputError` naming the line (``first_line``: the body's first line in
    its file; the caller adds the file)."""
    if MARK not in body:
        return
    for found in _PARTIAL_START.finditer(body):
        if REFERENCE.match(body, found.start()) is None:
            line = first_line + body.count("\n", 0, found.start())
            shown = body[found.start() : found.start() + 40].split("\n", 1)[0]
            raise InvalidInputError(
                f"line {line}: {shown!r} is not a partial reference promptreg resolves: "
                "use {{> name}}, {{> name@label}} or {{> name@VERSION}}"
            )


def load_strict_yaml(text: str, path: Path, *, first_line: int = 1) -> Any:
    """Parse ``text`` as YAML restricted to JSON values; ``first_line`` is its first line in ``path``.

    Raises :class:`PromptFileError` ``"line N: ..."`` for anchors or aliases, tags other than
    the JSON types, non-string keys, merge keys, integers outside 64 bits, NaN or infinity, more
    than :data:`FRONT_MATTER_DEPTH` levels of nesting, and any YAML syntax error.
    """
    loader = _JsonYamlLoader(text)
    try:
        return loader.get_single_data()
    except _RefusedError as exc:
        raise PromptFileError(path, f"line {exc.line + first_line}: {exc.reason}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + first_line}: " if mark is not None else ""
        reason = " ".join(str(exc.problem or exc).split())
        raise PromptFileError(path, f"{where}invalid YAML front matter: {reason}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:
        raise PromptFileError(path, f"invalid YAML front matter: {' '.join(str(exc).split())}") from None
    finally:
        loader.dispose()


class _RefusedError(Exception):
    def __init__(self, mark: Any, reason: str) -> None:
        super().__init__(reason)
        self.line: int = mark.line if mark is not None else 0
        self.reason = reason


_STR_TAG = "tag:yaml.org,2002:str"


class _JsonYamlLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no types
    """``SafeLoader`` cut down to JSON: refuses anchors, aliases, non-JSON tags, deep nesting."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise _RefusedError(event.start_mark, "YAML anchors and aliases (& and *) are not allowed")
        self._depth += 1
        try:
            if self._depth > FRONT_MATTER_DEPTH:
                raise _RefusedError(event.start_mark, f"nested deeper than {FRONT_MATTER_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        for key_node, _value in node.value:
            if key_node.tag != _STR_TAG or not isinstance(key_node, yaml.ScalarNode):
                raise _RefusedError(key_node.start_mark, "mapping keys must be plain strings (JSON object keys)")
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        if len(node.value) > 32:  # int() of a huge literal is slow; no 64-bit integer is this long
            raise _RefusedError(node.start_mark, "integer out of the signed 64-bit range")
        value: int = super().construct_yaml_int(node)
        if not INT64_MIN <= value <= INT64_MAX:
            raise _RefusedError(node.start_mark, "integer out of the signed 64-bit range")
        return value

    def construct_yaml_float(self, node: Any) -> float:
        value: float = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _RefusedError(node.start_mark, f"{node.value!r} is not a finite number (not JSON)")
        return value

    def refuse_type(self, node: Any) -> Any:
        kind = str(node.tag).rsplit(":", 1)[-1]
        reason = f"YAML type {kind!r} is not a JSON type (quote the value to make it a string)"
        raise _RefusedError(node.start_mark, reason)


_JsonYamlLoader.add_constructor("tag:yaml.org,2002:int", _JsonYamlLoader.construct_yaml_int)
_JsonYamlLoader.add_constructor("tag:yaml.org,2002:float", _JsonYamlLoader.construct_yaml_float)
for _tag in ("timestamp", "binary", "set", "omap", "pairs"):
    _JsonYamlLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _JsonYamlLoader.refuse_type)
_JsonYamlLoader.add_constructor(None, _JsonYamlLoader.refuse_type)
