"""The channel interface: what every door declares and the one way outbound fits its limits.

A door (web chat, Telegram, KakaoTalk) turns platform input into a neutral `Inbound` and
renders `Outbound`s. The flows never change per channel; what differs is declared here as
`Capabilities` and applied by `fit`, so a text over a platform's limit is split, never cut.
A step with more buttons than a platform shows is a flow error for the linter to report.

What a counselor says in a live chat reaches the victim through the door's `Delivery`: a door
that pushes (Telegram) sends at once; one that cannot (web chat, KakaoTalk) holds the message
until the victim's page or next message asks (`bot.live.HeldLines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from backend.core.conversation import Button, Outbound, Pseudonym
from backend.core.live_chat import EventKind

MORE_BUTTON_ID = "more"


@dataclass(frozen=True)
class Capabilities:
    name: str
    can_delete_messages: bool  # can erase the chat on quick exit
    pushes: bool  # can speak without a pending request (a counselor's reply arrives at once)
    max_text_chars: int
    max_buttons: int
    max_button_label_chars: int
    max_button_id_bytes: int
    # How long after sending a message the platform still lets it be deleted; None: no limit
    # or no deleting at all (see `can_delete_messages`).
    delete_window_s: int | None = None
    # Whether split parts join back to exactly the text, the whitespace at a break kept at the
    # end of the earlier part (Telegram: sent verbatim), or that whitespace is dropped.
    verbatim_split: bool = False


class Channel(Protocol):
    """A door. Parsing input is platform-specific; rendering starts from `fit`."""

    capabilities: Capabilities


class Delivery(Protocol):
    """How the relay hands a victim what a counselor's side sent, through their door."""

    async def deliver(
        self,
        pseudonym: Pseudonym,
        case_id: str,
        messages: Sequence[Outbound],
        *,
        language: str,
        ref: str = "",
    ) -> EventKind:
        """DELIVERED (the platform took it), HELD (it waits for the victim to ask) or FAILED
        (the victim cannot be reached: blocked the bot, the chat record expired). Anything
        else raised is an unexpected failure the relay retries a few times."""
        ...


def split_text(text: str, limit: int, *, verbatim: bool = False) -> list[str]:
    """Split at the last paragraph, line or word break before `limit`; never drop a character.

    Only the whitespace at a break goes, unless `verbatim`, when it ends the earlier part and
    the parts join back to exactly `text`. No part is empty (platforms refuse empty messages),
    unless the text itself is.
    """
    parts: list[str] = []
    rest = text
    while len(rest) > limit:
        window = rest[:limit]
        cut = max(window.rfind("\n\n"), window.rfind("\n"), window.rfind(" "))
        if cut < limit // 2:
            cut = limit
        elif verbatim:
            cut += 1  # the break itself stays, at the end of the earlier part
        part = rest[:cut] if verbatim else rest[:cut].rstrip()
        if part:
            parts.append(part)
        rest = rest[cut:] if verbatim else rest[cut:].lstrip()
    if rest or not parts:
        parts.append(rest)
    return parts


def fit_label(label: str, limit: int) -> str:
    return label if len(label) <= limit else label[: max(1, limit - 1)] + "…"


def fit(messages: Sequence[Outbound], caps: Capabilities) -> list[Outbound]:
    """Messages reshaped to the channel's limits: long texts split, labels shortened.

    Buttons stay on the last part of a split text, where the victim reads the question. Ids that
    do not fit the platform are a flow error the linter reports; here they are kept as they are.
    """
    fitted: list[Outbound] = []
    for message in messages:
        parts = split_text(message.text, caps.max_text_chars, verbatim=caps.verbatim_split)
        buttons = tuple(
            Button(b.id, fit_label(b.label, caps.max_button_label_chars)) for b in message.buttons
        )
        fitted.extend(Outbound(part) for part in parts[:-1])
        fitted.append(Outbound(parts[-1], buttons))
    return fitted
