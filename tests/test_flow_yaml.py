"""Hostile YAML from an administrator's directory is refused clearly, cheaply and early."""

from __future__ import annotations

import shutil
import tracemalloc
from pathlib import Path

import pytest

from backend.core.errors import FlowError
from backend.flows import source, yaml_screen
from backend.flows.registry import FlowRegistry, load_bundle

MINIMAL = Path(__file__).parent / "flows_minimal"
PEAK_BYTES = 16 * 1024 * 1024

ALIAS_BOMB = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}" + f",*{chr(97 + i)}" * 8 + "]"
        for i in range(8)
    ]
)


def _refused(tmp_path: Path, text: str | bytes, match: str) -> FlowError:
    path = tmp_path / "report.flow.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    tracemalloc.start()
    try:
        with pytest.raises(FlowError, match=match) as caught:
            source.read(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"{peak} bytes used to refuse it"
    return caught.value


def test_an_alias_bomb_is_refused_before_it_expands(tmp_path: Path) -> None:
    error = _refused(tmp_path, ALIAS_BOMB, "anchors and aliases are not allowed")
    assert "report.flow.yaml:1" in str(error)


def test_a_huge_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    _refused(tmp_path, "a: " + "x" * (300 * 1024) + "\n", "byte limit")


def test_deep_nesting_is_refused(tmp_path: Path) -> None:
    # libyaml (PyYAML 6.0.4) stops at 1,000 levels with its own words before its parser hands
    # anything over; our limit and message come first, whatever the library (issue 11).
    error = _refused(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 24")
    assert str(error) == f"{tmp_path / 'report.flow.yaml'}:1: nested deeper than 24 levels"


def test_deep_block_nesting_is_refused_with_our_words(tmp_path: Path) -> None:
    error = _refused(tmp_path, "a:\n  " + "- " * 3000 + "x\n", "nested deeper than 24 levels")
    assert "report.flow.yaml:2:" in str(error)
    assert "maximum nesting depth" not in str(error)


def test_deep_indentation_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "".join(" " * level + f"k{level}:\n" for level in range(40)) + " " * 40 + "v\n"
    error = _refused(tmp_path, text, "nested deeper than 24 levels")
    assert "report.flow.yaml:24:" in str(error)


def test_an_alias_is_refused_on_its_line_before_any_parser(tmp_path: Path) -> None:
    # Not even valid YAML after the alias: the text screen answers before the parser would.
    error = _refused(tmp_path, "a: 1\nb: *nothing [\n", "anchors and aliases are not allowed")
    assert "report.flow.yaml:2:" in str(error)


def test_many_small_nodes_are_refused(tmp_path: Path) -> None:
    error = _refused(tmp_path, "a: [" + ",".join("1" * 25_000) + "]\n", "more than 20000")
    assert "report.flow.yaml:1:" in str(error)


@pytest.mark.parametrize(
    "text",
    [
        "a: '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[['\nb: \"&x *y [[[[[[[[[[[[[[[[[[[[[[[[[[\"\n",
        "a: 5 * 3 & foo[1] it's # [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\n",
        "a: |\n" + "".join(" " * (i + 2) + "line [&x\n" for i in range(40)) + "b: 1\n",
    ],
    ids=["quoted", "plain-and-comment", "block-scalar"],
)
def test_brackets_and_stars_in_text_are_not_structure(tmp_path: Path, text: str) -> None:
    path = tmp_path / "report.flow.yaml"
    path.write_text(text, encoding="utf-8")
    assert source.read(path).data["a"]


def test_the_shipped_flows_stay_far_below_the_depth_limit() -> None:
    shipped = Path(__file__).parent.parent / "flows"
    for path in shipped.rglob("*.yaml"):
        assert yaml_screen.screen(path.read_text(encoding="utf-8"), 8) is None, path


def test_non_text_keys_are_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "steps:\n  1: {say: t.hello}\n", "key 1 is not text")


def test_a_complex_key_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "? [a, b]\n: c\n", "is not text")


def test_a_duplicate_key_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "a: 1\nb: 2\na: 3\n", "appears twice")


def test_a_python_tag_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, "a: !!python/object/apply:os.system ['true']\n", "tag")


def test_text_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    _refused(tmp_path, b"a: \xff\xfe\n", "not UTF-8")


def test_broken_yaml_is_refused_with_its_line(tmp_path: Path) -> None:
    _refused(tmp_path, "a: 1\nsteps: {a: [\n", "not valid YAML")


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (("hello: {say: t.hello, next: ask}", "hello: {sya: t.hello, next: ask}"), "unknown keys"),
        (("schema: 1", "schema: 1\nextra: true"), "unknown keys"),
        (("start: hello", "start: 5"), "start: must be non-empty text"),
        (("hello: {say: t.hello, next: ask}", "hello: [1, 2]"), "must be a mapping"),
        (
            ("hello: {say: t.hello, next: ask}", "hello: {say: t.hello, next: ask, priority: x}"),
            "priority",
        ),
        (("choices: [a, b]", "choices: a"), "choices: must be a list"),
        (("choices: [a, b]", "choices: [a, b], keep: match"), "a files slot keeps one of"),
        (("schema: 1", "schema: 2"), "schema: must be 1"),
        (("slots.answer == 'a'", "__import__('os').system('true')"), "not allowed"),
    ],
)
def test_wrong_shapes_and_types_name_the_file_line_and_field(
    tmp_path: Path, edit: tuple[str, str], match: str
) -> None:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    flow = tmp_path / "report.flow.yaml"
    flow.write_text(flow.read_text().replace(*edit))
    bundle, problems = load_bundle(tmp_path)
    assert bundle is None
    (problem,) = problems
    assert problem.code == "F000"
    assert problem.source == str(flow) and problem.line >= 1
    assert match in problem.message
    with pytest.raises(FlowError, match=match):
        FlowRegistry.load(tmp_path)


def test_a_hostile_locale_is_refused_too(tmp_path: Path) -> None:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    (tmp_path / "locales" / "en.yaml").write_text(ALIAS_BOMB)
    bundle, problems = load_bundle(tmp_path)
    assert bundle is None
    assert "anchors and aliases" in problems[0].message
