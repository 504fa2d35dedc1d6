"""Fitting outbound messages to a channel's limits: split, never cut."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backend.core.conversation import Button, Outbound
from bot.channel import Capabilities, fit, split_text

SMALL = Capabilities("test", False, False, 20, 3, 5, 64)


@given(st.text(min_size=0, max_size=300), st.integers(min_value=2, max_value=50))
def test_split_never_loses_a_character_and_respects_the_limit(text: str, limit: int) -> None:
    parts = split_text(text, limit)
    assert all(len(part) <= limit for part in parts)
    assert "".join("".join(parts).split()) == "".join(text.split())


def test_split_prefers_word_breaks_and_hard_splits_a_long_word() -> None:
    assert split_text("aaaa bbbb cccc", 10) == ["aaaa bbbb", "cccc"]
    assert split_text("x" * 25, 10) == ["x" * 10, "x" * 10, "x" * 5]


def test_buttons_stay_on_the_last_part_with_short_labels() -> None:
    fitted = fit([Outbound("one two three four five six", (Button("ok", "Continue"),))], SMALL)
    assert [m.text for m in fitted] == ["one two three four", "five six"]
    assert fitted[0].buttons == ()
    assert fitted[-1].buttons == (Button("ok", "Cont…"),)
