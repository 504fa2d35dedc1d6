"""Telegram on the channel interface: what it declares, and `fit` within its limits."""

from __future__ import annotations

from backend.core.conversation import Button, Outbound
from bot.channel import fit
from bot.telegram.door import CAPABILITIES
from bot.telegram.outbox import MAX_MESSAGE_CHARS


def test_telegram_declares_its_platform_limits() -> None:
    assert CAPABILITIES.can_delete_messages and CAPABILITIES.delete_window_s == 48 * 3600
    assert CAPABILITIES.pushes
    assert CAPABILITIES.max_text_chars == MAX_MESSAGE_CHARS == 4096
    assert CAPABILITIES.max_button_id_bytes == 64


def test_a_long_text_splits_at_a_word_break_verbatim_with_buttons_on_the_last_part() -> None:
    text = "word " * 1000 + "end"
    label = "a label far longer than a phone shows on one row of an inline keyboard, surely"
    fitted = fit([Outbound(text, (Button("ok", label),))], CAPABILITIES)
    assert len(fitted) == 2
    assert all(len(m.text) <= CAPABILITIES.max_text_chars for m in fitted)
    assert fitted[0].text.endswith("word "), "cut after a word, never inside one"
    assert "".join(m.text for m in fitted) == text, "the parts join back to the exact text"
    assert fitted[0].buttons == ()
    (button,) = fitted[-1].buttons
    assert button.id == "ok" and len(button.label) == CAPABILITIES.max_button_label_chars
