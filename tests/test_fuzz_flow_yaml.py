"""Fuzzing the flow loader with mutations of the shipped flows (see `tests/fuzzing.py`).

An administrator's YAML is input too. Each mutation (of the text, or of the parsed tree) goes
through the loader's own steps: read under caps, typed, linted, compiled. For every one: the
loader raises nothing but `FlowError`; a flow that lints clean compiles, and the engine starts
and steps a conversation on it without raising. One mutation in 25 goes through the whole
loader as a running bot meets it (the registry's `refresh` of an edited directory), which keeps
its current bundle when the edit has an error (a refused input changes nothing).
"""

from __future__ import annotations

import shutil
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from backend.core.conversation import Inbound, Pseudonym
from backend.core.errors import FlowError
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows import engine, source
from backend.flows.engine import Bundle, CompiledFlow
from backend.flows.hours import ServiceHours
from backend.flows.lint import lint
from backend.flows.registry import ENTRY_FLOW, FLOW_GLOB, FlowRegistry
from backend.flows.resources import Directory
from backend.flows.spec import FlowSpec, parse_flow
from backend.flows.texts import Texts
from backend.flows.triage import Triage
from tests.fuzzing import FUZZ_TIMEOUT_S, counted, fuzz_settings, json_values

FLOWS = {p.name: p.read_text() for p in sorted(SHIPPED_FLOWS_DIR.glob(FLOW_GLOB))}
TEXTS = Texts.load(SHIPPED_FLOWS_DIR / "locales")
TRIAGE = Triage.load(SHIPPED_FLOWS_DIR / "triage.yaml")
RESOURCES = Directory.load(SHIPPED_FLOWS_DIR / "resources.yaml")
HOURS = ServiceHours.load(SHIPPED_FLOWS_DIR / "service.yaml")
SPECS = {spec.name: spec for spec in (parse_flow(source.parse(t, n)) for n, t in FLOWS.items())}
WHO = Pseudonym("f" * 64)
# Words a flow is made of, so mutations often stay close to a valid flow.
WORDS = [
    *("say", "ask", "next", "END", "buttons", "slot", "if", "else", "then", "action", "retry"),
    *("handoff", "consent", "start", "steps", "slots", "flow", "schema", "on_any", "call"),
    *("submit_report", "quick_exit", "common.yes", "safety.exit", "nowhere", "1", "-1", "~"),
]


def _edit_text(text: str, at: int, cut: int, insert: str) -> str:
    at %= len(text) + 1
    return text[:at] + insert + text[at + cut :]


@st.composite
def text_mutations(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(FLOWS)))
    text = FLOWS[name]
    for _ in range(draw(st.integers(1, 4))):
        insert = draw(
            st.sampled_from(["", ":", "- ", "\n", "  ", "{", "[", "&a", "*a", "!!python/x", "#"])
            | st.sampled_from(WORDS)
            | st.text(st.characters(codec=None), max_size=8)
        )
        text = _edit_text(text, draw(st.integers(0, len(text))), draw(st.integers(0, 40)), insert)
    return name, text


def _mutate_tree(node: Any, path: list[int], value: Any, mode: str) -> Any:
    """The tree with one node (chosen by `path`, indices taken modulo) replaced, deleted or
    duplicated."""
    if not path or not isinstance(node, dict | list) or not node:
        return value if mode == "replace" else node
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    key = keys[path[0] % len(keys)]
    if len(path) == 1 and mode == "delete":
        copy = dict(node) if isinstance(node, dict) else list(node)
        del copy[key]
        return copy
    if len(path) == 1 and mode == "rename" and isinstance(node, dict):
        return {(str(value) if k == key else k): v for k, v in node.items()}
    child = _mutate_tree(node[key], path[1:], value, mode)
    if isinstance(node, dict):
        return {**node, key: child}
    return [*node[:key], child, *node[key + 1 :]]


@st.composite
def tree_mutations(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(sorted(FLOWS)))
    tree = yaml.safe_load(FLOWS[name])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.lists(st.integers(0, 50), min_size=1, max_size=5))
        value = draw(st.sampled_from(WORDS) | json_values)
        mode = draw(st.sampled_from(["replace", "replace", "delete", "rename"]))
        tree = _mutate_tree(tree, path, value, mode)
    return name, yaml.safe_dump(tree, allow_unicode=True, sort_keys=False)


def _through_the_loader(name: str, text: str) -> bool:
    """True when the mutated flow is clean (and then it compiled, started and stepped)."""
    try:
        spec = parse_flow(source.parse(text, name))
    except FlowError:
        return False  # refused with a located message: what an administrator sees
    specs: dict[str, FlowSpec] = {**SPECS, spec.name: spec}
    problems = lint(specs, TEXTS, ENTRY_FLOW, TRIAGE, RESOURCES)
    if any(p.is_error for p in problems) or len(specs) != len(SPECS):
        return False
    flows = {n: CompiledFlow.compile(s) for n, s in specs.items()}
    bundle = Bundle("fuzz", flows, TEXTS, ENTRY_FLOW, TRIAGE, RESOURCES, HOURS)
    first = Inbound(WHO, "web", text="/start")
    started = engine.start(bundle, bundle.new_session(first, "c" * 32), inbound=first)
    engine.step(bundle, started.session, Inbound(WHO, "web", text="hello"))
    return True


class Followed:
    """A registry following a copy of the shipped flows, which the fuzz edits (shown short in a
    failure report: the registry's own repr is every flow and text)."""

    def __init__(self, registry: FlowRegistry) -> None:
        self.registry = registry

    def __repr__(self) -> str:
        return f"Followed({self.registry.directory})"


@pytest.fixture(scope="module")
def followed(tmp_path_factory: pytest.TempPathFactory) -> Followed:
    directory = tmp_path_factory.mktemp("fuzzed") / "flows"
    shutil.copytree(SHIPPED_FLOWS_DIR, directory, ignore=shutil.ignore_patterns("tests"))
    return Followed(FlowRegistry.load(directory))


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(2000)
@given(mutation=text_mutations() | tree_mutations(), whole=st.integers(0, 24))
def test_mutated_flows_are_refused_or_run(
    followed: Followed, mutation: tuple[str, str], whole: int
) -> None:
    name, text = mutation
    with counted("flow yaml"):
        clean = _through_the_loader(name, text)
        if whole == 0:
            _through_the_registry(followed.registry, name, text, clean=clean)


def _through_the_registry(registry: FlowRegistry, name: str, text: str, *, clean: bool) -> None:
    """The whole loader, as a running bot meets an edit: from the directory, by `refresh`."""
    path = registry.directory / name
    before = registry.entry().version
    try:
        path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
        registry.refresh()
        if not clean:
            assert registry.entry().version == before, "an invalid edit is never loaded"
    finally:
        path.write_text(FLOWS[name], encoding="utf-8")
