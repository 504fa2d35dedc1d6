"""Inbound limits through the real doors: per sender per channel, per client address (the web
chat's and KakaoTalk's, from the trusted proxy's header), and new web chat conversations per
address. Over a limit a victim is told calmly, with the emergency numbers, and nothing of her
conversation changes; safety words and the way out are always answered. The address is kept
only as a keyed hash and never logged."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core import redis_keys
from backend.core.errors import SettingsError
from backend.core.settings import Settings
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.locales import texts_of
from tests.telegram_support import TOKEN, Victim, matches
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture
from tests.test_kakao import BOT_ID, SECRET, skill_request
from tests.test_kakao import post as kakao_post
from tests.test_kakao import texts as kakao_texts

EN = texts_of("en")
SLOW_DOWN = EN["safety.slow_down"]
ADDRESS = "203.0.113.77"
OTHER_ADDRESS = "198.51.100.4"
# Behind a proxy on 127.0.0.1 (the test client's address), which reports the client's.
PROXY = {"HOTLINE_TRUSTED_PROXIES": "127.0.0.1"}


def test_the_slow_down_message_names_the_emergency_numbers() -> None:
    for language in ("ko", "en", "ja", "zh", "vi"):
        text = texts_of(language)["safety.slow_down"]
        assert all(number in text for number in ("112", "119", "1366")), language


@pytest.mark.parametrize("value", ["fast", "0/minute", "20/", "-1/minute"])
def test_a_bad_rate_stops_the_start_naming_the_setting(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match=r"^HOTLINE_LIMIT_PER_SENDER: "):
        Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_LIMIT_PER_SENDER": value})


def test_off_turns_a_limit_off(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_LIMIT_PER_ADDRESS": "off"}
    )
    assert settings.inbound_limits.per_address == ""
    assert settings.inbound_limits.per_pseudonym == "20/minute;200/hour", "the default"


@pytest.fixture
async def limited(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[RunningHotline]:
    async with start_hotline(pair, tmp_path, {**PROXY, **request.param}) as running:
        yield running


async def web_turn(
    hotline: RunningHotline, token: str, address: str = ADDRESS, **body: str
) -> list[str]:
    response = await hotline.client.post(
        "/chat/api/turn",
        json={"token": token, "language": "en", **body},
        headers={"X-Forwarded-For": address},
    )
    assert response.status == 200, await response.text()
    return [m["text"] for m in (await response.json())["messages"]]


async def session_records(redis: Redis) -> dict[bytes, bytes]:
    keys = [k async for k in redis.scan_iter(match=redis_keys.SESSION_KEY_PREFIX + "*")]
    return {k: v for k in keys if isinstance(v := await redis.get(k), bytes)}


@pytest.mark.parametrize("limited", [{"HOTLINE_LIMIT_PER_SENDER": "3/minute"}], indirect=True)
async def test_a_web_chat_sender_over_its_limit_is_told_calmly_and_nothing_moves(
    limited: RunningHotline, redis: Redis
) -> None:
    token = "a" * 43
    assert (await web_turn(limited, token, text="/start"))[-1] == EN["report.consent"]
    await web_turn(limited, token, button="agree")
    assert await web_turn(limited, token, button="filming") == [EN["report.age"]]
    before = await session_records(redis)

    assert await web_turn(limited, token, button="18_plus") == [SLOW_DOWN]
    assert await web_turn(limited, token, text="hello") == [SLOW_DOWN]
    assert await session_records(redis) == before, "a refused turn writes no session"

    # Safety words get through whatever the count, and so does the way out.
    said = await web_turn(limited, token, text="I want to die")
    # Nobody is on shift: the guidance says so rather than promise a counselor (issue 18).
    assert said[0] == EN["safety.emergency_unattended"]
    assert await web_turn(limited, token, text="/exit") == [EN["safety.exit"]]
    # Another sender on the same address is not held back by this one's flood.
    assert (await web_turn(limited, "b" * 43, text="/start"))[-1] == EN["report.consent"]


@pytest.mark.parametrize("limited", [{"HOTLINE_LIMIT_PER_ADDRESS": "4/minute"}], indirect=True)
async def test_a_web_chat_address_over_its_limit_is_refused_and_kept_only_hashed(
    limited: RunningHotline, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for n in range(4):
        said = await web_turn(limited, f"{n}" * 43, text="/start")
        assert said[-1] == EN["report.consent"]
    assert await web_turn(limited, "5" * 43, text="/start") == [SLOW_DOWN]
    assert await web_turn(limited, "0" * 43, button="agree") == [SLOW_DOWN], "also old ones"
    # The limit is the address's: another address, as the proxy reports it, goes on.
    said = await web_turn(limited, "5" * 43, OTHER_ADDRESS, text="/start")
    assert said[-1] == EN["report.consent"]

    stored = [k async for k in redis.scan_iter()]
    values = [await redis.get(k) for k in stored if await redis.type(k) == b"string"]
    limit_keys = [k for k in stored if k.startswith(redis_keys.INBOUND_LIMITS_PREFIX.encode())]
    assert limit_keys, "the counts live in Redis, shared by every bot worker"
    for key in limit_keys:
        assert 0 < await redis.ttl(key) <= 2 * 60, "a counter expires with its window"
    for blob in [*stored, *(v for v in values if v is not None)]:
        assert ADDRESS.encode() not in blob and OTHER_ADDRESS.encode() not in blob
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert ADDRESS not in logged and OTHER_ADDRESS not in logged
    assert "inbound refused" in logged


@pytest.mark.parametrize(
    "limited", [{"HOTLINE_LIMIT_NEW_CONVERSATIONS_PER_ADDRESS": "2/minute"}], indirect=True
)
async def test_new_web_chat_conversations_per_address_are_limited(
    limited: RunningHotline, redis: Redis
) -> None:
    first, second, third = "f" * 43, "g" * 43, "h" * 43
    await web_turn(limited, first, text="/start")
    await web_turn(limited, second, text="/start")
    assert await web_turn(limited, third, text="/start") == [SLOW_DOWN]
    assert len(await session_records(redis)) == 2, "the refused conversation was never opened"
    # Conversations already open go on; a new one with safety words is answered.
    assert await web_turn(limited, first, button="agree") == [EN["report.category"]]
    said = await web_turn(limited, third, text="I want to die")
    assert said[0] == EN["safety.emergency_unattended"], "nobody is on shift"
    # Another address opens its own.
    said = await web_turn(limited, "i" * 43, OTHER_ADDRESS, text="/start")
    assert said[-1] == EN["report.consent"]


async def test_a_telegram_sender_over_its_limit_is_told_calmly(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, telegram: FakeTelegram
) -> None:
    env = {
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url,
        "HOTLINE_LIMIT_PER_SENDER": "2/minute",
    }
    async with start_hotline(pair, tmp_path, env):
        victim = Victim(telegram, "en")
        _welcome, consent = await victim.say("/start", replies=2)
        await victim.press(consent, "agree", replies=1)
        (refused,) = await victim.say("hello", replies=1)
        assert matches(refused.params["text"], "safety.slow_down")
        (emergency, *_) = await victim.say("I want to die", replies=1)
        assert matches(emergency.params["text"], "safety.emergency_unattended")
        other = Victim(telegram, "en", user_id=55555)
        welcome, _consent = await other.say("/start", replies=2)
        assert matches(welcome.params["text"], "safety.welcome")


@pytest.fixture
async def kakao_limited(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[RunningHotline]:
    env = {"HOTLINE_KAKAO_BOT_ID": BOT_ID, "HOTLINE_KAKAO_SECRET": SECRET, **request.param}
    async with start_hotline(pair, tmp_path, {**PROXY, **env}) as running:
        yield running


def kakao_said(answer: dict[str, Any]) -> str:
    return "\n\n".join(kakao_texts(answer))


def kakao_request(utterance: str, user: str) -> dict[str, Any]:
    body = skill_request(utterance)
    body["userRequest"]["user"]["id"] = user
    return body


@pytest.mark.parametrize("kakao_limited", [{"HOTLINE_LIMIT_PER_SENDER": "2/minute"}], indirect=True)
async def test_a_kakao_sender_over_its_limit_is_told_calmly(kakao_limited: RunningHotline) -> None:
    assert EN["report.consent"] in kakao_said(
        await kakao_post(kakao_limited, kakao_request("/start", "userA"))
    )
    await kakao_post(kakao_limited, kakao_request("hello", "userA"))
    said = kakao_texts(await kakao_post(kakao_limited, kakao_request("hello again", "userA")))
    assert said == [SLOW_DOWN]
    said = kakao_texts(await kakao_post(kakao_limited, kakao_request("I want to die", "userA")))
    assert EN["safety.emergency_unattended"] in said[0], "nobody is on shift"
    said = kakao_texts(await kakao_post(kakao_limited, kakao_request("/start", "userB")))
    assert EN["report.consent"] in "\n\n".join(said)


@pytest.mark.parametrize(
    "kakao_limited", [{"HOTLINE_LIMIT_PER_KAKAO_ADDRESS": "3/minute"}], indirect=True
)
async def test_kakao_requests_per_address_are_limited(kakao_limited: RunningHotline) -> None:
    async def say(user: str, address: str) -> str:
        response = await kakao_limited.client.post(
            "/kakao/skill",
            json=kakao_request("/start", user),
            headers={"X-Hotline-Kakao-Secret": SECRET, "X-Forwarded-For": address},
        )
        assert response.status == 200
        return kakao_said(await response.json())

    for n in range(3):
        assert EN["report.consent"] in await say(f"user{n}", ADDRESS)
    assert await say("user3", ADDRESS) == SLOW_DOWN
    assert EN["report.consent"] in await say("user4", OTHER_ADDRESS)
