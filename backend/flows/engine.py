"""Compiled flows and the pure step function.

Each flow of a bundle is compiled once into a `transitions` Machine shared by every
conversation. A conversation is a plain `Session` record; stepping it triggers the shared
machine's event on a throw-away carrier, never `add_model` (which the transitions FAQ warns
does not scale). Branch conditions are the machine's transition conditions, tried in order.

`step` is pure: (session, inbound, context) -> (session, messages, effects). It copies the
session, never raises on anything a victim can send, and knows no channel. Effects that need
I/O (sealing, queueing, receipts) are typed values the runtime carries out.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from transitions import Machine

from backend.core import evidence_records, receipt_codes
from backend.core.conversation import (
    AGE_ADULT,
    AGE_MINOR,
    AGE_NOT_SAID,
    MAX_TEXT_CHARS,
    Attachment,
    Button,
    CaseRequest,
    DeleteInbound,
    Effect,
    Inbound,
    IssueReceipt,
    Outbound,
    QuickExit,
    RaisePriority,
    RecordFeedback,
    RequestHandoff,
    Session,
    ShowResources,
    StepResult,
    SubmitReport,
    TriageAlert,
)
from backend.flows.expressions import Scope
from backend.flows.hours import ServiceHours
from backend.flows.resources import Directory
from backend.flows.spec import (
    ADULT_AGE_BAND,
    END,
    MINOR_AGE_BANDS,
    CommandSpec,
    FlowSpec,
    SlotSpec,
    StepSpec,
)
from backend.flows.texts import Texts
from backend.flows.triage import Triage

# A chain of steps that need no input is bounded, so a broken flow cannot spin forever.
MAX_AUTO_STEPS = 50
MAX_STACK = 8
MAX_URL_CHARS = 2000
CONTINUE = "continue"
ANSWER = "answer"
EXHAUSTED = "exhausted"
IDLE = "idle"
# Screenshots sealed to the centre key, kept in the (encrypted) session until the report.
SEALED_FILES_SLOT = "_sealed_files"
# One evidence record per file (backend/core/evidence_records.py), hidden from the answers;
# the report carries them sealed.
EVIDENCE_SLOT = "_evidence"
# The conversation's case (the report it filed) and its receipt code, hidden from the answers.
CASE_SLOT = "_case"
RECEIPT_SLOT = "_receipt"
STAY = "\x00stay"  # accepted input that keeps the conversation on the same step (files)
MINOR = "minor"
HANDOFF = "handoff"
PRIORITY_BY_CATEGORY = {"sextortion": 2, "minor_images": 2, "grooming": 2}
QUICK_EXIT_BUTTON = "quick_exit"
BUILT_IN_EXITS = frozenset({"/exit", "/stop"})
_URL = re.compile(r"^(?:https?://)?[\w.-]+\.[a-z]{2,}(?:[/?#]\S*)?$", re.IGNORECASE)


def _button_trigger(button_id: str) -> str:
    return "button:" + button_id


class _Carrier:
    """The throw-away object the shared machine moves for one trigger."""

    __slots__ = ("state",)

    def __init__(self, state: str) -> None:
        self.state = state


@dataclass(frozen=True)
class Context:
    """What the step may know of the world, given by the runtime: the clock and the centre."""

    now_s: int = 0  # 0: no clock (idle time-outs off)
    open: bool = True  # counselors answer now
    files: bool = True  # the victim's channel can carry files (`channels.FILE_CHANNELS`)
    # Whether the receipt code this turn types (at a `receipt` slot) is one the centre issued;
    # None when no code is typed or it was not looked up.
    receipt_known: bool | None = None


@dataclass(frozen=True)
class CompiledFlow:
    spec: FlowSpec
    machine: Machine

    @classmethod
    def compile(cls, spec: FlowSpec) -> CompiledFlow:
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
            trigger = ANSWER if step.ask else CONTINUE
            for branch in step.next:
                condition = branch.condition
                if condition is None:
                    machine.add_transition(trigger, step.name, branch.target)
                else:
                    machine.add_transition(
                        trigger, step.name, branch.target, conditions=[condition.evaluate]
                    )
            if step.retry.exhausted is not None:
                machine.add_transition(EXHAUSTED, step.name, step.retry.exhausted)
        if spec.idle is not None:
            machine.add_transition(IDLE, [*spec.steps], spec.idle.next)
        return cls(spec, machine)

    def fire(self, state: str, trigger: str, scope: Scope) -> str | None:
        """The state after `trigger` from `state`, or None if the trigger is not valid there."""
        event = self.machine.events.get(trigger)
        if event is None:
            return None
        carrier = _Carrier(state)
        if not event.trigger(carrier, scope):
            return None
        return carrier.state


@dataclass(frozen=True)
class Bundle:
    """Every flow of one load of the flows directory, with what they share; one version."""

    version: str
    flows: Mapping[str, CompiledFlow]
    texts: Texts
    entry_name: str
    triage: Triage = field(default_factory=Triage)
    directory: Directory = field(default_factory=Directory)
    hours: ServiceHours = field(default_factory=ServiceHours)

    def entry(self) -> CompiledFlow:
        return self.flows[self.entry_name]

    def new_session(self, inbound: Inbound, conversation_id: str) -> Session:
        return Session(
            flow=self.entry_name,
            version=self.version,
            state=self.entry().spec.start,
            language=self.texts.language_for(inbound.language),
            channel=inbound.channel,
            conversation_id=conversation_id,
        )


def start(
    bundle: Bundle, session: Session, ctx: Context = Context(), inbound: Inbound | None = None
) -> StepResult:
    """Enter the start of a new session; a first message is still read by triage."""
    run = _Run(bundle, _copy(session), ctx)
    run.session.seen_s = ctx.now_s
    text = (inbound.text or "").strip() if inbound else ""
    # A first message can be a command (`/receipt` from a returning victim, `/exit`).
    if text.startswith("/") and run.command(text):
        return run.result()
    if text:
        run.triage(text)
    run.enter()
    return run.result()


def step(
    bundle: Bundle, session: Session, inbound: Inbound, ctx: Context = Context()
) -> StepResult:
    """One turn: (session, inbound) -> (session, messages, effects). Pure; never raises on input."""
    run = _Run(bundle, _copy(session), ctx)
    s = run.session
    s.turn += 1
    if inbound.language:
        s.language = bundle.texts.language_for(inbound.language)
    text = (inbound.text or "").strip()
    if inbound.button == QUICK_EXIT_BUTTON:
        text, inbound = "/exit", replace(inbound, button=None, text="/exit")
    idle = run.flow.spec.idle
    idle_for = ctx.now_s - s.seen_s if ctx.now_s and s.seen_s else 0
    s.seen_s = ctx.now_s or s.seen_s
    if text.startswith("/") and run.command(text):
        return run.result()
    # Read before anything else: words typed after the end or after a long silence are
    # words too (issue 12: a text that began the flow again was never triaged).
    if text:
        run.triage(text)
    if s.ended or s.state not in run.flow.spec.steps:  # an ended conversation: begin again
        run.restart()
        return run.result()
    if idle is not None and idle_for > idle.after_s:
        run.jump(IDLE)
        return run.result()
    run.answer(inbound, text)
    return run.result()


def triage(bundle: Bundle, session: Session, text: str, ctx: Context = Context()) -> StepResult:
    """Triage alone, for words the flow does not take (a victim waiting for a counselor, or in
    a live chat): the guidance, the raised priority and an alert per matched rule. Never asks
    for another counselor while one is asked for already. Pure, like `step`."""
    run = _Run(bundle, _copy(session), ctx)
    run.session.seen_s = ctx.now_s or run.session.seen_s
    run.triage(text.strip())
    return run.result()


def _copy(session: Session) -> Session:
    return replace(
        session, slots=dict(session.slots), stack=list(session.stack), flags=list(session.flags)
    )


class _Run:
    """One step's working state; everything it changes is its own copy of the session."""

    def __init__(self, bundle: Bundle, session: Session, ctx: Context) -> None:
        self.bundle = bundle
        self.session = session
        self.ctx = ctx
        self.messages: list[Outbound] = []
        self.effects: list[Effect] = []
        self.trace: list[tuple[str, str, str]] = []
        self.flow = bundle.flows.get(session.flow) or bundle.entry()

    def result(self) -> StepResult:
        return StepResult(
            self.session, tuple(self.messages), tuple(self.effects), tuple(self.trace)
        )

    # -- reading ---------------------------------------------------------------------------

    def scope(self) -> Scope:
        s = self.session
        return Scope(
            s.slots,
            frozenset(s.flags),
            s.priority,
            s.language,
            {
                "open": self.ctx.open,
                "files": self.ctx.files,
                "receipt_known": self.ctx.receipt_known,
            },
        )

    def say(self, key: str, buttons: tuple[Button, ...] = ()) -> None:
        values = {"receipt": str(self.session.slots.get(RECEIPT_SLOT, ""))}
        text = self.bundle.texts.render(key, self.session.language, values)
        self.messages.append(Outbound(text, buttons, key))

    def label(self, key: str) -> str:
        # The channel's own short wording where the flows give one (KakaoTalk's 14 characters).
        return self.bundle.texts.label(key, self.session.language, self.session.channel)

    # -- moving ----------------------------------------------------------------------------

    def fire(self, trigger: str) -> str | None:
        state = self.session.state
        target = self.flow.fire(state, trigger, self.scope())
        if target is not None:
            self.trace.append((self.flow.spec.name, state, target))
        return target

    def move(self, target: str) -> None:
        if target != self.session.state:
            self.session.retries = 0
        self.session.state = target
        self.enter()

    def jump(self, trigger: str) -> None:
        target = self.fire(trigger)
        if target is None:
            self.prompt(self.flow.spec.steps[self.session.state])
            return
        self.move(target)

    def switch(self, flow_name: str, state: str) -> None:
        self.flow = self.bundle.flows[flow_name]
        self.session.flow = flow_name
        self.session.state = state
        self.session.retries = 0

    def restart(self) -> None:
        s = self.session
        # The conversation's code and its case outlive a new beginning: a later handoff joins
        # that case rather than open another (issue 18).
        keep = {k: s.slots[k] for k in (RECEIPT_SLOT, CASE_SLOT) if k in s.slots}
        s.slots, s.stack, s.ended, s.retries = keep, [], False, 0
        self.switch(self.bundle.entry_name, self.bundle.entry().spec.start)
        self.enter()

    def end(self) -> None:
        self.session.state = END
        self.session.stack = []
        self.session.ended = True

    def enter(self) -> None:  # noqa: PLR0912 - one branch per step kind
        """Run steps that need no input until one waits or the conversation ends."""
        for _ in range(MAX_AUTO_STEPS):
            s = self.session
            if s.state == END:
                if not s.stack and self.flow.spec.name != self.bundle.entry_name:
                    # A subflow begun with nothing to return to (`/help` after the end) goes
                    # on with the entry flow rather than end in silence.
                    self.switch(self.bundle.entry_name, self.bundle.entry().spec.start)
                    continue
                if not s.stack:
                    self.end()
                    return
                flow_name, state, mode = s.stack.pop().split("/")
                if flow_name not in self.bundle.flows:
                    self.end()
                    return
                self.switch(flow_name, state)
                if mode == "after":
                    s.state = self.fire(CONTINUE) or END
                continue
            current = self.flow.spec.steps[s.state]
            if current.priority:
                self.raise_priority(current.priority, f"step:{current.name}")
            if current.call is not None:
                if current.call not in self.bundle.flows or len(s.stack) >= MAX_STACK:
                    s.state = self.fire(CONTINUE) or END
                    continue
                s.stack.append(f"{self.flow.spec.name}/{current.name}/after")
                self.switch(current.call, self.bundle.flows[current.call].spec.start)
                continue
            slot = self.slot_of(current)
            if slot is not None and slot.type == "files" and MINOR in s.flags:
                # Minors are never asked for images, whatever a flow says.
                s.state = self.fire(ANSWER) or END
                continue
            self.prompt(current)
            if current.action is not None:
                self.act(current)
                if s.ended:
                    return
            if current.waits:
                return
            target = self.fire(CONTINUE)
            if target is None:
                self.end()
                return
            s.state, s.retries = target, 0

    def command(self, text: str) -> bool:
        """Run a global command (`/exit`, `/start`, `/help`, ...); False if `text` is none."""
        word = text.split(maxsplit=1)[0].lower().split("@")[0]
        command = self.flow.spec.commands.get(word) or self.bundle.entry().spec.commands.get(word)
        if command is None and word in BUILT_IN_EXITS:
            # The way out never depends on a flow file: a victim in danger must always have it.
            command = CommandSpec(word, action="quick_exit")
        if command is None:
            return False
        if command.action == "quick_exit":
            self.quick_exit()
        elif command.restart:
            self.restart()
        elif command.call is not None and command.call in self.bundle.flows:
            s = self.session
            if s.ended or s.state not in self.flow.spec.steps:
                s.stack = []
            elif len(s.stack) < MAX_STACK:
                s.stack.append(f"{self.flow.spec.name}/{s.state}/resume")
            s.ended = False
            self.switch(command.call, self.bundle.flows[command.call].spec.start)
            self.enter()
        elif command.action is not None:
            self.act(StepSpec(name=word, action=command.action))
        return True

    # -- input -----------------------------------------------------------------------------

    def slot_of(self, step: StepSpec) -> SlotSpec | None:
        return self.flow.spec.slots.get(step.slot) if step.slot else None

    def answer(self, inbound: Inbound, text: str) -> None:
        current = self.flow.spec.steps[self.session.state]
        target = self.accept(current, inbound, text)
        if current.delete_inbound and (text or inbound.attachments):
            self.effects.append(DeleteInbound())
        if target == STAY:
            return
        if target is not None:
            self.move(target)
            return
        s = self.session
        s.retries += 1
        if s.retries > current.retry.max:
            if current.retry.exhausted is not None:
                self.move(self.fire(EXHAUSTED) or END)
                return
            self.say(current.retry.say or "common.retry_help")
        elif current.retry.say is not None and s.retries == current.retry.max:
            self.say(current.retry.say)
        self.prompt(current)

    def accept(self, current: StepSpec, inbound: Inbound, text: str) -> str | None:  # noqa: PLR0911, PLR0912 - one return per answer kind
        """Apply the victim's input to the waiting step; the next state, STAY, or None."""
        s = self.session
        slot = self.slot_of(current)
        if inbound.button is not None:
            if any(b.id == inbound.button for b in current.buttons):
                target = self.fire(_button_trigger(inbound.button))
                if target is not None:
                    return target
            if (
                slot is not None
                and slot.type in ("choice", "age_band")
                and inbound.button in slot.choices
            ):
                return self.store(slot, inbound.button)
            self.say("common.stale_button")
            return None
        if inbound.attachments:
            if slot is None or slot.type != "files":
                self.say("common.no_files")
                return None
            if MINOR in s.flags:
                self.say("safety.no_images_minor")
                return None
            self.keep_files(slot, inbound.attachments)
            self.say("common.file_received")
            return STAY
        if slot is None:
            self.say("common.use_buttons")
            return None
        if not text:
            self.say("common.use_buttons" if slot.choices else "common.empty")
            return None
        if len(text) > min(slot.max_length, MAX_TEXT_CHARS):
            self.say("common.too_long")
            return None
        if slot.type in ("text", "receipt"):
            return self.store(slot, text)
        number = _whole(text) if slot.type in ("number", "age_band") else None
        if slot.type == "age_band" and number is not None:
            return self.store(slot, _band(number))
        if slot.type == "number":
            if number is not None and slot.minimum <= number <= slot.maximum:
                return self.store(slot, number)
            self.say("common.number")
            return None
        if slot.type == "url":
            if len(text) <= MAX_URL_CHARS and _URL.match(text):
                return self.store(slot, text)
            self.say("common.url")
            return None
        if slot.type in ("choice", "age_band"):
            folded = text.casefold()
            for choice in slot.choices:
                if folded in (choice, self.label(_choice_key(slot, choice)).casefold()):
                    return self.store(slot, choice)
        if slot.type == "files":
            self.say("common.files_or_done")
            return None
        self.say("common.use_buttons")
        return None

    def keep_files(self, slot: SlotSpec, attachments: tuple[Attachment, ...]) -> None:
        """The slot's facts, the sealed screenshots and one evidence record per file."""
        s = self.session
        kept = list(s.slots.get(slot.name, []))
        records = list(s.slots.get(EVIDENCE_SLOT, []))
        for attachment in attachments[: max(0, slot.max_files - len(kept))]:
            fact = f"{attachment.kind[:16]}:{attachment.sha256[:64]}"
            if slot.keep == "match" and attachment.pdq:
                fact += f":pdq={attachment.pdq[:64]}"
            kept.append(fact)
            sealed_index = None
            if slot.keep == "sealed" and attachment.sealed:
                # Hidden from the answers; the report carries it sealed as it came.
                sealed = list(s.slots.get(SEALED_FILES_SLOT, []))
                sealed_index = len(sealed)
                sealed.append(base64.b64encode(attachment.sealed).decode())
                s.slots[SEALED_FILES_SLOT] = sealed
            records.append(
                evidence_records.record_for(
                    attachment, slot.keep, s.channel, self.ctx.now_s, sealed_index
                )
            )
        s.slots[slot.name] = kept
        s.slots[EVIDENCE_SLOT] = records

    def store(self, slot: SlotSpec, value: Any) -> str | None:
        self.session.slots[slot.name] = value
        if slot.type == "age_band" and value in MINOR_AGE_BANDS:
            self.flag(MINOR, 2, "age")
        return self.fire(ANSWER)

    # -- safety ----------------------------------------------------------------------------

    def flag(self, name: str, priority: int, reason: str) -> bool:
        if name in self.session.flags:
            return False
        self.session.flags.append(name)
        self.raise_priority(priority, reason)
        return True

    def raise_priority(self, level: int, reason: str) -> None:
        if level > self.session.priority:
            self.session.priority = level
            self.effects.append(RaisePriority(level, reason))

    def triage(self, text: str) -> None:
        for rule in self.bundle.triage.scan(text):
            # Every match, also a repeated one: a counselor in a live chat must see it each time.
            self.effects.append(TriageAlert(rule.flag, rule.id, rule.priority))
            if not self.flag(rule.flag, rule.priority, rule.id):
                continue
            if rule.say is not None:
                self.say(rule.say)
            if rule.handoff and self.session.handoff_case is None:
                self.effects.append(self.handoff(rule.id))

    # -- output and actions ----------------------------------------------------------------

    def prompt(self, current: StepSpec) -> None:
        key = current.ask or current.say
        if key is None:
            return
        buttons: list[Button] = []
        slot = self.slot_of(current)
        if slot is not None and slot.type in ("choice", "age_band"):
            buttons += [Button(c, self.label(_choice_key(slot, c))) for c in slot.choices]
        buttons += [Button(b.id, self.label(b.label)) for b in current.buttons]
        self.say(key, tuple(buttons))

    def act(self, current: StepSpec) -> None:
        s, args, action = self.session, current.args, current.action
        if action == "submit_report":
            self.effects.append(self.submit())
        elif action == "request_handoff":
            self.effects.append(self.handoff(str(args.get("reason", current.name))))
        elif action == "quick_exit":
            self.quick_exit()
        elif action == "show_resources":
            need = str(args.get("need") or s.slots.get("category") or "all")
            found = self.bundle.directory.select(need, MINOR in s.flags, s.language)
            lines = [r.line_for(s.language) for r in found]
            text = "\n".join(lines) or self.label("resources.none")
            self.messages.append(Outbound(text, (), "resources.list"))
            self.effects.append(ShowResources(tuple(r.id for r in found)))
        elif action == "issue_receipt":
            case_id = str(s.slots.get(CASE_SLOT) or _digest(s.conversation_id, "case"))
            code = receipt_code(s.conversation_id)
            s.slots[RECEIPT_SLOT] = code
            self.effects.append(IssueReceipt(case_id, code))
        elif action == "case_request":
            self.effects.append(
                CaseRequest(
                    idempotency_key=f"{s.conversation_id}:{s.turn}:request",
                    kind=str(args.get("kind", "add_info")),
                    code=str(s.slots.get("code", "")),
                    language=s.language,
                    channel=s.channel,
                    text=str(s.slots.get("addition", "")),
                    priority=s.priority,
                )
            )
        elif action == "record_feedback":
            rating = s.slots.get(str(args.get("slot", "feedback")))
            if isinstance(rating, str):
                self.effects.append(RecordFeedback(rating))
        elif action == "raise_priority":
            level = args.get("level", 1)
            self.raise_priority(level if isinstance(level, int) else 1, str(args.get("reason")))

    def quick_exit(self) -> None:
        self.effects.append(QuickExit())
        self.messages.clear()
        self.say("safety.exit")
        self.end()

    def answers(self) -> dict[str, Any]:
        s = self.session
        found: dict[str, Any] = {k: v for k, v in s.slots.items() if not k.startswith("_")}
        if s.flags:
            found["flags"] = list(s.flags)
        return found

    def submit(self) -> SubmitReport:
        s = self.session
        # Deterministic in the conversation and turn: a retried turn yields the same key, and
        # the backend stores it once.
        idempotency_key = f"{s.conversation_id}:{s.turn}"
        case_id = _digest(idempotency_key, "")
        s.slots[CASE_SLOT] = case_id
        category = str(s.slots.get("category", "unsure"))
        priority = max(s.priority, PRIORITY_BY_CATEGORY.get(category, 0))
        return SubmitReport(
            idempotency_key=idempotency_key,
            case_id=case_id,
            category=category,
            priority=priority,
            language=s.language,
            channel=s.channel,
            answers=self.answers(),
            sealed_files=tuple(s.slots.get(SEALED_FILES_SLOT, [])),
            evidence=tuple(s.slots.get(EVIDENCE_SLOT, [])),
            age_group=self.age_group(),
        )

    def age_group(self) -> str:
        """The coarse age group for the routing header (`conversation.AGE_GROUPS`): a minor by
        flag (an age band under 18, or triage reading "15살"), else an adult band, else not
        said."""
        s = self.session
        if MINOR in s.flags:
            return AGE_MINOR
        bands = {
            s.slots.get(name)
            for flow in self.bundle.flows.values()
            for name, slot in flow.spec.slots.items()
            if slot.type == "age_band"
        }
        return AGE_ADULT if ADULT_AGE_BAND in bands else AGE_NOT_SAID

    def handoff(self, reason: str) -> RequestHandoff:
        """Ask for a counselor. The conversation's open case (its handoff already asked for, or
        the report it filed) is joined, not doubled (issue 18: every `/human` made a case and,
        with nobody on shift, a receipt)."""
        s = self.session
        if HANDOFF not in s.flags:  # flows ask `'handoff' not in flags` to ask only once
            s.flags.append(HANDOFF)
        idempotency_key = f"{s.conversation_id}:{s.turn}:handoff"
        category = str(s.slots.get("category", "unsure"))
        joins = s.handoff_case or str(s.slots.get(CASE_SLOT) or "")
        case_id = joins or _digest(idempotency_key, "")
        s.slots[CASE_SLOT] = case_id
        return RequestHandoff(
            idempotency_key=idempotency_key,
            case_id=case_id,
            joins=joins,
            reason=reason,
            category=category,
            priority=max(1, s.priority, PRIORITY_BY_CATEGORY.get(category, 0)),
            language=s.language,
            channel=s.channel,
            answers=self.answers(),
            age_group=self.age_group(),
        )


