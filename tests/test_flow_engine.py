"""The shipped report flow, driven as dialog tables through the pure step function."""

from __future__ import annotations

from pathlib import Path

import pytest

from backend.conversation import (
    Inbound,
    Pseudonym,
    QuickExit,
    Session,
    StepResult,
    SubmitReport,
)
from backend.errors import FlowError
from backend.flows import engine
from backend.flows.engine import CompiledFlow
from backend.flows.registry import FlowRegistry
from backend.settings import SHIPPED_FLOWS_DIR

WHO = Pseudonym("p" * 64)


@pytest.fixture(scope="module")
def flow() -> CompiledFlow:
    return FlowRegistry.load(SHIPPED_FLOWS_DIR).entry()


def _say(flow: CompiledFlow, key: str, language: str = "en") -> str:
    return flow.texts.get(key, language)


def _begin(flow: CompiledFlow, language: str = "en") -> tuple[Session, list[str]]:
    session = flow.new_session(Inbound(WHO, "web", language=language), "conv-1")
    result = engine.start(flow, session)
    return result.session, [m.text for m in result.messages]


def _turn(
    flow: CompiledFlow, session: Session, *, text: str | None = None, button: str | None = None
) -> StepResult:
    return engine.step(flow, session, Inbound(WHO, "web", text=text, button=button))


def test_a_whole_report(flow: CompiledFlow) -> None:
    session, said = _begin(flow)
    assert said == [_say(flow, "report.welcome"), _say(flow, "report.consent")]
    result = _turn(flow, session, button="agree")
    assert [m.text for m in result.messages] == [_say(flow, "report.category")]
    assert [b.id for b in result.messages[0].buttons][:3] == ["filming", "distribution", "deepfake"]
    assert result.messages[0].buttons[2].label == _say(flow, "category.deepfake")
    result = _turn(flow, result.session, button="sextortion")
    assert result.session.slots == {"category": "sextortion"}
    assert [m.text for m in result.messages] == [_say(flow, "report.details")]
    result = _turn(flow, result.session, text="  He threatens to post a video by Friday.  ")
    assert [m.text for m in result.messages] == [_say(flow, "report.received")]
    (effect,) = result.effects
    assert isinstance(effect, SubmitReport)
    assert effect.answers == {
        "category": "sextortion",
        "details": "He threatens to post a video by Friday.",
    }
    assert effect.priority > 0, "sextortion jumps the queue"
    assert result.session.ended


