"""Random inbound sequences against every shipped flow: the step never raises, always answers,
and always leaves a valid session."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.core.conversation import Attachment, Inbound, Pseudonym
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows import engine
from backend.flows.engine import Bundle, Context
from backend.flows.registry import FlowRegistry
from bot.runtime import RUNTIME_PLACEHOLDERS

BUNDLE: Bundle = FlowRegistry.load(SHIPPED_FLOWS_DIR).entry()
WHO = Pseudonym("p" * 64)


def _button_ids() -> list[str]:
    ids = {"quick_exit", "nonsense", ""}
    for flow in BUNDLE.flows.values():
        for step in flow.spec.steps.values():
            ids |= {b.id for b in step.buttons}
        for slot in flow.spec.slots.values():
            ids |= set(slot.choices)
    return sorted(ids)


TEXTS = [
    "/exit",
    "/stop",
    "/start",
    "/help",
    "/human",
    "/receipt",
    "/resources",
    "/unknown",
    "/",
    "15",
    "I'm 14",
    "죽고 싶어요",
    "내일까지 돈 보내래요",
    "https://t.me/x/1",
    "ABCD-EFGH-JKLM",
    "x" * 4001,
    "",
    "   ",
]

inbounds = st.one_of(
    st.builds(
        lambda text: Inbound(WHO, "web", text=text),
        st.one_of(st.sampled_from(TEXTS), st.text(max_size=60)),
    ),
    st.builds(lambda b: Inbound(WHO, "web", button=b), st.sampled_from(_button_ids())),
    st.builds(
        lambda n: Inbound(
            WHO, "web", attachments=tuple(Attachment("photo", 1, "a" * 64) for _ in range(n))
        ),
        st.integers(min_value=1, max_value=3),
    ),
    st.builds(
        lambda lang, text: Inbound(WHO, "web", text=text, language=lang),
        st.sampled_from(["en", "ko", "vi-VN", "xx", "ja"]),
        st.sampled_from(TEXTS),
    ),
)
# Every flow's start, and every step that waits for input, as a place to begin.
PLACES = sorted(
    {(name, flow.spec.start) for name, flow in BUNDLE.flows.items()}
    | {
        (name, step.name)
        for name, flow in BUNDLE.flows.items()
        for step in flow.spec.steps.values()
        if step.waits
    }
)
turns = st.tuples(inbounds, st.integers(min_value=0, max_value=5000), st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    place=st.sampled_from(PLACES),
    first=st.one_of(st.none(), st.sampled_from(TEXTS)),
    sequence=st.lists(turns, max_size=25),
)
def test_random_inbound_never_breaks_a_shipped_flow(
    place: tuple[str, str], first: str | None, sequence: list[tuple[Inbound, int, bool]]
) -> None:
    flow, state = place
    now = 1_700_000_000
    session = BUNDLE.new_session(Inbound(WHO, "web", language="en"), "conv-h")
    session = replace(session, flow=flow, state=state)
    if state == BUNDLE.flows[flow].spec.start:
        result = engine.start(BUNDLE, session, Context(now), Inbound(WHO, "web", text=first))
    else:
        result = engine.step(BUNDLE, session, Inbound(WHO, "web", text=first), Context(now))
    assert result.messages, "the start says something"
    assert engine.check_session(BUNDLE, result.session) == []
    for inbound, pause_s, open_now in sequence:
        now += pause_s
        result = engine.step(BUNDLE, result.session, inbound, Context(now, open_now))
        assert result.messages, f"silence after {inbound!r}"
        assert engine.check_session(BUNDLE, result.session) == []
        for message in result.messages:
            # Only the runtime's own placeholders (filled after its effects) may remain.
            leftover = message.text
            for name in RUNTIME_PLACEHOLDERS:
                leftover = leftover.replace("{" + name + "}", "")
            assert message.text and "{" not in leftover, message.key
