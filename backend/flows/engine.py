"""Compiled flows and the pure step function.

A flow version is compiled once into a `transitions` Machine shared by every conversation. A
conversation is a plain `Session` record; stepping it triggers the shared machine's event on a
throw-away carrier, never `add_model` (which the transitions FAQ warns does not scale).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace

from transitions import Machine

from backend.conversation import (
    MAX_TEXT_CHARS,
    Button,
    Effect,
    Inbound,
    Outbound,
    QuickExit,
    Session,
    StepResult,
    SubmitReport,
)
from backend.flows.spec import END, FlowSpec, StepSpec
from backend.flows.texts import Texts

# A chain of steps that need no input is bounded, so a broken flow cannot spin forever.
MAX_AUTO_STEPS = 50
CONTINUE = "continue"
ANSWER = "answer"
PRIORITY_BY_CATEGORY = {"sextortion": 2, "minor_images": 2, "grooming": 2}


def _button_trigger(button_id: str) -> str:
    return "button:" + button_id


class _Carrier:
    """The throw-away object the shared machine moves for one trigger."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


@dataclass(frozen=True)
class CompiledFlow:
    spec: FlowSpec
    version: str
    texts: Texts
    machine: Machine

    @classmethod
    def compile(cls, spec: FlowSpec, version: str, texts: Texts) -> CompiledFlow:
        machine = Machine(
            model=None,
            states=[*spec.steps, END],
            initial=spec.start,
            auto_transitions=False,
            ignore_invalid_triggers=True,
        )
        for step in spec.steps.values():
            for button in step.buttons:
                machine.add_transition(_button_trigger(button.id), step.name, button.next)
            if step.next is not None:
                machine.add_transition(ANSWER if step.ask else CONTINUE, step.name, step.next)
        return cls(spec, version, texts, machine)

    def fire(self, state: str, trigger: str) -> str | None:
        """The state after `trigger` from `state`, or None if the trigger is not valid there."""
        event = self.machine.events.get(trigger)
        if event is None:
            return None
        carrier = _Carrier(state)
        if not event.trigger(carrier):
            return None
        return carrier.state

    def new_session(self, inbound: Inbound, conversation_id: str) -> Session:
        return Session(
            flow=self.spec.name,
            version=self.version,
            state=self.spec.start,
            language=self.texts.language_for(inbound.language),
            channel=inbound.channel,
            conversation_id=conversation_id,
        )


def start(flow: CompiledFlow, session: Session) -> StepResult:
    """Enter the start step of a new session."""
    return _enter(flow, session, [], [])


def step(flow: CompiledFlow, session: Session, inbound: Inbound) -> StepResult:
    """One turn: (session, inbound) -> (session, messages, effects). Pure; never raises on input."""
    session = replace(session, turn=session.turn + 1, slots=dict(session.slots))
    if inbound.language:
        session.language = flow.texts.language_for(inbound.language)
    messages: list[Outbound] = []
    effects: list[Effect] = []
    text = (inbound.text or "").strip()
    command = flow.spec.commands.get(text.split()[0].lower()) if text.startswith("/") else None
    if command is not None:
        if command.action == "quick_exit":
            effects.append(QuickExit())
            messages.append(Outbound(flow.texts.get("common.exited", session.language)))
            session.state = END
            session.ended = True
            return StepResult(session, tuple(messages), tuple(effects))
        if command.restart:
            session.state = flow.spec.start
            session.slots = {}
            return _enter(flow, session, messages, effects)
    if inbound.button == "quick_exit":
        return step(flow, session, replace(inbound, button=None, text="/exit"))
    current = flow.spec.steps.get(session.state)
    if current is None:  # an ended conversation: begin again
        session.state = flow.spec.start
        session.slots = {}
        session.ended = False
        return _enter(flow, session, messages, effects)
    target = _accept(flow, current, session, inbound, text, messages=messages)
    if target is None:
        messages.extend(_prompt(flow, current, session))
        return StepResult(session, tuple(messages), tuple(effects))
    session.state = target
    return _enter(flow, session, messages, effects)


def _accept(
    flow: CompiledFlow,
    current: StepSpec,
    session: Session,
    inbound: Inbound,
    text: str,
    *,
    messages: list[Outbound],
) -> str | None:
    """Apply the victim's input to the waiting step; the next state, or None to ask again."""
    slot = flow.spec.slots.get(current.slot) if current.slot else None
    if inbound.button is not None:
        if current.buttons:
            target = flow.fire(current.name, _button_trigger(inbound.button))
            if target is not None:
                return target
        if slot is not None and slot.type == "choice" and inbound.button in slot.choices:
            session.slots[slot.name] = inbound.button
            return flow.fire(current.name, ANSWER)
        messages.append(Outbound(flow.texts.get("common.stale_button", session.language)))
        return None
    if slot is not None and slot.type == "text" and text:
        if len(text) > min(slot.max_length, MAX_TEXT_CHARS):
            messages.append(Outbound(flow.texts.get("common.too_long", session.language)))
            return None
        session.slots[slot.name] = text
        return flow.fire(current.name, ANSWER)
    messages.append(Outbound(flow.texts.get("common.use_buttons", session.language)))
    return None


def _prompt(flow: CompiledFlow, current: StepSpec, session: Session) -> list[Outbound]:
    lang = session.language
    key = current.ask or current.say
    buttons = [Button(b.id, flow.texts.get(b.label, lang)) for b in current.buttons]
    slot = flow.spec.slots.get(current.slot) if current.slot else None
    if slot is not None and slot.type == "choice":
        buttons += [Button(c, flow.texts.get(f"{slot.name}.{c}", lang)) for c in slot.choices]
    if key is None:
        return []
    return [Outbound(flow.texts.get(key, lang), tuple(buttons))]


def _enter(
    flow: CompiledFlow, session: Session, messages: list[Outbound], effects: list[Effect]
) -> StepResult:
    for _ in range(MAX_AUTO_STEPS):
        if session.state == END:
            session.ended = True
            break
        current = flow.spec.steps[session.state]
        messages.extend(_prompt(flow, current, session))
        if current.action == "submit_report":
            effects.append(_submit(session))
        elif current.action == "quick_exit":
            effects.append(QuickExit())
        if current.waits:
            break
        target = flow.fire(current.name, CONTINUE)
        if target is None:
            break
        session.state = target
    return StepResult(session, tuple(messages), tuple(effects))


def _submit(session: Session) -> SubmitReport:
    # Deterministic in the conversation and turn: a retried turn yields the same key, and the
    # backend stores it once.
    idempotency_key = f"{session.conversation_id}:{session.turn}"
    case_id = hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
    category = session.slots.get("category", "unsure")
    return SubmitReport(
        idempotency_key=idempotency_key,
        case_id=case_id,
        category=category,
        priority=PRIORITY_BY_CATEGORY.get(category, 0),
        language=session.language,
        channel=session.channel,
        answers=dict(session.slots),
    )