def test_a_retried_turn_gives_the_same_idempotency_key(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    session = _turn(flow, session, button="agree").session
    session = _turn(flow, session, button="deepfake").session
    first = _turn(flow, session, text="details").effects
    second = _turn(flow, session, text="details").effects
    assert first == second
    assert isinstance(first[0], SubmitReport)
    assert first[0].idempotency_key.startswith("conv-1:")


def test_declining_consent_ends_without_a_report(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    result = _turn(flow, session, button="decline")
    assert [m.text for m in result.messages] == [_say(flow, "report.declined")]
    assert result.effects == ()
    assert result.session.ended


def test_stale_button_is_answered_calmly_and_the_question_repeated(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    session = _turn(flow, session, button="agree").session
    result = _turn(flow, session, button="agree")
    assert [m.text for m in result.messages] == [
        _say(flow, "common.stale_button"),
        _say(flow, "report.category"),
    ]
    assert result.session.state == "category"


def test_text_where_a_choice_is_expected_asks_for_a_button(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    result = _turn(flow, session, text="hello?")
    assert result.messages[0].text == _say(flow, "common.use_buttons")
    assert result.session.state == "consent"


def test_too_long_text_is_refused_and_nothing_is_stored(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    session = _turn(flow, session, button="agree").session
    session = _turn(flow, session, button="unsure").session
    result = _turn(flow, session, text="x" * 4001)
    assert result.messages[0].text == _say(flow, "common.too_long")
    assert "details" not in result.session.slots
    assert result.effects == ()


@pytest.mark.parametrize("command", ["/exit", "/stop", "/EXIT now"])
def test_exit_from_any_step_ends_and_erases(flow: CompiledFlow, command: str) -> None:
    session, _ = _begin(flow)
    session = _turn(flow, session, button="agree").session
    result = _turn(flow, session, text=command)
    assert result.effects == (QuickExit(),)
    assert result.session.ended
    assert [m.text for m in result.messages] == [_say(flow, "common.exited")]


def test_quick_exit_button_is_the_same_as_exit(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    assert _turn(flow, session, button="quick_exit").effects == (QuickExit(),)


def test_korean_is_the_default_and_english_is_chosen_by_hint(flow: CompiledFlow) -> None:
    _, said_ko = _begin(flow, language="")
    _, said_en = _begin(flow, language="en-US")
    assert said_ko[0] == flow.texts.get("report.welcome", "ko")
    assert said_en[0] == flow.texts.get("report.welcome", "en")
    assert said_ko[0] != said_en[0]


def test_an_ended_conversation_starts_again(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    session = _turn(flow, session, button="decline").session
    result = _turn(flow, session, text="hello again")
    assert result.messages[0].text == _say(flow, "report.welcome")
    assert not result.session.ended


def test_the_step_does_not_change_the_session_it_was_given(flow: CompiledFlow) -> None:
    session, _ = _begin(flow)
    before = session.to_json()
    _turn(flow, session, button="agree")
    assert session.to_json() == before


def test_one_machine_is_shared_by_every_conversation(flow: CompiledFlow) -> None:
    for _ in range(50):
        session, _ = _begin(flow)
        _turn(flow, session, button="agree")
    assert flow.machine.models == []


def _write_flow(directory: Path, body: str) -> None:
    (directory / "locales").mkdir(parents=True, exist_ok=True)
    (directory / "locales" / "ko.yaml").write_text("common: {exited: bye}\nsay: {hi: hi}\n")
    (directory / "report.flow.yaml").write_text(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "schema: 1\nflow: report\nstart: a\nsteps: {a: {say: say.hi, next: b}}\n",
            "unknown target",
        ),
        ("schema: 1\nflow: report\nstart: z\nsteps: {a: {say: say.hi, next: END}}\n", "start step"),
        ("schema: 2\nflow: report\nstart: a\nsteps: {a: {say: say.hi, next: END}}\n", "schema"),
        (
            "schema: 1\nflow: report\nstart: a\nsteps: {a: {sya: say.hi, next: END}}\n",
            "unknown keys",
        ),
        (
            "schema: 1\nflow: report\nstart: a\nsteps: {a: {ask: say.hi, slot: s, next: END}}\n",
            "slot",
        ),
        ("schema: 1\nflow: report\nstart: a\nsteps: {a: {action: rm_rf, next: END}}\n", "action"),
        ("schema: 1\nflow: report\nstart: a\nsteps: [1, 2]\n", "mapping"),
        ("schema: 1\nflow: report\nstart: a\nsteps: {1: {say: say.hi, next: END}}\n", "text keys"),
        ("schema: 1\nsteps: {a: [\n", "not valid YAML"),
    ],
)
def test_invalid_flows_are_refused_with_a_clear_error(
    tmp_path: Path, body: str, message: str
) -> None:
    _write_flow(tmp_path, body)
    with pytest.raises(FlowError, match=message):
        FlowRegistry.load(tmp_path)


def test_a_broken_reload_keeps_the_good_flows(tmp_path: Path) -> None:
    _write_flow(
        tmp_path, "schema: 1\nflow: report\nstart: a\nsteps: {a: {say: say.hi, next: END}}\n"
    )
    registry = FlowRegistry.load(tmp_path)
    good = registry.entry()
    (tmp_path / "report.flow.yaml").write_text(
        "schema: 1\nflow: report\nstart: nowhere\nsteps: {}\n"
    )
    with pytest.raises(FlowError):
        registry.reload(tmp_path)
    assert registry.entry() is good
