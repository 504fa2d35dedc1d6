"""Our own limits on a YAML text, checked on the characters before any YAML library sees them.

The loader's event screen (`source._screen`) sees only what the parser hands it, and a parser
may refuse a hostile document first with its own words: libyaml, as bundled with PyYAML 6.0.4,
scans far ahead of its parser and stops at 1,000 levels with "exceeded maximum nesting depth",
so an administrator would read the library's message, and the next release could change it
again (issue 11). This pass needs no parser: it walks the text once, skipping comments, quoted
text and block scalars, and finds

- nesting deeper than the limit: flow brackets plus block indentation levels plus the compact
  `- ` indicators of a line (an upper bound: a real document is never deeper than this says,
  and the shipped flows stay far below the limit);
- anchors (`&name`) and aliases (`*name`), which flows never need and which make alias bombs.

What it cannot see without a parser (tags, node counts, keys) stays with the event screen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from backend.core.errors import N_

# Characters that can open or close structure, start quoted text or a comment, or mark an
# anchor or alias; everything else on a line is skipped in one step.
_SIGNIFICANT = re.compile(r"""[\[\]{}'"#&*]""")
# Characters after which a `[`, `{`, quote, `&` or `*` starts a new token rather than sitting
# inside a plain scalar (`foo[1]`, `it's`, `5*3` are plain text).
_TOKEN_BEFORE = frozenset(" \t[{,:-?")
_COMPACT = re.compile(r"(?:[-?:](?:[ \t]+|$))*")
_INDICATOR = re.compile(r"[-?:]")
_BLOCK_SCALAR = re.compile(r"(?:^|[ \t:-])[|>][0-9+-]*[ \t]*(?:#.*)?$")


@dataclass(frozen=True)
class Finding:
    """The first limit the text breaks, and its 1-based line: its text marked for the console's
    catalog (`N_`) and the values it names."""

    line: int
    message_id: str
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def problem(self) -> str:
        """In English."""
        return self.message_id % self.values if self.values else self.message_id


def screen(text: str, max_depth: int) -> Finding | None:
    """The first anchor, alias or nesting past `max_depth` in `text`, or None."""
    return _Walker(max_depth).walk(text)


class _Walker:
    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self.indents: list[int] = []
        self.flow = 0
        self.quote = ""
        # Indentation of the line that opened a block scalar; deeper lines are its text.
        self.scalar_indent: int | None = None

    def walk(self, text: str) -> Finding | None:
        for number, line in enumerate(text.splitlines(), 1):
            finding = self._line(number, line)
            if finding is not None:
                return finding
        return None

    def _line(self, number: int, line: str) -> Finding | None:
        stripped = line.lstrip(" ")
        indent = len(line) - len(stripped)
        if self.scalar_indent is not None:
            if not stripped or indent > self.scalar_indent:
                return None
            self.scalar_indent = None
        if self.quote == "" and self.flow == 0:
            if not stripped or stripped.startswith("#"):
                return None
            if stripped.startswith(("---", "...")):
                self.indents.clear()
            while self.indents and self.indents[-1] >= indent:
                self.indents.pop()
            self.indents.append(indent)
            prefix = _COMPACT.match(stripped)
            compact_count = 0 if prefix is None else len(_INDICATOR.findall(prefix.group()))
            # One more for a mapping that the line's key may open after its indicators.
            block = len(self.indents) + compact_count + 1
            if block > self.max_depth:
                return Finding(number, self._deeper(), {"depth": self.max_depth})
        else:
            block = len(self.indents) + 1
        finding = self._characters(number, line, indent, block)
        opens_block_scalar = _BLOCK_SCALAR.search(_without_comment(line)) is not None
        if finding is None and self.quote == "" and self.flow == 0 and opens_block_scalar:
            self.scalar_indent = indent
        return finding

    def _characters(self, number: int, line: str, start: int, block: int) -> Finding | None:
        for match in _SIGNIFICANT.finditer(line, start):
            char, at = match.group(), match.start()
            if self.quote:
                if char == self.quote and not _escaped(line, at, char):
                    self.quote = ""
                continue
            at_token = at == start or line[at - 1] in _TOKEN_BEFORE
            if char == "#" and (at == 0 or line[at - 1] in " \t"):
                break
            if char in "'\"" and at_token:
                self.quote = char
            elif char in "[{" and (at_token or self.flow):
                self.flow += 1
                if block + self.flow > self.max_depth:
                    return Finding(number, self._deeper(), {"depth": self.max_depth})
            elif char in "]}" and self.flow:
                self.flow -= 1
            elif char in "&*" and at_token and at + 1 < len(line) and _name(line[at + 1]):
                return Finding(number, N_("YAML anchors and aliases are not allowed"))
        return None

    def _deeper(self) -> str:
        return N_("nested deeper than %(depth)s levels")


def _escaped(line: str, at: int, quote: str) -> bool:
    """A double quote after an odd run of backslashes is text; a single quote is closed by
    itself, and `''` inside single quotes is text (the next one reopens it)."""
    if quote == '"':
        backslashes = len(line[:at]) - len(line[:at].rstrip("\\"))
        return backslashes % 2 == 1
    return False


def _name(char: str) -> bool:
    return not char.isspace() and char not in ",[]{}"


def _without_comment(line: str) -> str:
    cut = line.find(" #")
    return line if cut < 0 else line[:cut]
