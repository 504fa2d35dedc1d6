"""The neutral conversation types every channel speaks: no platform ids, no platform formats.

A channel adapter turns a platform update into an `Inbound` and renders `Outbound`s; the flow
step in between is pure and knows nothing of Telegram, Kakao or the web.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NewType

Pseudonym = NewType("Pseudonym", str)

MAX_TEXT_CHARS = 4000

# The victim's age as the statistics count it, and nothing finer: the age band a flow asked
# (`age_band` slots) or a minor found by triage ("15살") is "minor", an adult band "adult",
# anything else (skipped, "rather not say", never asked) "not_said". It travels in clear in the
# routing header, so the exact age and band stay sealed in the report (THREAT_MODEL.md).
AGE_MINOR = "minor"
AGE_ADULT = "adult"
AGE_NOT_SAID = "not_said"
AGE_GROUPS = (AGE_MINOR, AGE_ADULT, AGE_NOT_SAID)


@dataclass(frozen=True)
class Attachment:
    """Facts about a file a victim sent, never its bytes: the door hashes and drops them."""

    kind: str  # "photo", "document", "video", ...
    size_bytes: int
    sha256: str
    pdq: str | None = None  # perceptual hash (hex), for images the victim wants matched
    mime_type: str | None = None
    # The bytes sealed to the centre key (`Envelope.to_bytes()`), only for a screenshot the
    # victim agreed to have kept (a files slot with `keep: sealed`); unreadable on the bot.
    sealed: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Inbound:
    """One thing a victim did: a text, a button press, a command or files."""

    pseudonym: Pseudonym = field(repr=False)
    channel: str
    text: str | None = field(default=None, repr=False)
    button: str | None = None
    language: str | None = None
    attachments: tuple[Attachment, ...] = ()
    # The sender under the BLOCKING key (`Purpose.BLOCKING`): checked against blocks, and sealed
    # into reports so a counselor can block it; never joined with `pseudonym`.
    blocking: Pseudonym | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Button:
    id: str
    label: str


@dataclass(frozen=True)
class Outbound:
    text: str
    buttons: tuple[Button, ...] = ()
    # The locale key the text came from: flow tests compare keys, not wording.
    key: str = field(default="", compare=False, repr=False)


@dataclass
class Session:
    """One conversation as a small plain record; the compiled machine is shared by all of them.

    WARNING: holds what the victim answered (slots) and the reply address; it is only ever
    stored encrypted and with a time-to-live (see `bot.sessions`).
    """

    flow: str
    version: str
    state: str
    language: str
    channel: str
    conversation_id: str
    turn: int = 0
    # Answers by slot name: text, a number, or a list of file facts ("kind:sha256").
    slots: dict[str, Any] = field(default_factory=dict)
    reply_address: str | None = field(default=None, repr=False)
    ended: bool = False
    # Where to come back to after a called subflow ends: "flow/step/after|resume".
    stack: list[str] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)  # set by triage and age: "minor", ...
    priority: int = 0
    retries: int = 0  # invalid answers at the current step
    seen_s: int = 0  # unix time of the last turn, for idle time-outs
    # The live chat with a counselor (bot/live.py): the conversation's reply key (the X25519
    # private half, hex; the public half went to the centre in the sealed handoff request), the
    # case it asked a counselor for, and whether a counselor has joined (then the victim's texts
    # go to the counselor instead of the flow).
    reply_key: str | None = field(default=None, repr=False)
    handoff_case: str | None = None
    live: bool = False

    def to_json(self) -> bytes:
        # Every field is plain JSON already: `vars`, not `asdict`'s deep copy (a tenth of a turn).
        return json.dumps(vars(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Session:
        """Raises TypeError or ValueError on a record of another shape (the store starts afresh)."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a session is a JSON object")
        return cls(**data)


@dataclass(frozen=True)
class SubmitReport:
    """Seal the slots to the centre and put them on the reports stream."""

    idempotency_key: str
    case_id: str
    category: str
    priority: int
    language: str
    channel: str
    answers: dict[str, Any] = field(repr=False)
    # The case of the receipt a returning victim came back with (see `CaseRequest`).
    follows: str = ""
    # Screenshots sealed to the centre key at upload (base64 of `Envelope.to_bytes()`).
    sealed_files: tuple[str, ...] = field(default=(), repr=False)
    # One record per file given (backend/core/evidence_records.py), sealed with the report.
    evidence: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    # Coarse (`AGE_GROUPS`), in the routing header for the statistics; "" says nothing.
    age_group: str = ""


@dataclass(frozen=True)
class RequestHandoff:
    """Ask for a counselor now: the runtime seals the request onto the reports stream with the
    raised priority, so the console queue shows it.

    A conversation has one case at a time (issue 18: 13 `/human` in one session made 13
    cases): when it already has one (an open handoff, or the report it filed), `joins` names
    it and `case_id` is that case; the backend attaches the request to it, keeping its
    category, instead of storing a new case.
    """

    idempotency_key: str
    case_id: str
    reason: str
    category: str
    priority: int
    language: str
    channel: str
    answers: dict[str, Any] = field(repr=False)
    age_group: str = ""
    joins: str = ""


@dataclass(frozen=True)
class RaisePriority:
    """The conversation became more urgent (triage or a flagged step); later reports carry it."""

    priority: int
    reason: str


@dataclass(frozen=True)
class TriageAlert:
    """A triage rule matched the victim's words (every time, not only the first): the runtime
    raises the conversation's open cases to `priority` and flags a counselor's live panel.
    Names only the rule and its flag, never the words."""

    flag: str
    rule: str
    priority: int


@dataclass(frozen=True)
class ShowResources:
    """The step listed these services to the victim (ids only, for counting)."""

    resource_ids: tuple[str, ...]


@dataclass(frozen=True)
class IssueReceipt:
    """A receipt code was given for this case, so the victim can come back to it."""

    case_id: str
    code: str = field(repr=False)


@dataclass(frozen=True)
class CaseRequest:
    """A returning victim's request on the case of a receipt: read replies, add, erase."""

    idempotency_key: str
    kind: str  # "read_replies" | "add_info" | "erase"
    code: str = field(repr=False)
    language: str = "ko"
    channel: str = ""
    text: str = field(default="", repr=False)
    # The conversation's priority (triage may have raised it): the request carries it.
    priority: int = 0


@dataclass(frozen=True)
class RecordFeedback:
    """The answer to the closing feedback question; counted, not linked to any case."""

    rating: str


@dataclass(frozen=True)
class QuickExit:
    """End the conversation and erase what the platform lets us erase."""


@dataclass(frozen=True)
class DeleteInbound:
    """Erase the victim's message of this turn from the chat, where the platform allows."""


Effect = (
    SubmitReport
    | QuickExit
    | DeleteInbound
    | RequestHandoff
    | RaisePriority
    | TriageAlert
    | ShowResources
    | IssueReceipt
    | CaseRequest
    | RecordFeedback
)


@dataclass(frozen=True)
class StepResult:
    session: Session
    messages: tuple[Outbound, ...]
    effects: tuple[Effect, ...] = ()
    # (flow, from step, to step) of every transition taken, for flow-test coverage.
    trace: tuple[tuple[str, str, str], ...] = field(default=(), compare=False, repr=False)
