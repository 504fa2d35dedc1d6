"""Triage reads every word (issue 12, point 2): a victim's texts while she waits for a
counselor, in a live chat and when she comes back with a receipt go through triage as her
answers in the flow do. The guidance comes at once in her language, the case's priority rises
(the queue reorders), and the counselor's live panel is flagged.

Everything goes the real way: web chat requests, the runtime, the engine, the reports stream,
intake, the store, the console's JSON API and its WebSocket.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any, cast

import pytest

from backend.core import redis_keys as streams
from backend.web import redis_key
from tests.conftest import RunningHotline
from tests.telegram_support import say
from tests.test_live_chat_through_the_bot import Desk, event, line, open_desk, until

pytestmark = pytest.mark.crypto

FIRST, SECOND, RETURNING = "A" * 43, "B" * 43, "C" * 43
THREAT = "he says pay or else, he will post it by tonight"
SELF_HARM = "I want to die"


async def turn(hotline: RunningHotline, token: str, **body: str) -> dict[str, Any]:
    response = await hotline.client.post(
        "/chat/api/turn", json={"token": token, "language": "en", **body}
    )
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def shown(answer: dict[str, Any]) -> list[str]:
    return [m["text"] for m in answer["messages"]]


async def queue_of(desk: Desk, count: int) -> list[dict[str, Any]]:
    for _ in range(500):
        response = await desk.hotline.client.get("/api/queue", headers=desk.who.api_headers())
        cases: list[dict[str, Any]] = (await response.json())["cases"]
        if len(cases) >= count:
            return cases
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} waiting cases")


async def priority_of(desk: Desk, case_id: str, wanted: int) -> int:
    """The case's priority in the store, once intake applied the event (or the last seen)."""
    found = -1
    for _ in range(500):
        response = await desk.hotline.client.get("/api/cases", headers=desk.who.api_headers())
        found = {c["id"]: c["priority"] for c in (await response.json())["cases"]}[case_id]
        if found == wanted:
            break
        await asyncio.sleep(0.02)
    return int(found)


async def test_words_typed_while_waiting_and_in_a_live_chat_are_triaged(
    hotline: RunningHotline,
) -> None:
    desk = await open_desk(hotline)
    await turn(hotline, FIRST, text="/start")
    await turn(hotline, FIRST, text="/human")
    await turn(hotline, SECOND, text="/start")
    await turn(hotline, SECOND, text="/human")
    await turn(hotline, SECOND, button="decline")  # no report: her flow has ended, she waits
    first, second = await queue_of(desk, 2)
    assert (first["priority"], second["priority"]) == (1, 1)
    waiting_id = second["id"]

    answer = await turn(hotline, SECOND, text=THREAT)
    assert shown(answer) == [say("safety.threat"), say("live.saved")], "guidance at once"
    redis = hotline.client.app[redis_key]
    ranked = cast(list[bytes], await redis.zrange(streams.HANDOFF_QUEUE, 0, -1))
    assert ranked[0].decode() == waiting_id, "the place victims are told moved up at once"
    assert await priority_of(desk, waiting_id, 2) == 2
    assert (await queue_of(desk, 2))[0]["id"] == waiting_id, "the queue reordered"

    status, _ = await desk.post(f"/api/cases/{waiting_id}/claim")
    assert status == 200
    ws = await desk.watch(waiting_id)
    seen = await until(ws, lambda m: m["type"] == "caught_up")
    assert any(event("triage", "victim", "threat")(m) for m in seen), "the panel is flagged"
    assert await desk.chat(waiting_id, "start") == (200, {"status": "active", "chat": "on"})
    joined = await hotline.client.post("/chat/api/poll", json={"token": SECOND})
    assert shown(await joined.json())[0] == say("live.joined"), "the page's long poll"

    answer = await turn(hotline, SECOND, text=SELF_HARM)
    assert shown(answer) == [say("safety.emergency")], "guidance first, in her language"
    assert "109" in shown(answer)[0] and "1388" in shown(answer)[0]
    await until(ws, line("victim", SELF_HARM))
    await until(ws, event("triage", "victim", "self_harm"))
    assert await priority_of(desk, waiting_id, 3) == 3
    response = await hotline.client.get("/api/cases", headers=desk.who.api_headers())
    assert len((await response.json())["cases"]) == 2, "no second request for the same chat"
    await ws.close()


async def test_a_returning_victims_words_are_triaged_and_her_request_is_urgent(
    hotline: RunningHotline,
) -> None:
    desk = await open_desk(hotline)
    await turn(hotline, FIRST, text="/start")
    await turn(hotline, FIRST, button="agree")
    await turn(hotline, FIRST, button="deepfake")
    await turn(hotline, FIRST, button="18_plus")
    await turn(hotline, FIRST, text="someone made pictures")
    done = await turn(hotline, FIRST, button="send_now")
    found = re.search(r"\b[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}-[0-9A-Z]{4}\b", str(done))
    assert found is not None, done
    await queue_of_all(desk, 1)

    await turn(hotline, RETURNING, text="/receipt")
    await turn(hotline, RETURNING, text=found.group(0))
    await turn(hotline, RETURNING, button="add_info")
    answer = await turn(hotline, RETURNING, text=f"{SELF_HARM}, it is still online")
    assert shown(answer)[0] == say("safety.emergency"), "guidance first"
    # Self-harm also asks for a counselor at once: her request and the handoff, both urgent.
    cases = await queue_of_all(desk, 3)
    (follow_up,) = [c for c in cases if c["category"] == "follow_up"]
    assert follow_up["priority"] == 3, "her request carries the raised priority"
    assert sorted(c["priority"] for c in cases) == [0, 3, 3]


async def queue_of_all(desk: Desk, count: int) -> list[dict[str, Any]]:
    for _ in range(500):
        response = await desk.hotline.client.get("/api/cases", headers=desk.who.api_headers())
        cases: list[dict[str, Any]] = (await response.json())["cases"]
        if len(cases) >= count:
            return cases
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} cases")
