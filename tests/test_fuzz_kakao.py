"""Fuzzing the KakaoTalk skill endpoint over HTTP on the real app (see `tests/fuzzing.py`):
skill payloads of any shape, with the right secret and bot id and without."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.kakao import SECRET_HEADER
from tests.conftest import Pair, RunningHotline, start_hotline
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
from tests.test_kakao import BOT_ID, SECRET

# Nothing listens there: a callback POST fails at once, as an unreachable Kakao would.
CALLBACK = "http://127.0.0.1:9/callback"
USER_KEYS = ["kakaoUserA", "kakaoUserB", "kakaoUserC"]


@pytest.fixture
async def kakao(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> AsyncIterator[RunningHotline]:
    env = {"HOTLINE_KAKAO_BOT_ID": BOT_ID, "HOTLINE_KAKAO_SECRET": SECRET}
    async with start_hotline(pair, tmp_path, env) as running:
        yield running


@pytest.fixture
def stored(redis: Redis) -> StoredState:
    return StoredState(redis)


utterances = st.sampled_from(
    ["/start", "/exit", "/human", "I want to die", "동의해요", "x" * 1001, ""]
) | st.text(st.characters(codec=None), max_size=60)
buttons = st.sampled_from(["agree", "quick_exit", "deepfake", "check_replies", "a" * 65])


@st.composite
def skill_payloads(draw: st.DrawFn) -> dict[str, Any]:
    user_request: dict[str, Any] = {
        "utterance": draw(utterances | json_values),
        "user": {
            "id": draw(st.sampled_from(USER_KEYS) | st.text(max_size=80) | json_values),
            "type": "botUserKey",
        },
    }
    user_request |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "lang": st.sampled_from(["ko", "en", "x" * 20]) | json_values,
                "callbackUrl": st.sampled_from([CALLBACK, "ftp://x", "not a url"]) | json_values,
                "timezone": json_values,
            },
        )
    )
    body: dict[str, Any] = {
        "bot": {"id": draw(st.sampled_from([BOT_ID] * 6 + ["other-bot"]) | json_values)},
        "userRequest": draw(st.just(user_request) | json_values),
        "intent": {"id": "fallback"},
    }
    body |= draw(
        st.fixed_dictionaries(
            {},
            optional={
                "action": st.fixed_dictionaries(
                    {"clientExtra": st.fixed_dictionaries({}, optional={"button": buttons})}
                )
                | json_values,
                "contexts": json_values,
            },
        )
    )
    return body


bodies: st.SearchStrategy[bytes] = st.one_of(
    skill_payloads().map(lambda p: json.dumps(p).encode()),
    skill_payloads().map(lambda p: json.dumps(p).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_bodies,
)
secrets = st.sampled_from([SECRET] * 8 + ["", "wrong-kakao-secret-0000"])


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(2000)
@given(body=bodies, secret=secrets)
async def test_the_kakao_skill_survives_any_payload(
    kakao: RunningHotline, stored: StoredState, body: bytes, secret: str
) -> None:
    with counted("kakao"):
        before = await stored.before()
        response = await kakao.client.post(
            "/kakao/skill",
            data=payload(body),
            headers={"Content-Type": "application/json", SECRET_HEADER: secret},
        )
        assert_sane_answer(response.status, await response.read())
        await stored.after(before, refused=400 <= response.status < 500)
