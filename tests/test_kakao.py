"""The KakaoTalk skill endpoint over HTTP, with requests in Kakao i Open Builder's format."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console.app_keys import cases_key
from backend.core import redis_keys as streams
from backend.core.conversation import Button, Outbound
from bot.kakao import SECRET_HEADER, render
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.locales import texts_of

BOT_ID = "5f00b1a2c3d4e5f6a7b8c9d0"
SECRET = "kakao-skill-secret-0123"  # noqa: S105 - the test skill's secret
USER_KEY = "canaryKakaoUserKey0123456789"
EN = texts_of("en")


def skill_request(
    utterance: str = "",
    *,
    button: str | None = None,
    callback_url: str | None = None,
    bot_id: str = BOT_ID,
) -> dict[str, Any]:
    user_request: dict[str, Any] = {
        "timezone": "Asia/Seoul",
        "block": {"id": "fallback-block", "name": "폴백 블록"},
        "utterance": utterance,
        "lang": "en",
        "user": {"id": USER_KEY, "type": "botUserKey", "properties": {}},
    }
    if callback_url is not None:
        user_request["callbackUrl"] = callback_url
    return {
        "intent": {"id": "fallback-intent", "name": "폴백 블록"},
        "userRequest": user_request,
        "bot": {"id": bot_id, "name": "hotline"},
        "action": {
            "id": "skill-action",
            "name": "hotline",
            "params": {},
            "detailParams": {},
            "clientExtra": {"button": button} if button else {},
        },
        "contexts": [],
    }


@pytest.fixture
async def kakao(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, request: pytest.FixtureRequest
) -> AsyncIterator[RunningHotline]:
    extra = {"HOTLINE_KAKAO_BOT_ID": BOT_ID, "HOTLINE_KAKAO_SECRET": SECRET}
    extra |= getattr(request, "param", {})
    async with start_hotline(pair, tmp_path, extra) as running:
        yield running


async def post(hotline: RunningHotline, body: dict[str, Any], secret: str = SECRET) -> Any:
    response = await hotline.client.post("/kakao/skill", json=body, headers={SECRET_HEADER: secret})
    assert response.status == 200, await response.text()
    return await response.json()


def texts(answer: dict[str, Any]) -> list[str]:
    return [o["simpleText"]["text"] for o in answer["template"]["outputs"] if "simpleText" in o]


def quick(answer: dict[str, Any]) -> list[str]:
    return [q["extra"]["button"] for q in answer["template"].get("quickReplies", [])]


async def test_a_whole_report_through_kakao(kakao: RunningHotline, redis: Redis) -> None:
    first = await post(kakao, skill_request("안녕하세요"))
    assert first["version"] == "2.0"
    assert EN["safety.welcome"] in texts(first)[0]
    assert quick(first) == ["agree", "decline"]
    label = first["template"]["quickReplies"][0]
    assert label["action"] == "message" and label["messageText"] == label["label"]
    category = await post(kakao, skill_request(label["label"], button="agree"))
    assert texts(category) == [EN["report.category"]]
    assert len(quick(category)) == 10
    assert all(len(q["label"]) <= 14 for q in category["template"]["quickReplies"])
    age = await post(kakao, skill_request("Deepfake", button="deepfake"))
    assert texts(age)[0] == EN["report.age"]
    details = await post(kakao, skill_request("18 or older", button="18_plus"))
    assert texts(details)[0] == EN["report.details"]
    when = await post(kakao, skill_request("Someone made a fake video of me"))
    assert "send_now" in quick(when)
    done = await post(kakao, skill_request("Send now", button="send_now"))
    assert "received safely" in texts(done)[0]
    cases = kakao.client.app[cases_key]
    for _ in range(250):  # intake stores the report and removes it from the stream
        if await cases.count() == 1:
            break
        await asyncio.sleep(0.02)
    assert await cases.count() == 1
    async for key in redis.scan_iter():
        assert USER_KEY.encode() not in key
        assert USER_KEY.encode() not in (await redis.dump(key) or b"")


async def test_wrong_secret_or_bot_is_refused_and_changes_nothing(
    kakao: RunningHotline, redis: Redis
) -> None:
    wrong = await kakao.client.post(
        "/kakao/skill", json=skill_request("hi"), headers={SECRET_HEADER: "guess"}
    )
    assert wrong.status == 401
    missing = await kakao.client.post("/kakao/skill", json=skill_request("hi"))
    assert missing.status == 401
    other_bot = await kakao.client.post(
        "/kakao/skill", json=skill_request("hi", bot_id="other"), headers={SECRET_HEADER: SECRET}
    )
    assert other_bot.status == 403
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "JSON"),
        (b"[]", "object"),
        (json.dumps({"bot": {"id": BOT_ID}}).encode(), "userRequest"),
        (
            json.dumps(skill_request("hi") | {"userRequest": {"user": {"id": ""}}}).encode(),
            "user.id",
        ),
    ],
)
async def test_malformed_bodies_get_a_clear_error(
    kakao: RunningHotline, redis: Redis, body: bytes, error: str
) -> None:
    response = await kakao.client.post(
        "/kakao/skill",
        data=body,
        headers={SECRET_HEADER: SECRET, "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert error in (await response.json())["error"]
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []


async def test_a_duplicate_request_is_answered_once(kakao: RunningHotline) -> None:
    await post(kakao, skill_request("hello"))
    press = skill_request("I agree", button="agree")
    first = await post(kakao, press)
    duplicate = await post(kakao, press)
    assert duplicate == first, "not 'that question has passed': the step ran once"
    assert texts(first) == [EN["report.category"]]


@contextlib.asynccontextmanager
async def callback_server() -> AsyncIterator[tuple[str, asyncio.Queue[dict[str, Any]]]]:
    """A stand-in for Kakao's callback endpoint on 127.0.0.1: its URL and what it received."""
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def callback(request: web.Request) -> web.Response:
        await received.put(await request.json())
        return web.json_response({"taskId": "t-1", "status": "SUCCESS", "message": "OK"})

    app = web.Application()
    app.router.add_post("/callback", callback)
    async with TestServer(app) as server:
        yield str(server.make_url("/callback")), received


