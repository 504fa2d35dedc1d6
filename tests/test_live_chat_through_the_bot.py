"""The live chat the whole way: a victim in the web chat, a counselor in the console, and the
composed app's own relay worker between them (both roles, nothing played by the test).

The victim speaks only HTTP to `/chat/api/turn` and `/chat/api/poll`, as the page does; the
counselor signs in, goes on shift, claims the case and chats through the console's JSON API,
watching the transcript on the case's WebSocket, as the console page does.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any, cast

import aiohttp
import pytest

from backend.core import redis_keys as streams
from backend.web import redis_key
from tests.conftest import RunningHotline
from tests.live_chat_support import SignedIn, add_counselor, origin_of, sign_in
from tests.telegram_support import say

pytestmark = pytest.mark.crypto

TOKEN = "V" * 43
WS = aiohttp.ClientWebSocketResponse
Message = dict[str, Any]


async def turn(hotline: RunningHotline, text: str) -> Message:
    response = await hotline.client.post(
        "/chat/api/turn", json={"token": TOKEN, "language": "en", "text": text}
    )
    assert response.status == 200, await response.text()
    answer: Message = await response.json()
    return answer


async def poll(hotline: RunningHotline) -> Message:
    """One long poll, as chat_live.js sends it: answers as soon as something is held."""
    response = await hotline.client.post("/chat/api/poll", json={"token": TOKEN})
    assert response.status == 200, await response.text()
    answer: Message = await response.json()
    return answer


def shown(answer: Message) -> list[str]:
    return [m["text"] for m in answer["messages"]]


class Desk:
    """A signed-in counselor's console: the JSON API and the case's WebSocket."""

    def __init__(self, hotline: RunningHotline, who: SignedIn) -> None:
        self.hotline = hotline
        self.who = who
        self.origin = origin_of(hotline)

    async def post(self, path: str, body: object = None) -> tuple[int, Message]:
        headers = {**self.who.api_headers(), "Origin": self.origin}
        response = await self.hotline.client.post(path, json=body or {}, headers=headers)
        return response.status, await response.json()

    async def chat(self, case_id: str, action: str, **body: str) -> tuple[int, Message]:
        return await self.post(f"/api/cases/{case_id}/chat/{action}", body)

    async def watch(self, case_id: str) -> WS:
        return await self.hotline.client.ws_connect(
            f"/console/cases/{case_id}/live", headers=self.who.headers(self.origin)
        )


async def until(ws: WS, wanted: Callable[[Message], bool]) -> list[Message]:
    """What the socket sends, up to and including the first message `wanted`."""
    got: list[Message] = []
    while True:
        message: Message = await asyncio.wait_for(ws.receive_json(), 10)
        got.append(message)
        if wanted(message):
            return got


def event(kind: str, by: str, ref: str | None = None) -> Callable[[Message], bool]:
    def matches(m: Message) -> bool:
        return (
            m["type"] == "event"
            and (m["kind"], m["by"]) == (kind, by)
            and (ref is None or m["ref"] == ref)
        )

    return matches


def line(sender: str, text: str) -> Callable[[Message], bool]:
    return lambda m: m["type"] == "line" and (m["sender"], m["text"]) == (sender, text)


async def claimed_case(hotline: RunningHotline, desk: Desk) -> str:
    """The victim's handoff, once the intake stored it, claimed by this counselor."""
    # The bot ranks the request in the handoff queue at once, before the intake stores it.
    queued = cast(
        list[bytes], await hotline.client.app[redis_key].zrange(streams.HANDOFF_QUEUE, 0, -1)
    )
    (case_id,) = [c.decode() for c in queued]
    for _ in range(500):
        status, body = await desk.post(f"/api/cases/{case_id}/claim")
        if status != 404:  # not stored yet: the intake consumes the stream in the background
            break
        await asyncio.sleep(0.02)
    assert status == 200, body
    return case_id


