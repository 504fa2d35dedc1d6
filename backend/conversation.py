"""The neutral conversation types every channel speaks: no platform ids, no platform formats.

A channel adapter turns a platform update into an `Inbound` and renders `Outbound`s; the flow
step in between is pure and knows nothing of Telegram, Kakao or the web.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import NewType

Pseudonym = NewType("Pseudonym", str)

MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class Attachment:
    """Facts about a file a victim sent, never its bytes: the door hashes and drops them."""

    kind: str  # "photo", "document", "video", ...
    size_bytes: int
    sha256: str
    pdq: str | None = None  # perceptual hash (hex), for images the victim wants matched
    mime_type: str | None = None


@dataclass(frozen=True)
class Inbound:
    """One thing a victim did: a text, a button press, a command or files."""

    pseudonym: Pseudonym = field(repr=False)
    channel: str
    text: str | None = field(default=None, repr=False)
    button: str | None = None
    language: str | None = None
    attachments: tuple[Attachment, ...] = ()


@dataclass(frozen=True)
class Button:
    id: str
    label: str


@dataclass(frozen=True)
class Outbound:
    text: str
    buttons: tuple[Button, ...] = ()


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
    slots: dict[str, str] = field(default_factory=dict)
    reply_address: str | None = field(default=None, repr=False)
    ended: bool = False

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Session:
        return cls(**json.loads(raw))


@dataclass(frozen=True)
class SubmitReport:
    """Seal the slots to the centre and put them on the reports stream."""

    idempotency_key: str
    case_id: str
    category: str
    priority: int
    language: str
    channel: str
    answers: dict[str, str] = field(repr=False)


@dataclass(frozen=True)
class QuickExit:
    """End the conversation and erase what the platform lets us erase."""


@dataclass(frozen=True)
class DeleteInbound:
    """Erase the victim's message of this turn from the chat, where the platform allows."""


Effect = SubmitReport | QuickExit | DeleteInbound


@dataclass(frozen=True)
class StepResult:
    session: Session
    messages: tuple[Outbound, ...]
    effects: tuple[Effect, ...] = ()
