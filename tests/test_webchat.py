"""The victims' web chat door: bad input gets a clear error and changes nothing."""

from __future__ import annotations

import io
import re

import pytest
from redis.asyncio import Redis

from backend.core import receipt_codes as receipts
from backend.core import redis_keys as streams
from tests.conftest import RunningHotline
from tests.locales import texts_of

TOKEN = "w" * 43
EN = texts_of("en")


async def test_page_loads_nothing_from_other_hosts(hotline: RunningHotline) -> None:
    response = await hotline.client.get("/chat")
    page = await response.text()
    assert response.status == 200
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    for url in re.findall(r'(?:src|href)="([^"]+)"', page):
        assert url.startswith("/chat/static/"), url
        assert (await hotline.client.get(url)).status == 200
    assert "<script>" not in page, "no inline script"


async def test_the_tab_icon_is_our_own_plain_note(hotline: RunningHotline) -> None:
    page = await (await hotline.client.get("/chat")).text()
    assert '<link rel="icon" href="/chat/static/icon.svg"' in page
    assert "<title>메모</title>" in page, "a neutral title"
    icon = await hotline.client.get("/chat/static/icon.svg")
    assert icon.status == 200
    assert icon.content_type == "image/svg+xml", "served as an image the CSP's img-src allows"
    assert "default-src 'none'" in icon.headers["Content-Security-Policy"]
    svg = await icon.text()
    assert svg.startswith("<svg") and "href" not in svg, "draws itself, links nothing"


async def _turn(hotline: RunningHotline, token: str, **body: str) -> list[dict[str, object]]:
    response = await hotline.client.post("/chat/api/turn", json={"token": token, **body})
    assert response.status == 200
    messages: list[dict[str, object]] = (await response.json())["messages"]
    return messages


async def test_the_receipt_comes_as_data_on_the_message_that_shows_it(
    hotline: RunningHotline,
) -> None:
    turns = [
        await _turn(hotline, TOKEN, text="/start", language="en"),
        await _turn(hotline, TOKEN, button="agree"),
        await _turn(hotline, TOKEN, button="filming"),
        await _turn(hotline, TOKEN, button="18_plus"),
        await _turn(hotline, TOKEN, text="Someone filmed me."),
    ]
    assert not any("receipt" in m for messages in turns for m in messages)
    received, feedback = await _turn(hotline, TOKEN, button="send_now")
    code = received["receipt"]
    assert isinstance(code, str)
    assert receipts.normalise(code), "the documented format"
    assert code in str(received["text"])
    assert str(received["text"]).startswith(EN["report.received"].split("{")[0])
    assert "receipt" not in feedback, "only the message that shows the code carries it"
    assert "receipt" not in (await _turn(hotline, TOKEN, button="skip"))[0]

    # The code the page offers to copy is the one the centre knows: typed back from another
    # tab, the request on it is passed on.
    other = "r" * 43
    await _turn(hotline, other, text="/receipt", language="en")
    await _turn(hotline, other, text=code)
    said = (await _turn(hotline, other, button="read_replies"))[0]
    assert str(said["text"]).startswith(EN["receipt.status_sent"])


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("not json", "body must be JSON"),
        ("[1, 2]", "body must be a JSON object"),
        ('{"text": "hi"}', "token"),
        ('{"token": "short", "text": "hi"}', "token"),
        (f'{{"token": "{TOKEN}", "text": 5}}', "text"),
        (f'{{"token": "{TOKEN}", "text": "{"x" * 4001}"}}', "text"),
        (f'{{"token": "{TOKEN}", "button": "<script>"}}', "button"),
        (f'{{"token": "{TOKEN}", "language": "../../etc"}}', "language"),
    ],
)
async def test_malformed_turns_are_refused_clearly(
    hotline: RunningHotline, redis: Redis, body: str, error: str
) -> None:
    response = await hotline.client.post(
        "/chat/api/turn", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert error in (await response.json())["error"]
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []


async def test_an_oversized_body_is_refused(hotline: RunningHotline) -> None:
    response = await hotline.client.post(
        "/chat/api/turn",
        data=io.BytesIO(b'{"token": "' + b"a" * (2 * 1024 * 1024) + b'"}'),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413


async def test_a_conversation_keeps_its_place_across_turns(hotline: RunningHotline) -> None:
    first = await hotline.client.post("/chat/api/turn", json={"token": TOKEN, "text": "/start"})
    buttons = (await first.json())["messages"][-1]["buttons"]
    assert [b["id"] for b in buttons] == ["agree", "decline"]
    second = await hotline.client.post("/chat/api/turn", json={"token": TOKEN, "button": "agree"})
    assert len((await second.json())["messages"][0]["buttons"]) == 10
    # Another tab is another conversation: it starts at the beginning, not where the first is.
    other = await hotline.client.post("/chat/api/turn", json={"token": "o" * 43, "button": "agree"})
    other_buttons = (await other.json())["messages"][-1]["buttons"]
    assert [b["id"] for b in other_buttons] == ["agree", "decline"]


async def test_exit_ends_the_conversation_and_forgets_it(
    hotline: RunningHotline, redis: Redis
) -> None:
    await hotline.client.post("/chat/api/turn", json={"token": TOKEN, "text": "/start"})
    keys = [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    assert len(keys) == 1
    assert await redis.ttl(keys[0]) > 0, "sessions expire"
    response = await hotline.client.post("/chat/api/turn", json={"token": TOKEN, "text": "/exit"})
    assert (await response.json())["ended"] is True
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []
