"""The linter: each check is proven by a flow that breaks exactly that rule."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.lint import Problem
from backend.flows.registry import load_bundle

MINIMAL = Path(__file__).parent / "flows_minimal"
FLOW = "report.flow.yaml"


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    return tmp_path


def _edit(directory: Path, name: str, old: str, new: str) -> None:
    path = directory / name
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new))


def _errors(directory: Path) -> list[Problem]:
    bundle, problems = load_bundle(directory)
    errors = [p for p in problems if p.is_error]
    assert (bundle is None) == bool(errors)
    return errors


def test_the_minimal_flow_is_clean(tmp_path: Path) -> None:
    assert _errors(_copy(tmp_path)) == []


def test_every_shipped_flow_passes_with_no_errors() -> None:
    bundle, problems = load_bundle(SHIPPED_FLOWS_DIR)
    assert bundle is not None, [str(p) for p in problems]
    assert {"report", "sextortion", "minors", "counselor", "resources", "receipt"} <= set(
        bundle.flows
    )
    assert {p.code for p in problems} <= {"W100"}
    assert set(bundle.texts.locales) == {"ko", "en", "zh", "ja", "vi"}
    for rule in bundle.triage.rules:
        assert rule.languages == set(bundle.texts.locales), "F013 holds for the shipped rules"


def _unknown_target(d: Path) -> None:
    _edit(d, FLOW, "bye: {say: t.bye, next: END}", "bye: {say: t.bye, next: nowhere}")


def _unreachable(d: Path) -> None:
    _edit(d, FLOW, "commands:", "  orphan: {say: t.bye, next: END}\ncommands:")


def _never_ends(d: Path) -> None:
    _edit(
        d,
        FLOW,
        "bye: {say: t.bye, next: END}",
        "bye: {say: t.bye, buttons: [{id: again, label: t.ask, next: bye}]}",
    )


def _if_without_else(d: Path) -> None:
    _edit(d, FLOW, "      - {else: bye}\n", "")


def _missing_text(d: Path) -> None:
    _edit(d, "locales/en.yaml", "t: {hello: hello, ask: ask, bye: bye}", "t: {hello: h, ask: a}")


def _missing_safety_text(d: Path) -> None:
    (d / "locales" / "vi.yaml").write_text(
        "_meta: {fallback: en, complete: false}\nt: {hello: x}\n"
    )


def _unknown_action(d: Path) -> None:
    _edit(d, FLOW, "hello: {say: t.hello, next: ask}", "hello: {action: rm_rf, next: ask}")


def _unknown_action_argument(d: Path) -> None:
    _edit(
        d,
        FLOW,
        "hello: {say: t.hello, next: ask}",
        "hello: {action: submit_report, with: {to: everyone}, next: ask}",
    )


def _undeclared_slot_in_condition(d: Path) -> None:
    _edit(d, FLOW, "slots.answer == 'a'", "slots.mood == 'a'")


def _undeclared_slot_in_step(d: Path) -> None:
    _edit(d, FLOW, "slot: answer", "slot: mood")


def _long_button_id(d: Path) -> None:
    _edit(
        d,
        FLOW,
        "hello: {say: t.hello, next: ask}",
        "hello: {say: t.hello, buttons: [{id: " + "x" * 65 + ", label: t.ask, next: ask}]}",
    )


def _button_id_a_door_refuses(d: Path) -> None:
    _edit(d, "report.flow.yaml", "choices: [a, b]", "choices: [a, 'b c']")
    _edit(d, "locales/ko.yaml", "answer: {a: A, b: B}", "answer: {a: A, b c: B}")
    _edit(d, "locales/en.yaml", "answer: {a: A, b: B}", "answer: {a: A, b c: B}")


def _cycle_without_input(d: Path) -> None:
    _edit(d, FLOW, "hello: {say: t.hello, next: ask}", "hello: {say: t.hello, next: loop}")
    _edit(
        d,
        FLOW,
        "commands:",
        '  loop:\n    next:\n      - {if: "priority > 1", then: hello}\n      - {else: ask}\n'
        "commands:",
    )


def _unknown_subflow(d: Path) -> None:
    _edit(d, FLOW, "hello: {say: t.hello, next: ask}", "hello: {call: nowhere, next: ask}")


def _translation_without_a_placeholder(d: Path) -> None:
    _edit(d, "locales/en.yaml", 'no_counselor: "nobody now {receipt}"', "no_counselor: nobody now")


def _label_too_long_for_kakao(d: Path) -> None:
    _edit(d, "locales/en.yaml", "answer: {a: A, b: B}", "answer: {a: Fifteen letters!, b: B}")


def _short_label_still_too_long(d: Path) -> None:
    _edit(
        d,
        "locales/en.yaml",
        "answer: {a: A, b: B}",
        "answer: {a: A, b: B}\nlabels: {kakao: {answer: {a: Still fifteen!!}}}",
    )


def _triage_rule_missing_a_language(d: Path) -> None:
    (d / "triage.yaml").write_text(
        "schema: 1\nrules:\n  - id: self_harm\n    flag: self_harm\n    priority: 3\n"
        "    keywords:\n      ko: [죽고 싶]\n"
    )


def _missing_entry(d: Path) -> None:
    _edit(d, FLOW, "flow: report", "flow: other")


@pytest.mark.parametrize(
    ("breaks", "code"),
    [
        (_unknown_target, "F001"),
        (_unreachable, "F002"),
        (_never_ends, "F003"),
        (_if_without_else, "F004"),
        (_missing_text, "F005"),
        (_missing_safety_text, "F005"),
        (_unknown_action, "F006"),
        (_unknown_action_argument, "F006"),
        (_undeclared_slot_in_condition, "F007"),
        (_undeclared_slot_in_step, "F007"),
        (_long_button_id, "F008"),
        (_button_id_a_door_refuses, "F008"),
        (_cycle_without_input, "F009"),
        (_unknown_subflow, "F010"),
        (_missing_entry, "F010"),
        (_translation_without_a_placeholder, "F011"),
        (_label_too_long_for_kakao, "F012"),
        (_short_label_still_too_long, "F012"),
        (_triage_rule_missing_a_language, "F013"),
    ],
)
def test_each_rule_is_reported_with_its_code_file_and_line(
    tmp_path: Path, breaks: Callable[[Path], None], code: str
) -> None:
    directory = _copy(tmp_path)
    breaks(directory)
    errors = _errors(directory)
    assert errors, "the broken flow must not load"
    assert {p.code for p in errors} == {code}, [str(p) for p in errors]
    for problem in errors:
        assert problem.line >= 1 and problem.source, str(problem)
        assert str(problem).startswith(f"{problem.source}:{problem.line}: {code} ")


def test_the_line_points_at_the_broken_step(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    _unknown_target(directory)
    (error,) = _errors(directory)
    lines = (directory / FLOW).read_text().splitlines()
    assert "bye:" in lines[error.line - 1]


def test_a_short_label_for_kakao_clears_f012(tmp_path: Path) -> None:
    """Issue 18: a label is checked as each channel shows it."""
    directory = _copy(tmp_path)
    _label_too_long_for_kakao(directory)
    (error,) = _errors(directory)
    assert "over kakao's 14" in error.message and "labels.kakao.answer.a" in error.message
    _edit(
        directory,
        "locales/en.yaml",
        "answer: {a: Fifteen letters!, b: B}",
        "answer: {a: Fifteen letters!, b: B}\nlabels: {kakao: {answer: {a: Fifteen}}}",
    )
    assert _errors(directory) == []


def test_an_unverified_resource_is_a_warning_for_an_administrator(tmp_path: Path) -> None:
    directory = _copy(tmp_path)
    (directory / "resources.yaml").write_text(
        "schema: 1\nresources:\n  - {id: x, name: {ko: X}, needs: [all], ages: [all], "
        "verified: false}\n"
    )
    bundle, problems = load_bundle(directory)
    assert bundle is not None
    assert [p.code for p in problems] == ["W100"]
    assert bundle.directory.select("all", minor=False, language="ko") == []
