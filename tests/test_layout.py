"""The folders are trust zones, and these rules keep them so (read from the source by `ast`).

The bot process holds no private key: everything in `bot/` outside the CLI (the edge) may import
only `backend.core` and `backend.flows`, so a compromised bot cannot reach the storage, the
console or the keyring through its own code. `backend.core` imports nothing else of `backend`,
and `backend.flows` only `backend.core`; `backend` never imports `bot`. Each rule is shown to be
needed: a tree that breaks only that rule passes every other rule.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tokenize
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("backend", "bot")

Graph = Mapping[str, frozenset[str]]
Rule = Callable[[str, str], bool]  # (importer, imported) -> is this import forbidden


def _modules(root: Path) -> dict[str, Path]:
    """Every module of our packages under `root`, by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _targets(
    node: ast.Import | ast.ImportFrom, name: str, path: Path, known: Iterable[str]
) -> Iterator[str]:
    """The modules of ours an import statement names: `from a import b` is `a.b` when that is a
    module, else `a`."""
    known = set(known)
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = node.module or ""
    if node.level:
        package = name.split(".") if _is_package(path) else name.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in known else base


def _ours(module: str) -> bool:
    return module.split(".", maxsplit=1)[0] in PACKAGES


def import_graph(root: Path, *, module_level_only: bool = False) -> dict[str, frozenset[str]]:
    """Each module's imports of our own modules. `module_level_only` leaves out imports inside
    functions, which run later and so cannot close an import circle."""
    modules = _modules(root)
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes: Iterable[ast.AST] = _top_level(tree) if module_level_only else ast.walk(tree)
        imported: set[str] = set()
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                imported.update(t for t in _targets(node, name, path, modules) if _ours(t))
        graph[name] = frozenset(imported - {name})
    return graph


