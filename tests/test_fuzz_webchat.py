"""Fuzzing the web chat's turns and polls over HTTP on the real app (see `tests/fuzzing.py`)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis

from tests.conftest import RunningHotline
from tests.fuzzing import (
    FUZZ_TIMEOUT_S,
    StoredState,
    assert_sane_answer,
    counted,
    fuzz_settings,
    json_values,
    payload,
    raw_bodies,
)
from tests.fuzzing import pair as pair  # noqa: PLC0414 - the embedded pair only

# A few conversations the fuzz keeps talking to, so their sessions move on, and a few tokens
# for polls only (a poll of a conversation waiting for a counselor is held for 20 s).
TOKENS = ["t" * 43, "u" * 43, "v_-" * 14 + "v", "0" * 43]
POLL_TOKENS = ["p" * 43, "q" * 43]
BUTTONS = [
    *("agree", "decline", "filming", "deepfake", "18_plus", "under_18", "send_now", "skip"),
    *("quick_exit", "read_replies", "check_replies", "nonsense"),
]
# Any character, lone surrogates and controls included: JSON can carry them all.
any_text = st.text(st.characters(codec=None), max_size=80) | st.sampled_from(
    ["/start", "/exit", "/human", "/receipt", "I want to die", "15살", "x" * 4001, "\x00", ""]
)
turn_fields: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"token": st.sampled_from(TOKENS)},
    optional={
        "text": any_text | json_values,
        "button": st.sampled_from(["agree", "quick_exit", "send_now", "a" * 65, "bad id"])
        | json_values,
        "language": st.sampled_from(["ko", "en", "zz", "en-US", "x" * 20]) | json_values,
        # A few valid turn ids (each is remembered for its retries), and anything else.
        "turn": st.sampled_from(["turn-id-000000001", "turn-id-000000002", "x" * 44, "?" * 20])
        | json_values,
    },
)
tokens = st.sampled_from(TOKENS) | st.text(max_size=50) | json_values
# Turns a page could send: these reach the runtime and the flows.
page_turns: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries(
    {"token": st.sampled_from(TOKENS), "language": st.sampled_from(["ko", "en", "ja"])},
    optional={
        "text": any_text,
        "button": st.sampled_from(BUTTONS),
    },
)
bodies: st.SearchStrategy[bytes] = st.one_of(
    page_turns.map(lambda d: json.dumps(d).encode()),
    page_turns.map(lambda d: json.dumps(d).encode()),
    turn_fields.map(lambda d: json.dumps(d).encode()),
    st.dictionaries(
        st.sampled_from(["token", "text", "button", "turn", "language", "x"]), tokens
    ).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_bodies,
)
poll_bodies: st.SearchStrategy[bytes] = st.one_of(
    st.fixed_dictionaries(
        {"token": st.sampled_from(POLL_TOKENS) | tokens},
        optional={"language": json_values, "text": json_values},
    ).map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_bodies,
)


@pytest.fixture
def stored(redis: Redis) -> StoredState:
    return StoredState(redis)


async def _send(hotline: RunningHotline, stored: StoredState, path: str, body: bytes) -> None:
    before = await stored.before()
    response = await hotline.client.post(
        path, data=payload(body), headers={"Content-Type": "application/json"}
    )
    answer = await response.read()
    # A turn still being worked on (its retry came too early) is a declared 503.
    assert_sane_answer(response.status, answer, allowed_503=path.endswith("/turn"))
    await stored.after(before, refused=400 <= response.status < 500)


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(2500)
@given(body=bodies)
async def test_web_chat_turns_survive_any_body(
    hotline: RunningHotline, stored: StoredState, body: bytes
) -> None:
    with counted("web chat"):
        await _send(hotline, stored, "/chat/api/turn", body)


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(800)
@given(body=poll_bodies)
async def test_web_chat_polls_survive_any_body(
    hotline: RunningHotline, stored: StoredState, body: bytes
) -> None:
    with counted("web chat poll"):
        await _send(hotline, stored, "/chat/api/poll", body)