def _choice_key(slot: SlotSpec, choice: str) -> str:
    return f"age_band.{choice}" if slot.type == "age_band" else f"{slot.name}.{choice}"


def _whole(text: str) -> int | None:
    digits = text.strip().rstrip("살세").strip()
    if digits.isdecimal() and len(digits) <= 9:
        return int(digits)
    return None


def _band(age: int) -> str:
    if age < 14:
        return "under_14"
    if age < 18:
        return "14_17"
    return "18_plus"


def _digest(value: str, purpose: str) -> str:
    return hashlib.sha256(f"{purpose}:{value}".encode() if purpose else value.encode()).hexdigest()[
        :32
    ]


def receipt_code(conversation_id: str) -> str:
    """The case code (80 bits, `backend.receipts` format): derived from the random conversation
    id, so a retried turn gives the same code, and the runtime can give the same one when it
    issues a receipt itself (a handoff while nobody is on shift)."""
    return receipt_codes.code_from(hashlib.sha256(f"receipt:{conversation_id}".encode()).digest())


def accepts_files(bundle: Bundle, session: Session) -> bool:
    """Whether the conversation now waits on a files step (never for a minor): a door fetches
    a file only then, so nothing is downloaded that the flow would refuse."""
    return files_keep(bundle, session) is not None