def _top_level(tree: ast.Module) -> Iterator[ast.AST]:
    """Statements that run when the module is imported: the body, and inside `if`/`try` blocks
    at module level, but not function or class bodies' nested functions."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With | ast.ClassDef):
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)


def _within(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def edge_imports_only_core_and_flows(importer: str, imported: str) -> bool:
    return (
        _within(importer, "bot")
        and not _within(importer, "bot.cli")
        and _within(imported, "backend")
        and not _within(imported, "backend.core", "backend.flows")
    )


def core_imports_only_core(importer: str, imported: str) -> bool:
    return (
        _within(importer, "backend.core")
        and _within(imported, "backend")
        and not _within(imported, "backend.core")
    )


def flows_import_only_core(importer: str, imported: str) -> bool:
    return (
        _within(importer, "backend.flows")
        and _within(imported, "backend")
        and not _within(imported, "backend.core", "backend.flows")
    )


def backend_never_imports_bot(importer: str, imported: str) -> bool:
    return _within(importer, "backend") and _within(imported, "bot")


RULES: dict[str, Rule] = {
    "the edge imports only backend.core and backend.flows": edge_imports_only_core_and_flows,
    "backend.core imports nothing else of backend": core_imports_only_core,
    "backend.flows imports only backend.core": flows_import_only_core,
    "backend never imports bot": backend_never_imports_bot,
}


def violations(graph: Graph, rules: Mapping[str, Rule]) -> list[str]:
    return [
        f"{importer} imports {imported}: {why}"
        for importer, imported_ in sorted(graph.items())
        for imported in sorted(imported_)
        for why, forbidden in rules.items()
        if forbidden(importer, imported)
    ]


def test_the_tree_keeps_every_rule() -> None:
    assert violations(import_graph(ROOT), RULES) == []


# One tree per rule, breaking that rule only; every tree also has the imports the rules allow.
_ALLOWED = {
    "backend/core/__init__.py": "",
    "backend/core/keys.py": "from backend.core import errors\n",
    "backend/core/errors.py": "",
    "backend/flows/__init__.py": "",
    "backend/flows/engine.py": "from backend.core.keys import x\nfrom backend.flows import spec\n",
    "backend/flows/spec.py": "",
    "backend/models.py": "",
    "backend/console/views.py": "from backend import models\nfrom backend.flows import engine\n",
    "bot/__init__.py": "",
    "bot/runtime.py": "from backend.flows.engine import x\nfrom backend.core import keys\n",
    "bot/cli/__init__.py": "",
    "bot/cli/node.py": "from backend.console import views\nfrom bot import runtime\n",
}
_BREAKS = {
    "the edge imports only backend.core and backend.flows": {
        "bot/telegram/door.py": "def later() -> None:\n    from backend.models import Case\n",
    },
    "backend.core imports nothing else of backend": {
        "backend/core/sealing.py": "from .. import models\n",
    },
    "backend.flows imports only backend.core": {
        "backend/flows/registry.py": "import backend.console.views\n",
    },
    "backend never imports bot": {
        "backend/intake.py": "from bot.cli import node\n",
    },
}


def _tree(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for directory in {p for p in root.rglob("*") if p.is_dir()}:
        (directory / "__init__.py").touch()
    return root


def test_the_allowed_imports_break_no_rule(tmp_path: Path) -> None:
    graph = import_graph(_tree(tmp_path, _ALLOWED))
    assert graph["bot.runtime"] == {"backend.flows.engine", "backend.core.keys"}
    assert violations(graph, RULES) == []


@pytest.mark.parametrize("rule", sorted(RULES))
def test_without_this_rule_a_forbidden_import_would_pass(rule: str, tmp_path: Path) -> None:
    graph = import_graph(_tree(tmp_path, {**_ALLOWED, **_BREAKS[rule]}))
    others = {why: forbidden for why, forbidden in RULES.items() if why != rule}
    assert violations(graph, others) == [], "only the rule under test sees this import"
    (found,) = violations(graph, RULES)
    assert found.endswith(rule)


def _circles(graph: Graph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.get(module, frozenset()):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_there_is_no_import_circle() -> None:
    assert _circles(import_graph(ROOT, module_level_only=True)) == []


def test_a_circle_is_found(tmp_path: Path) -> None:
    files = {
        "backend/console/views.py": "from backend.console import queue\n",
        "backend/console/queue.py": "from backend.console.views import cases_key\n",
        "backend/console/live.py": "from backend.console import views\n",
    }
    graph = import_graph(_tree(tmp_path, files), module_level_only=True)
    assert _circles(graph) == [["backend.console.queue", "backend.console.views"]]


def test_the_edge_does_not_load_the_storage() -> None:
    """What the bot process imports: every module of the edge, in a fresh interpreter."""
    edge = sorted(m for m in _modules(ROOT) if _within(m, "bot") and not _within(m, "bot.cli"))
    script = (
        "import importlib, json, sys\n"
        f"for name in {edge!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert "bot.telegram.door" in loaded and "bot.runtime" in loaded
    assert not {m for m in loaded if _within(m, "sqlmodel", "sqlalchemy", "alembic")}
    centre = {
        m
        for m in loaded
        if _within(m, "backend")
        and m != "backend"
        and not _within(m, "backend.core", "backend.flows")
    }
    assert centre == set()
    assert "backend.models" not in loaded


_SUPPRESSION = re.compile(r"#\s*(noqa|type:\s*ignore)\b(?P<rest>.*)")
_REASONED = re.compile(r"^(:\s*[A-Z0-9, ]+\s+-\s+\S|\[[a-z, -]+\]\s+#\s*\S)")


def test_every_suppression_names_its_reason() -> None:
    """`# noqa: RULE - why` and `# type: ignore[code]  # why`: a bare one hides its reason."""
    bare = []
    for folder in (*PACKAGES, "tests", "bench"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            with path.open("rb") as source:
                for token in tokenize.tokenize(source.readline):
                    found = _SUPPRESSION.search(token.string)
                    named = found is not None and _REASONED.match(found["rest"])
                    if token.type == tokenize.COMMENT and found and not named:
                        bare.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    assert bare == []


def test_the_readme_layout_table_matches_the_tree() -> None:
    """Every path in the table exists, and every zone (top-level folder, subpackage of `bot`,
    `backend.core`, `backend.flows`) has a row."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Layout") :].split("\n## ", 1)[0]
    rows = set(re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE))
    assert rows
    assert [row for row in rows if not (ROOT / row).exists()] == []
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    zones = {f"{path.split('/')[0]}/" for path in tracked if "/" in path}
    zones |= {f"bot/{p.name}/" for p in (ROOT / "bot").iterdir() if (p / "__init__.py").exists()}
    zones |= {"backend/core/", "backend/flows/"}
    assert {zone for zone in zones if not any(row.startswith(zone) for row in rows)} == set()