async def open_desk(hotline: RunningHotline) -> Desk:
    await add_counselor(hotline, "alice")
    desk = Desk(hotline, await sign_in(hotline, "alice"))
    status, body = await desk.post("/api/shift", {"on": True})
    assert (status, body) == (200, {"on_shift": True})
    return desk


async def test_a_live_chat_both_ways_through_the_web_chat_and_the_relay(
    hotline: RunningHotline,
) -> None:
    desk = await open_desk(hotline)
    await turn(hotline, "/start")
    asked = await turn(hotline, "/human")
    assert asked["relay"] is True, "the page starts its long poll"
    assert not any(say("safety.no_counselor")[:20] in t for t in shown(asked)), "alice is on"
    case_id = await claimed_case(hotline, desk)
    ws = await desk.watch(case_id)
    await until(ws, lambda m: m["type"] == "caught_up")

    assert await desk.chat(case_id, "start") == (200, {"status": "active", "chat": "on"})
    await until(ws, event("joined", "counselor"))
    joined = await poll(hotline)
    assert shown(joined) == [say("live.joined"), say("live.how_web"), say("live.how_exit")]

    status, sent = await desk.chat(case_id, "lines", text="<b>We are here</b> for you")
    assert status == 200, sent
    got = await poll(hotline)
    assert shown(got) == [f"{say('live.counselor')}: <b>We are here</b> for you"], "neutral label"
    assert "alice" not in json.dumps(got)
    seen = await until(ws, event("delivered", "victim", sent["line_id"]))
    assert line("counselor", "<b>We are here</b> for you")(seen[0])

    reply = await turn(hotline, "thank you, it started yesterday")
    assert reply["messages"] == [] and reply["relay"] is True, "her words go to the counselor"
    await until(ws, line("victim", "thank you, it started yesterday"))

    exited = await turn(hotline, "/exit")
    assert exited["ended"] is True and exited["relay"] is False
    await until(ws, event("ended", "victim"))
    status, refused = await desk.chat(case_id, "lines", text="are you still there?")
    assert (status, refused) == (409, {"error": "the chat is over (the victim left)"})
    status, refused = await desk.chat(case_id, "start")
    assert (status, refused) == (409, {"error": "the victim left this chat"})
    assert (await poll(hotline))["relay"] is False, "the page stops asking"
    await ws.close()


async def test_a_counselor_who_ended_the_chat_can_start_it_again(hotline: RunningHotline) -> None:
    """Regression: the relay forgot the conversation when a counselor ended the chat, so a
    second start (the first end a slip) was reported FAILED and never reached the victim."""
    desk = await open_desk(hotline)
    await turn(hotline, "/start")
    await turn(hotline, "/human")
    case_id = await claimed_case(hotline, desk)
    ws = await desk.watch(case_id)
    await until(ws, lambda m: m["type"] == "caught_up")
    await desk.chat(case_id, "start")
    await poll(hotline)

    assert await desk.chat(case_id, "end") == (200, {"chat": "ended"})
    ended = await poll(hotline)
    assert shown(ended) == [say("live.ended")]
    assert ended["relay"] is True, "the page keeps asking: the counselor may come back"
    back_with_the_flow = await turn(hotline, "hello?")
    assert back_with_the_flow["messages"], "out of the chat, the flow answers her again"

    assert await desk.chat(case_id, "start") == (200, {"status": "active", "chat": "on"})
    rejoined = await poll(hotline)
    assert shown(rejoined) == [say("live.joined"), say("live.how_web"), say("live.how_exit")]
    seen = await until(ws, event("joined", "counselor"))
    assert not any(m["type"] == "event" and m["kind"] == "failed" for m in seen)
    status, sent = await desk.chat(case_id, "lines", text="sorry, I am back")
    assert status == 200, sent
    assert shown(await poll(hotline)) == [f"{say('live.counselor')}: sorry, I am back"]
    await until(ws, event("delivered", "victim", sent["line_id"]))
    assert (await turn(hotline, "ok"))["messages"] == []
    await until(ws, line("victim", "ok"))
    await ws.close()
