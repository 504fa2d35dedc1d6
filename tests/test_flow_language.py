"""The language's parts on small flows of their own: conditions, typed slots, retries, the
built-in way out."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.core import receipt_codes as receipts
from backend.core.conversation import Inbound, Pseudonym, QuickExit, Session
from backend.core.errors import FlowError
from backend.flows import engine
from backend.flows.engine import Bundle, Context
from backend.flows.expressions import Scope, compile_condition
from backend.flows.hours import ServiceHours
from backend.flows.registry import FlowRegistry

MINIMAL = Path(__file__).parent / "flows_minimal"
WHO = Pseudonym("q" * 64)


def _scope(**slots: object) -> Scope:
    return Scope(slots, frozenset({"minor"}), 2, "ko", {"open": False})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slots.a == 'x'", True),
        ("slots.a != 'x' or priority >= 2", True),
        ("'minor' in flags and not ctx.open", True),
        ("slots.n > 3", False),  # text against a number is false, not an error
        ("1 < slots.k <= 5", True),
        ("slots.a in ['y', 'x']", True),
        ("slots.missing == null", True),
        ("language == 'en'", False),
    ],
)
def test_conditions(text: str, expected: bool) -> None:
    assert bool(compile_condition(text).evaluate(_scope(a="x", n="text", k=5))) is expected


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "slots.a.__class__",
        "slots['a']",
        "(lambda: 1)()",
        "[x for x in flags]",
        "ctx.secret",
        "os.environ",
        "1 + 1",
        "slots.a == ",
        "x" * 400,
    ],
)
def test_anything_else_is_refused_at_load(text: str) -> None:
    with pytest.raises(FlowError):
        compile_condition(text)


def test_condition_reports_the_slots_it_reads() -> None:
    assert compile_condition("slots.a == slots.b or 'x' in flags").slots == {"a", "b"}


FLOW = """schema: 1
flow: report
start: count
slots:
  n: {type: number, min: 1, max: 10}
  link: {type: url}
steps:
  count:
    ask: t.ask
    slot: n
    retry: {max: 2, say: t.bye, exhausted: link}
    next: link
  link: {ask: t.ask, slot: link, next: bye}
  bye: {say: t.bye, next: END}
"""


@pytest.fixture
def bundle(tmp_path: Path) -> Bundle:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    (tmp_path / "report.flow.yaml").write_text(FLOW)
    return FlowRegistry.load(tmp_path).entry()


def _begin(bundle: Bundle) -> Session:
    session = bundle.new_session(Inbound(WHO, "web", language="en"), "c")
    return engine.start(bundle, session).session


def _say(bundle: Bundle, session: Session, text: str) -> tuple[Session, list[str]]:
    result = engine.step(bundle, session, Inbound(WHO, "web", text=text), Context())
    return result.session, [m.key for m in result.messages]


def test_a_number_slot_takes_numbers_in_range(bundle: Bundle) -> None:
    session = _begin(bundle)
    session, said = _say(bundle, session, "11")
    assert said == ["common.number", "t.ask"] and session.state == "count"
    session, said = _say(bundle, session, "7")
    assert session.slots["n"] == 7 and session.state == "link"


def test_retries_are_bounded_then_the_flow_moves_on(bundle: Bundle) -> None:
    session = _begin(bundle)
    session, said = _say(bundle, session, "many")
    assert said == ["common.number", "t.ask"] and session.retries == 1
    session, said = _say(bundle, session, "lots")
    assert said == ["common.number", "t.bye", "t.ask"], "the retry text on the last try"
    session, said = _say(bundle, session, "heaps")
    assert session.state == "link" and session.retries == 0
    assert "n" not in session.slots


def test_a_url_slot_takes_addresses_only(bundle: Bundle) -> None:
    session = _begin(bundle)
    session, _ = _say(bundle, session, "3")
    session, said = _say(bundle, session, "just words")
    assert said[0] == "common.url" and session.state == "link"
    session, said = _say(bundle, session, "t.me/someone/42")
    assert session.slots["link"] == "t.me/someone/42" and said == ["t.bye"]
    assert session.ended


def test_exit_works_even_when_a_flow_forgot_the_command(bundle: Bundle) -> None:
    assert "/stop" not in bundle.entry().spec.commands
    session = _begin(bundle)
    result = engine.step(bundle, session, Inbound(WHO, "web", text="/stop"), Context())
    assert result.effects == (QuickExit(),) and result.session.ended


def test_idle_time_out_takes_the_flows_idle_step(tmp_path: Path) -> None:
    shutil.copytree(MINIMAL, tmp_path, dirs_exist_ok=True)
    flow = tmp_path / "report.flow.yaml"
    flow.write_text(
        flow.read_text().replace("start: hello", "start: hello\nidle: {after_s: 60, next: hello}")
    )
    bundle = FlowRegistry.load(tmp_path).entry()
    session = bundle.new_session(Inbound(WHO, "web"), "c")
    session = engine.start(bundle, session, Context(1000)).session
    assert session.state == "ask"
    soon = engine.step(bundle, session, Inbound(WHO, "web", button="zzz"), Context(1030))
    assert [m.key for m in soon.messages] == ["common.stale_button", "t.ask"]
    late = engine.step(bundle, session, Inbound(WHO, "web", button="a"), Context(1100))
    assert [m.key for m in late.messages] == ["t.hello", "t.ask"], "welcomed again, not answered"
    assert "answer" not in late.session.slots


def test_service_hours_give_an_honest_after_hours(tmp_path: Path) -> None:
    path = tmp_path / "service.yaml"
    path.write_text('schema: 1\nalways_open: false\nweekly: {mon: "09:00-18:00"}\n')
    hours = ServiceHours.load(path)
    monday_10_kst = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)
    assert hours.is_open(monday_10_kst)
    assert not hours.is_open(monday_10_kst + timedelta(hours=9))
    assert not hours.is_open(monday_10_kst - timedelta(days=1))
    path.write_text('schema: 1\nweekly: {mon: "18:00-09:00"}\n')
    with pytest.raises(FlowError, match="HH:MM-HH:MM"):
        ServiceHours.load(path)


def test_the_receipt_example_shown_to_victims_is_shaped_like_a_real_code() -> None:
    # A victim copies the example's shape; one that `normalise` refuses teaches the wrong one.
    examples = {}
    for path in sorted((Path(engine.__file__).parents[2] / "flows" / "locales").glob("*.yaml")):
        found = re.findall(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4})+", path.read_text(encoding="utf-8"))
        examples[path.stem] = found
        for example in found:
            assert receipts.normalise(example) == example.replace("-", ""), path.name
    assert examples["ko"] and examples["en"], "the receipt question shows an example"
