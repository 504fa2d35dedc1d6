"""Reading administrators' YAML safely, keeping the line of every value for error messages.

YAML from `flows/` may be wrong or hostile. Before any YAML library sees the text,
`yaml_screen` refuses nesting and anchors on the characters alone, so our limits and messages
hold whatever the library's own limits are (issue 11). Then one pass over the parser's
event stream (the parser is iterative, so deep nesting cannot overflow the stack there) refuses
what flows never need and what makes YAML expensive: aliases and anchors (alias bombs), nesting
deeper than `MAX_DEPTH`, more than `MAX_EVENTS` nodes, and tags other than the plain ones. Only
then is the document composed and turned into plain dicts, lists and scalars, with mapping keys
that must be unique text. The size of the file is capped before it is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from backend.core.errors import N_, FlowError
from backend.flows import yaml_screen

MAX_FILE_BYTES = 256 * 1024
MAX_DEPTH = 24
MAX_EVENTS = 20_000
_PLAIN_TAGS = frozenset(
    {"!"}
    | {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null", "map", "seq")}
)

PathKey = tuple[str | int, ...]
# libyaml's parser when PyYAML was built with it (it is on the usual wheels): the same events
# and nodes, several times faster on a large hostile file.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Document:
    """A parsed YAML file: plain data, and the 1-based line of each value by its path."""

    source: str
    data: Any
    lines: dict[PathKey, int] = field(default_factory=dict, compare=False, repr=False)

    def line(self, path: PathKey) -> int:
        """The line of the value at `path`, or of its nearest ancestor that has one."""
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


def read(path: Path) -> Document:
    """Read and parse one YAML file under the caps above; a `FlowError` names what is wrong."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise FlowError(
            N_("cannot be read (%(reason)s)"), where=str(path), reason=exc.strerror
        ) from None
    if size > MAX_FILE_BYTES:
        raise FlowError(
            N_("%(size)s bytes is over the %(limit)s-byte limit"),
            where=str(path),
            size=size,
            limit=MAX_FILE_BYTES,
        )
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FlowError(N_("is not UTF-8 text"), where=str(path)) from None
    return parse(text, str(path))


def parse(text: str, source: str) -> Document:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate, from a JSON "\ud800" (found by fuzzing)
        raise FlowError(N_("is not UTF-8 text"), where=source) from None
    if size > MAX_FILE_BYTES:
        raise FlowError(N_("over the %(limit)s-byte limit"), where=source, limit=MAX_FILE_BYTES)
    finding = yaml_screen.screen(text, MAX_DEPTH)
    if finding is not None:
        raise FlowError(finding.message_id, where=f"{source}:{finding.line}", **finding.values)
    try:
        _screen(text, source)
        node = yaml.compose(text, Loader=_FAST_LOADER)
    except yaml.YAMLError as exc:
        # At the line where the parser gave up, so an editor can show it there (issue 15).
        mark = getattr(exc, "problem_mark", None)
        where = source if mark is None else f"{source}:{mark.line + 1}"
        # The parser's own words stay English inside a translated frame.
        raise FlowError(
            N_("not valid YAML (%(detail)s)"), where=where, detail=_one_line(exc)
        ) from None
    lines: dict[PathKey, int] = {}
    # A fresh loader per document: its constructor caches every node it has built.
    scalars = yaml.SafeLoader("")
    data = None if node is None else _plain(node, (), lines, source, scalars)
    return Document(source, data, lines)


def _screen(text: str, source: str) -> None:
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=_FAST_LOADER)):
        line = _line_of(event)
        if count > MAX_EVENTS:
            raise FlowError(
                N_("more than %(limit)s YAML nodes"), where=f"{source}:{line}", limit=MAX_EVENTS
            )
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise FlowError(
                N_("YAML anchors and aliases are not allowed"), where=f"{source}:{line}"
            )
        tag = getattr(event, "tag", None)
        if tag is not None and tag not in _PLAIN_TAGS:
            raise FlowError(
                N_("YAML tag %(tag)r is not allowed"), where=f"{source}:{line}", tag=tag
            )
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise FlowError(
                    N_("nested deeper than %(depth)s levels"),
                    where=f"{source}:{line}",
                    depth=MAX_DEPTH,
                )
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            depth -= 1


def _line_of(event: yaml.Event) -> int:
    mark = event.start_mark
    return 1 if mark is None else mark.line + 1


def _plain(
    node: yaml.Node,
    path: PathKey,
    lines: dict[PathKey, int],
    source: str,
    scalars: yaml.SafeLoader,
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _plain(key_node, (*path, "<key>"), {}, source, scalars)
            where = f"{source}:{key_node.start_mark.line + 1}"
            if not isinstance(key, str):
                raise FlowError(N_("mapping key %(key)r is not text"), where=where, key=key)
            if key in out:
                raise FlowError(N_("key %(key)r appears twice"), where=where, key=key)
            out[key] = _plain(value_node, (*path, key), lines, source, scalars)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _plain(item, (*path, i), lines, source, scalars) for i, item in enumerate(node.value)
        ]
    try:
        return scalars.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise FlowError(f"{source}:{lines[path]}: {_one_line(exc)}") from None


def _one_line(exc: yaml.YAMLError) -> str:
    return " ".join(str(exc).split())