SLOW_STEPS = {"HOTLINE_KAKAO_SYNC_BUDGET_MS": "0"}


@pytest.mark.parametrize(
    "kakao", [SLOW_STEPS | {"HOTLINE_KAKAO_CALLBACK_HOSTS": "127.0.0.1"}], indirect=True
)
async def test_a_slow_step_answers_through_the_callback(kakao: RunningHotline) -> None:
    async with callback_server() as (url, received):
        first = await post(kakao, skill_request("hello", callback_url=url))
        assert first["useCallback"] is True
        assert first["data"]["text"] == EN["common.one_moment"]
        answer = await asyncio.wait_for(received.get(), 10)
    assert EN["safety.welcome"] in texts(answer)[0]
    assert quick(answer) == ["agree", "decline"]
    assert received.empty(), "the callback is POSTed once"


@pytest.mark.parametrize("kakao", [SLOW_STEPS], indirect=True)
async def test_a_callback_url_off_kakaos_hosts_is_never_fetched(kakao: RunningHotline) -> None:
    """Issue 18: with the skill secret, anyone could make the server POST to any address."""
    async with callback_server() as (url, received):
        answer = await post(kakao, skill_request("hello", callback_url=url))
        assert "useCallback" not in answer, "answered within the request instead"
        assert EN["safety.welcome"] in texts(answer)[0]
        disguised = url.replace("127.0.0.1", "bot-api.kakao.com@127.0.0.1")
        answer = await post(kakao, skill_request("agree", button="agree", callback_url=disguised))
        assert "useCallback" not in answer
        assert texts(answer) == [EN["report.category"]]
        await asyncio.sleep(0.5)  # a callback, had one been made, would be here by now
        assert received.empty()


@pytest.mark.parametrize("kakao", [{"HOTLINE_KAKAO_OPERATOR": "true"}], indirect=True)
async def test_the_operator_button_when_kakao_handoff_is_configured(
    kakao: RunningHotline,
) -> None:
    answer = await post(kakao, skill_request("hello"))
    cards = [o["textCard"] for o in answer["template"]["outputs"] if "textCard" in o]
    assert cards[0]["buttons"] == [{"label": "상담원 연결", "action": "operator"}]
    assert len(answer["template"]["outputs"]) <= 3


def test_long_texts_are_split_at_1000_characters_without_losing_any() -> None:
    words = " ".join(f"word{i:04d}" for i in range(280))  # about 2,500 characters
    answer = render([Outbound(words, (Button("a", "A very long button label"),))], operator=False)
    outputs = texts(answer)
    assert len(outputs) == 3
    assert all(len(text) <= 1000 for text in outputs)
    assert " ".join(outputs).split() == words.split()
    assert answer["template"]["quickReplies"][0]["label"] == "A very long b…"


def test_at_most_ten_quick_replies() -> None:
    buttons = tuple(Button(f"b{i}", f"B{i}") for i in range(12))
    assert (
        len(render([Outbound("pick", buttons)], operator=False)["template"]["quickReplies"]) == 10
    )


def test_each_offer_of_buttons_is_marked_apart() -> None:
    """Two questions both offering "no" must not make two identical request bodies, or the
    second press would be taken for a duplicate of the first."""
    no = (Button("no", "No"),)
    first = render([Outbound("Refer to the centre?", no)], operator=False)
    second = render([Outbound("Refer to the police?", no)], operator=False)
    (a,) = first["template"]["quickReplies"]
    (b,) = second["template"]["quickReplies"]
    assert a["extra"]["button"] == b["extra"]["button"] == "no"
    assert a["extra"]["offer"] != b["extra"]["offer"]


async def test_quick_reply_labels_are_kakaos_short_ones_never_cut(kakao: RunningHotline) -> None:
    """Issue 18: labels were cut at Kakao's 14 characters ("Illegal filmi…", "Deepfake or s…");
    the flows now give KakaoTalk short labels of its own."""
    await post(kakao, skill_request("hello"))
    answer = await post(kakao, skill_request("Agree", button="agree"))
    labels = {r["label"] for r in answer["template"]["quickReplies"]}
    assert {"Secret filming", "Deepfake", "Someone else"} <= labels
    assert all(len(label) <= 14 and "…" not in label for label in labels), labels
    # The label is what the victim appears to say: the short wording, and it still counts.
    (filming,) = [r for r in answer["template"]["quickReplies"] if r["label"] == "Secret filming"]
    assert filming["messageText"] == "Secret filming"
    press = skill_request(filming["messageText"], button=filming["extra"]["button"])
    assert texts(await post(kakao, press)) == [EN["report.age"]]
