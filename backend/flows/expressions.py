"""The small condition language of `if:` branches, compiled once to plain closures.

Conditions read like `slots.category == 'sextortion' and 'minor' not in flags`. Python's own
parser reads the text into a syntax tree (`ast.parse`, never `eval`), and only a short list of
node kinds is accepted: literals, lists, `slots.<name>`, `ctx.<name>`, `flags`, `priority`,
`language`, comparisons, `and`/`or`/`not`. Anything else (calls, attributes of other names,
subscripts, arithmetic) is a `FlowError` when the flow is loaded, so a step never meets it.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from backend.core.errors import N_, FlowError

MAX_EXPRESSION_CHARS = 300
CONTEXT_NAMES = frozenset({"open", "files", "receipt_known"})
ROOT_NAMES = frozenset({"flags", "priority", "language"})


@dataclass(frozen=True)
class Scope:
    """What a condition may read: the conversation's slots and flags, and the step's context."""

    slots: Mapping[str, Any]
    flags: frozenset[str]
    priority: int
    language: str
    ctx: Mapping[str, Any]


Evaluator = Callable[[Scope], Any]


@dataclass(frozen=True)
class Condition:
    text: str
    evaluate: Evaluator
    slots: frozenset[str]  # slot names it reads, for the linter


_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: _contains(b, a),
    ast.NotIn: lambda a, b: not _contains(b, a),
}


def compile_condition(text: str) -> Condition:
    if not isinstance(text, str) or not text.strip():
        raise FlowError(N_("a condition must be non-empty text"))
    if len(text) > MAX_EXPRESSION_CHARS:
        raise FlowError(N_("condition over %(limit)s characters"), limit=MAX_EXPRESSION_CHARS)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        raise FlowError(N_("condition %(condition)r is not valid"), condition=text) from None
    slots: set[str] = set()
    evaluate = _compile(tree.body, text, slots)
    return Condition(text, _guarded(evaluate), frozenset(slots))


def _guarded(evaluate: Evaluator) -> Evaluator:
    def run(scope: Scope) -> Any:
        # A comparison of unlike types (a number slot against text) is false, not a crash.
        try:
            return evaluate(scope)
        except TypeError:
            return False

    return run


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, list | tuple | frozenset | set):
        return item in container
    return False


def _compile(node: ast.expr, text: str, slots: set[str]) -> Evaluator:  # noqa: PLR0911, PLR0912 - one case per node type
    if isinstance(node, ast.Constant) and (
        node.value is None or isinstance(node.value, str | int | float | bool)
    ):
        value = node.value
        return lambda _scope: value
    if isinstance(node, ast.Name):
        if node.id in ("true", "false", "null"):
            constant = {"true": True, "false": False, "null": None}[node.id]
            return lambda _scope: constant
        if node.id == "flags":
            return lambda scope: scope.flags
        if node.id == "priority":
            return lambda scope: scope.priority
        if node.id == "language":
            return lambda scope: scope.language
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        name = node.attr
        if node.value.id == "slots":
            slots.add(name)
            return lambda scope: scope.slots.get(name)
        if node.value.id == "ctx":
            if name not in CONTEXT_NAMES:
                raise FlowError(
                    N_("condition %(condition)r: unknown ctx.%(name)s"), condition=text, name=name
                )
            return lambda scope: scope.ctx.get(name)
    if isinstance(node, ast.List | ast.Tuple):
        items = [_compile(item, text, slots) for item in node.elts]
        return lambda scope: tuple(item(scope) for item in items)
    if isinstance(node, ast.BoolOp):
        parts = [_compile(value, text, slots) for value in node.values]
        if isinstance(node.op, ast.And):
            return lambda scope: all(part(scope) for part in parts)
        return lambda scope: any(part(scope) for part in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile(node.operand, text, slots)
        return lambda scope: not inner(scope)
    if isinstance(node, ast.Compare):
        left = _compile(node.left, text, slots)
        ops = [_COMPARE.get(type(op)) for op in node.ops]
        rights = [_compile(right, text, slots) for right in node.comparators]
        if any(op is None for op in ops):
            raise FlowError(N_("condition %(condition)r: unsupported comparison"), condition=text)
        pairs = [(op, right) for op, right in zip(ops, rights, strict=True) if op is not None]

        def compare(scope: Scope) -> bool:
            value = left(scope)
            for op, right in pairs:
                other = right(scope)
                if not op(value, other):
                    return False
                value = other
            return True

        return compare
    raise FlowError(
        N_("condition %(condition)r: %(kind)s is not allowed here"),
        condition=text,
        kind=type(node).__name__,
    )
