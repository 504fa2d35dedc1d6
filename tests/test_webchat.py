"""The victims' web chat door: bad input gets a clear error and changes nothing."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator

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


@pytest.mark.parametrize("path", ["/chat/api/turn", "/chat/api/poll"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_the_web_chats_own_cap_is_refused_with_413(
    hotline: RunningHotline, redis: Redis, path: str, *, declared: bool
) -> None:
    """Issue 18: `MAX_BODY_BYTES` (64 KiB) was defined but unused; only the app's 1 MiB held."""
    body = b'{"token": "' + TOKEN.encode() + b'", "text": "' + b"x" * (200 * 1024) + b'"}'

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = await hotline.client.post(
        path,
        data=body if declared else chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 413
    assert "at most 64 KiB" in (await response.json())["error"]
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []
    # Just under the cap is read and judged on its fields, as before.
    response = await hotline.client.post(path, data=body[: 60 * 1024] + b'"}')
    assert response.status == 400


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


async def test_the_web_chat_never_asks_for_screenshots_it_cannot_take(
    hotline: RunningHotline,
) -> None:
    """Issue 18: the page has no file input, yet the report asked for "up to 3 screenshots"."""
    token = "f" * 43
    said: list[str] = []
    for body in (
        {"text": "/start", "language": "en"},
        {"button": "agree"},
        {"button": "filming"},
        {"button": "18_plus"},
        {"text": "Someone filmed me."},
        {"button": "today"},
        {"button": "telegram"},
        {"button": "skip"},
        {"button": "yes"},
    ):
        said += [str(m["text"]) for m in await _turn(hotline, token, **body)]
    asks = [EN[k] for k in ("report.evidence_choice", "report.screenshots", "report.evidence")]
    assert not any(ask in text for ask in asks for text in said)
    assert EN["report.evidence_no_upload"] in said
    assert said[-1] == EN["report.refer_center"], "the report goes on to the next question"


async def test_a_wrong_receipt_code_is_said_at_once(hotline: RunningHotline) -> None:
    """Issue 18: a wrong code was reported only after the victim had chosen what to do."""
    token = "q" * 43
    await _turn(hotline, token, text="/receipt", language="en")
    (said,) = await _turn(hotline, token, text="ABCD-EFGH-JKMN-PQRS")
    assert said["text"] == EN["receipt.unknown_code"]
    buttons = said["buttons"]
    assert isinstance(buttons, list)
    assert [b["id"] for b in buttons] == ["try_again", "no_thanks"]
    (again,) = await _turn(hotline, token, button="try_again")
    assert again["text"] == EN["receipt.ask_code"]
