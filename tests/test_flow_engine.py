"""The shipped flows, driven through the pure step function."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest

from backend.core.conversation import (
    Attachment,
    Inbound,
    IssueReceipt,
    Pseudonym,
    QuickExit,
    RequestHandoff,
    Session,
    StepResult,
    SubmitReport,
)
from backend.core.errors import FlowError
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows import engine
from backend.flows.engine import Bundle, Context
from backend.flows.registry import FlowRegistry

WHO = Pseudonym("p" * 64)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return FlowRegistry.load(SHIPPED_FLOWS_DIR).entry()


def _say(bundle: Bundle, key: str, language: str = "en") -> str:
    return bundle.texts.get(key, language)


def _begin(bundle: Bundle, language: str = "en") -> tuple[Session, list[str]]:
    session = bundle.new_session(Inbound(WHO, "web", language=language), "conv-1")
    result = engine.start(bundle, session)
    return result.session, [m.text for m in result.messages]


def _turn(
    bundle: Bundle,
    session: Session,
    *,
    text: str | None = None,
    button: str | None = None,
    files: int = 0,
) -> StepResult:
    attachments = tuple(Attachment("photo", 10, f"{i:064x}") for i in range(files))
    inbound = Inbound(WHO, "web", text=text, button=button, attachments=attachments)
    return engine.step(bundle, session, inbound, Context())


def _to_details(bundle: Bundle, category: str, age: str = "18_plus") -> Session:
    session, _ = _begin(bundle)
    for button in ("agree", category, age):
        session = _turn(bundle, session, button=button).session
    if category == "sextortion":
        assert session.state == "preserve"
        session = _turn(bundle, session, button="report_first").session
        session = _turn(bundle, session, button=age).session
    return session


def test_a_whole_report(bundle: Bundle) -> None:
    session, said = _begin(bundle)
    assert said == [_say(bundle, "safety.welcome"), _say(bundle, "report.consent")]
    result = _turn(bundle, session, button="agree")
    assert [m.text for m in result.messages] == [_say(bundle, "report.category")]
    assert [b.id for b in result.messages[0].buttons][:3] == ["filming", "distribution", "deepfake"]
    assert result.messages[0].buttons[2].label == _say(bundle, "category.deepfake")
    result = _turn(bundle, result.session, button="deepfake")
    assert result.messages[0].key == "report.age"
    result = _turn(bundle, result.session, button="18_plus")
    result = _turn(bundle, result.session, text="  He made pictures of me.  ")
    assert result.messages[0].key == "report.when"
    result = _turn(bundle, result.session, button="send_now")
    assert "received safely" in result.messages[0].text
    submit, receipt = result.effects
    assert isinstance(submit, SubmitReport)
    assert isinstance(receipt, IssueReceipt)
    assert submit.answers == {
        "category": "deepfake",
        "age": "18_plus",
        "details": "He made pictures of me.",
    }
    assert receipt.case_id == submit.case_id
    assert receipt.code in result.messages[0].text, "the victim is shown the receipt code"
    assert result.session.state == "ask" and result.session.flow == "feedback"


def test_sextortion_jumps_the_queue_and_gets_a_counselor(bundle: Bundle) -> None:
    session = _to_details(bundle, "sextortion")
    session = _turn(bundle, session, text="He wants money by Friday.").session
    result = _turn(bundle, session, button="send_now")
    submit = result.effects[0]
    handoff = result.effects[-1]
    assert isinstance(submit, SubmitReport) and submit.priority >= 2
    assert isinstance(handoff, RequestHandoff) and handoff.priority >= 2
    # Issue 18: the request joins the report just filed; one case, its category kept.
    assert handoff.case_id == submit.case_id and handoff.joins == submit.case_id
    assert handoff.category == submit.category


def test_a_retried_turn_gives_the_same_idempotency_key_and_receipt(bundle: Bundle) -> None:
    session = _to_details(bundle, "deepfake")
    session = _turn(bundle, session, text="details").session
    first = _turn(bundle, session, button="send_now").effects
    second = _turn(bundle, session, button="send_now").effects
    assert first == second
    assert isinstance(first[0], SubmitReport)
    assert first[0].idempotency_key.startswith("conv-1:")


def test_too_long_text_is_refused_and_nothing_is_stored(bundle: Bundle) -> None:
    session = _to_details(bundle, "unsure")
    result = _turn(bundle, session, text="x" * 4001)
    assert result.messages[0].key == "common.too_long"
    assert "details" not in result.session.slots
    assert all(not isinstance(e, SubmitReport) for e in result.effects)


@pytest.mark.parametrize("command", ["/exit", "/stop", "/EXIT now", "/exit@hotline_bot"])
def test_exit_from_any_step_ends_and_erases(bundle: Bundle, command: str) -> None:
    session, _ = _begin(bundle)
    session = _turn(bundle, session, button="agree").session
    result = _turn(bundle, session, text=command)
    assert result.effects == (QuickExit(),)
    assert result.session.ended
    assert [m.key for m in result.messages] == ["safety.exit"]


def test_quick_exit_button_is_the_same_as_exit(bundle: Bundle) -> None:
    session, _ = _begin(bundle)
    assert _turn(bundle, session, button="quick_exit").effects == (QuickExit(),)


@pytest.mark.parametrize(
    ("hint", "language"), [("", "ko"), ("en-US", "en"), ("vi", "vi"), ("ja-JP", "ja"), ("zh", "zh")]
)
def test_language_by_hint_with_korean_the_default(bundle: Bundle, hint: str, language: str) -> None:
    _, said = _begin(bundle, language=hint)
    assert said[0] == bundle.texts.get("safety.welcome", language)


def test_a_partial_locale_falls_back_to_english_not_korean(bundle: Bundle) -> None:
    _, said = _begin(bundle, language="vi")
    assert said[0] != _say(bundle, "safety.welcome", "en"), "the welcome is in Vietnamese"
    assert said[1] == _say(bundle, "report.consent", "en")


def test_minors_are_never_asked_for_images_and_files_are_refused(bundle: Bundle) -> None:
    session = _to_details(bundle, "filming", age="14_17")
    assert "minor" in session.flags
    assert session.state == "choose"
    session = _turn(bundle, session, button="continue").session
    for button in (None, "today", "telegram", "skip"):
        if button is None:
            session = _turn(bundle, session, text="It happened at school.").session
        else:
            session = _turn(bundle, session, button=button).session
    result = _turn(bundle, session, button="yes")
    assert result.session.state == "refer_center", "no evidence step for a minor"
    said = [m.key for m in result.messages]
    assert "report.evidence" not in said and "report.evidence_guide" not in said
    assert "report.evidence_choice" not in said


@pytest.mark.parametrize(
    ("state", "button", "files_step"),
    [
        ("evidence_choice", "fingerprints", "report.evidence"),
        ("evidence_choice", "match", "report.match_images"),
        ("screenshots_consent", "agree", "report.screenshots"),
    ],
)
def test_the_engine_skips_a_files_question_for_a_minor_whatever_the_flow_says(
    bundle: Bundle, state: str, button: str, files_step: str
) -> None:
    session = _to_details(bundle, "filming")
    session.flags.append("minor")
    session.state = state  # as if a flow led a minor here
    session.flow = "report"
    assert engine.files_keep(bundle, session) is None
    result = _turn(bundle, session, button=button)
    assert result.session.state == "refer_center"
    assert all(m.key != files_step for m in result.messages)


def test_files_are_hashed_facts_and_capped(bundle: Bundle) -> None:
    session = _to_details(bundle, "filming")
    for button in (None, "today", "telegram", "skip", "no", "fingerprints"):
        if button is None:
            session = _turn(bundle, session, text="details").session
        else:
            session = _turn(bundle, session, button=button).session
    assert session.state == "evidence"
    result = _turn(bundle, session, files=12)
    kept = result.session.slots["evidence"]
    assert len(kept) == 10
    assert kept[0] == "photo:" + "0" * 64
    assert result.session.state == "evidence"


def test_an_ended_conversation_starts_again(bundle: Bundle) -> None:
    session, _ = _begin(bundle)
    session = _turn(bundle, session, button="decline").session
    result = _turn(bundle, session, text="hello again")
    assert result.messages[0].key == "safety.welcome"
    assert not result.session.ended


def test_the_step_does_not_change_the_session_it_was_given(bundle: Bundle) -> None:
    session = _to_details(bundle, "deepfake")
    before = session.to_json()
    _turn(bundle, session, text="I'm 15 and want to die")
    assert session.to_json() == before


def test_one_machine_per_flow_is_shared_by_every_conversation(bundle: Bundle) -> None:
    for _ in range(20):
        session = _to_details(bundle, "deepfake")
        _turn(bundle, session, text="details")
    assert all(flow.machine.models == [] for flow in bundle.flows.values())


def test_help_resumes_the_open_question(bundle: Bundle) -> None:
    session, _ = _begin(bundle)
    session = _turn(bundle, session, button="agree").session
    session = _turn(bundle, session, text="/help").session
    assert session.stack == ["report/category/resume"]
    result = _turn(bundle, session, button="continue")
    assert [m.key for m in result.messages] == ["report.category"]
    assert result.session.state == "category" and result.session.stack == []


def test_resources_are_verified_and_fit_a_minor(bundle: Bundle) -> None:
    minor = bundle.directory.select("grooming", minor=True, language="ko")
    adult = bundle.directory.select("grooming", minor=False, language="ko")
    assert {"school_117", "youth_1388"} <= {r.id for r in minor}
    assert "school_117" not in {r.id for r in adult}
    assert all(r.verified for r in minor + adult)
    assert "migrant_1366" not in {r.id for r in bundle.directory.select("all", False, "vi")}


MINIMAL = Path(__file__).parent / "flows_minimal"


def test_a_broken_reload_keeps_the_good_flows(tmp_path: Path) -> None:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    registry = FlowRegistry.load(tmp_path)
    good = registry.entry()
    (tmp_path / "report.flow.yaml").write_text(
        "schema: 1\nflow: report\nstart: nowhere\nsteps: {a: {say: t.hello, next: END}}\n"
    )
    with pytest.raises(FlowError, match="start step"):
        registry.reload(tmp_path)
    assert registry.entry() is good
    assert not registry.refresh(), "a broken edit is not swapped in by a refresh either"
    assert registry.entry() is good


def _to_evidence_choice(bundle: Bundle) -> Session:
    session = _to_details(bundle, "harassment")
    session = _turn(bundle, session, text="Threats every night.").session
    for button in ("this_week", "kakaotalk", "skip", "no"):
        session = _turn(bundle, session, button=button).session
    assert session.state == "evidence_choice"
    assert engine.files_keep(bundle, session) is None, "no file is taken before the choice"
    return session


def test_a_files_slot_keeps_only_what_its_kind_says(bundle: Bundle) -> None:
    """`keep: match` keeps the PDQ besides the SHA-256; `keep: sealed` carries the sealed bytes
    to the report, hidden from the answers; a plain files slot keeps the SHA-256 alone, even
    when a door computed more."""
    sealed_blob = b"sealed-to-the-centre"
    picture = Attachment("photo", 10, "a" * 64, pdq="b" * 64, sealed=sealed_blob)
    reached: dict[str, object] = {}
    for choice, slot in (("fingerprints", "evidence"), ("match", "match_images")):
        session = _to_evidence_choice(bundle)
        session = _turn(bundle, session, button=choice).session
        inbound = Inbound(WHO, "web", attachments=(picture,))
        session = engine.step(bundle, session, inbound, Context()).session
        reached[slot] = session.slots[slot]
        assert engine.SEALED_FILES_SLOT not in session.slots
    assert reached == {
        "evidence": ["photo:" + "a" * 64],
        "match_images": [f"photo:{'a' * 64}:pdq={'b' * 64}"],
    }

    session = _to_evidence_choice(bundle)
    for button in ("screenshots", "agree"):
        session = _turn(bundle, session, button=button).session
    assert engine.files_keep(bundle, session) == "sealed"
    inbound = Inbound(WHO, "web", attachments=(picture,))
    session = engine.step(bundle, session, inbound, Context()).session
    assert session.slots["screenshots"] == ["photo:" + "a" * 64]
    for button in ("done", "no", "no"):
        result = _turn(bundle, session, button=button)
        session = result.session
    (report,) = [e for e in result.effects if isinstance(e, SubmitReport)]
    assert report.sealed_files == (base64.b64encode(sealed_blob).decode(),)
    assert engine.SEALED_FILES_SLOT not in report.answers