def waits_for_receipt(bundle: Bundle, session: Session) -> bool:
    """Whether the conversation waits on a `receipt` slot: the runtime then looks up the code
    the victim types before the step runs, for `ctx.receipt_known`."""
    flow = bundle.flows.get(session.flow)
    step = flow.spec.steps.get(session.state) if flow is not None else None
    if flow is None or step is None or step.slot is None:
        return False
    slot = flow.spec.slots.get(step.slot)
    return slot is not None and slot.type == "receipt"


def takes_text(bundle: Bundle, session: Session) -> bool:
    """Whether the step the conversation waits on reads typed words (any slot but files'): a
    victim waiting for a counselor at a step of buttons only has her words kept for them
    instead (the runtime's relay), rather than be told to use the buttons."""
    flow = bundle.flows.get(session.flow)
    step = flow.spec.steps.get(session.state) if flow is not None else None
    if flow is None or step is None or step.slot is None:
        return False
    slot = flow.spec.slots.get(step.slot)
    return slot is not None and slot.type != "files"


def files_keep(bundle: Bundle, session: Session) -> str | None:
    """What the files step the conversation waits on keeps of a file (`spec.FILES_KEEP`), or
    None when it waits on none (always for a minor): the door hashes, matches or seals by it."""
    flow = bundle.flows.get(session.flow)
    if flow is None or MINOR in session.flags:
        return None
    step = flow.spec.steps.get(session.state)
    if step is None or step.slot is None:
        return None
    slot = flow.spec.slots.get(step.slot)
    return slot.keep if slot is not None and slot.type == "files" else None


def check_session(bundle: Bundle, session: Session) -> list[str]:
    """What is wrong with a session record against its bundle (empty when valid)."""
    problems = []
    flow = bundle.flows.get(session.flow)
    if flow is None:
        return [f"unknown flow {session.flow!r}"]
    if session.state != END and session.state not in flow.spec.steps:
        problems.append(f"unknown state {session.state!r}")
    if session.ended != (session.state == END):
        problems.append("ended and END disagree")
    if len(session.stack) > MAX_STACK:
        problems.append("stack too deep")
    for entry in session.stack:
        name, state, mode = [*entry.split("/"), "", "", ""][:3]
        if name not in bundle.flows or state not in bundle.flows[name].spec.steps:
            problems.append(f"bad stack entry {entry!r}")
        if mode not in ("after", "resume"):
            problems.append(f"bad stack mode {entry!r}")
    declared = {n for f in bundle.flows.values() for n in f.spec.slots}
    for name in session.slots:
        if not name.startswith("_") and name not in declared:
            problems.append(f"undeclared slot {name!r}")
    if not 0 <= session.priority <= 3:
        problems.append("priority out of range")
    if session.language not in bundle.texts.locales:
        problems.append("unknown language")
    return problems
