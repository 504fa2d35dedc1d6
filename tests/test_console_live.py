"""The console side of the live chat: the transcript WebSocket, the chat actions and the hub.

The victim's side is driven through the protocol the bot speaks (`LiveChat.from_victim`,
`next_for_victims` + `line_for_victim`, delivery events), on the real app with the backend role
only: the test is the bot, so no relay worker of the app's own takes the outbox first.
tests/test_live_chat_through_the_bot.py runs the whole way with the bot's relay.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console import hub as hub_module
from backend.console import live
from backend.console.access import Access
from backend.console.app_keys import keyring_key
from backend.console.canned_responses import in_order_for, load, shipped
from backend.console.hub import TranscriptHub
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.live_chat import Event, EventKind, LiveChat, OutboxKind, Sender, new_line
from backend.models import Role
from backend.web import redis_key
from bot.cli.node import BACKEND
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.live_chat_support import (
    Handoff,
    SignedIn,
    add_counselor,
    handed_off_case,
    origin_of,
    sign_in,
)
from tests.test_console_access import _guarded_routes

WS = aiohttp.ClientWebSocketResponse


@pytest.fixture
async def hotline(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> AsyncIterator[RunningHotline]:
    async with start_hotline(pair, tmp_path, {}, roles=frozenset({BACKEND})) as running:
        yield running


async def _centre_public(hotline: RunningHotline) -> X25519PublicKey:
    active = await hotline.client.app[keyring_key].active()
    assert active is not None
    return active.public_key


async def _connect(hotline: RunningHotline, who: SignedIn, case_id: str, after: str = "0-0") -> WS:
    return await hotline.client.ws_connect(
        f"/console/cases/{case_id}/live?after={after}", headers=who.headers(origin_of(hotline))
    )


async def _receive(ws: WS) -> dict[str, Any]:
    message: dict[str, Any] = await asyncio.wait_for(ws.receive_json(), 5)
    return message


async def _until_caught_up(ws: WS) -> list[dict[str, Any]]:
    history = []
    while (message := await _receive(ws))["type"] != "caught_up":
        history.append(message)
    return history


async def _post(
    hotline: RunningHotline, who: SignedIn, case_id: str, action: str, **body: str
) -> tuple[int, dict[str, Any]]:
    response = await hotline.client.post(
        f"/api/cases/{case_id}/chat/{action}", json=body, headers=who.api_headers()
    )
    return response.status, await response.json()


async def _desk(hotline: RunningHotline, **case: Any) -> tuple[SignedIn, Handoff]:
    counselor = await add_counselor(hotline, "alice")
    return await sign_in(hotline, "alice"), await handed_off_case(hotline, counselor, **case)


async def test_history_first_then_live_entries_in_order(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    chat = LiveChat(hotline.client.app[redis_key])
    centre = await _centre_public(hotline)
    await chat.from_victim(handoff.case_id, new_line(Sender.VICTIM, "도와주세요"), centre)
    answer = new_line(Sender.COUNSELOR, "상담사입니다")
    await chat.from_counselor(handoff.case_id, answer, centre, handoff.reply.public_key())
    await chat.event(handoff.case_id, Event(EventKind.DELIVERED, Sender.VICTIM, 1.0, answer.id))
    # A line sealed to a key no counselor holds: shown as unreadable, the stream goes on.
    stranger = keys.generate_private_key().public_key()
    await chat.from_victim(handoff.case_id, new_line(Sender.VICTIM, "lost"), stranger)

    ws = await _connect(hotline, alice, handoff.case_id)
    history = await _until_caught_up(ws)
    assert [m["type"] for m in history] == ["line", "line", "event", "unreadable"]
    assert (history[0]["sender"], history[0]["text"]) == ("victim", "도와주세요")
    assert (history[1]["sender"], history[1]["line_id"]) == ("counselor", answer.id)
    assert (history[2]["kind"], history[2]["ref"]) == ("delivered", answer.id)

    said = [f"live {n} <b>not bold</b>" for n in range(5)]
    for text in said:
        await chat.from_victim(handoff.case_id, new_line(Sender.VICTIM, text), centre)
    await chat.event(handoff.case_id, Event(EventKind.ENDED, Sender.VICTIM, time.time()))
    live_entries = [await _receive(ws) for _ in range(6)]
    assert [m.get("text") for m in live_entries[:5]] == said, "in order, text as written"
    assert (live_entries[5]["kind"], live_entries[5]["by"]) == ("ended", "victim")
    ids = [m["id"] for m in history + live_entries]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-")))), "ordered by entry id"
    await ws.close()


async def test_a_reconnect_resumes_after_the_last_entry_without_duplicates(
    hotline: RunningHotline,
) -> None:
    alice, handoff = await _desk(hotline)
    chat = LiveChat(hotline.client.app[redis_key])
    centre = await _centre_public(hotline)

    async def victim_says(start: int, count: int) -> None:
        for n in range(start, start + count):
            await chat.from_victim(handoff.case_id, new_line(Sender.VICTIM, f"m{n}"), centre)

    await victim_says(0, 3)
    ws = await _connect(hotline, alice, handoff.case_id)
    history = await _until_caught_up(ws)
    seen = [m["text"] for m in history]
    await ws.close()

    await victim_says(3, 3)  # while the page is away
    # Reconnect while the victim keeps writing: nothing may fall between history and live.
    writing = asyncio.create_task(victim_says(6, 30))
    ws = await _connect(hotline, alice, handoff.case_id, after=history[-1]["id"])
    while len(seen) < 36:
        message = await _receive(ws)
        if message["type"] == "line":
            seen.append(message["text"])
    await writing
    assert seen == [f"m{n}" for n in range(36)], "each once, in order"
    await chat.event(handoff.case_id, Event(EventKind.HELD, Sender.VICTIM, 1.0, "x"))
    assert (await _receive(ws))["kind"] == "held", "nothing else was queued in between"
    await ws.close()


async def test_the_upgrade_is_refused_to_others(hotline: RunningHotline) -> None:
    alice_id = await add_counselor(hotline, "alice")
    await add_counselor(hotline, "bob")
    await add_counselor(hotline, "carol", Role.SUPERVISOR)
    handoff = await handed_off_case(hotline, alice_id)
    path = f"/console/cases/{handoff.case_id}/live"
    origin = origin_of(hotline)
    bob = await sign_in(hotline, "bob")
    alice = await sign_in(hotline, "alice")
    carol = await sign_in(hotline, "carol")

    async def status(headers: dict[str, str]) -> int:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await hotline.client.ws_connect(path, headers=headers)
        return refused.value.status

    assert await status(bob.headers(origin)) == 403, "bob does not hold the case"
    assert await status(alice.headers("https://evil.example")) == 403, "cross-site hijacking"
    assert await status({"Cookie": alice.headers(origin)["Cookie"]}) == 403, "no Origin"
    await status({"Origin": origin})  # no session: refused (and sent to sign in)
    anonymous = await hotline.client.get(path, headers={"Origin": origin}, allow_redirects=False)
    assert anonymous.headers["Location"] == "/console/login"
    unclaimed = await handed_off_case(hotline, None)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await hotline.client.ws_connect(
            f"/console/cases/{unclaimed.case_id}/live", headers=alice.headers(origin)
        )
    assert refused.value.status == 403, "a queued case is nobody's yet"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await hotline.client.ws_connect(f"{path}?after=0-0;x", headers=alice.headers(origin))
    assert refused.value.status == 400
    ws = await hotline.client.ws_connect(path, headers=carol.headers(origin))
    assert await _until_caught_up(ws) == [], "a supervisor may watch any case"
    await ws.close()


async def test_the_live_routes_are_in_the_authorization_matrix(hotline: RunningHotline) -> None:
    routes = {
        (method, path): access for method, path, access in _guarded_routes(hotline.client.app)
    }
    for method, path in [
        ("GET", "/console/cases/no-such-id/live"),
        ("POST", "/api/cases/no-such-id/chat/start"),
        ("POST", "/api/cases/no-such-id/chat/end"),
        ("POST", "/api/cases/no-such-id/chat/lines"),
        ("GET", "/api/canned-responses"),
    ]:
        assert routes[(method, path)] is Access.COUNSELOR, path


async def test_start_send_end_and_delivery_states(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    redis = hotline.client.app[redis_key]
    bot = LiveChat(redis)
    await bot.ensure_relay_group()
    ws = await _connect(hotline, alice, handoff.case_id)
    assert await _until_caught_up(ws) == []
    status, body = await _post(hotline, alice, handoff.case_id, "lines", text="too early")
    assert (status, body["error"]) == (409, "start the chat first")

    assert (await _post(hotline, alice, handoff.case_id, "start"))[0] == 200
    page = await hotline.client.get(
        f"/console/cases/{handoff.case_id}", headers={"Cookie": alice.headers("")["Cookie"]}
    )
    assert "Status: active" in await page.text()
    joined = await _receive(ws)
    assert (joined["kind"], joined["by"]) == ("joined", "counselor")
    (item,) = await bot.next_for_victims("bot-1")
    assert item.kind is OutboxKind.JOINED and item.case_id == handoff.case_id
    await bot.ack(item)
    assert (await _post(hotline, alice, handoff.case_id, "start"))[0] == 200, "idempotent"
    assert await bot.next_for_victims("bot-1") == [], "the victim is told once"

    text = "안녕하세요 <script>alert(1)</script>"
    status, sent = await _post(hotline, alice, handoff.case_id, "lines", text=text)
    assert status == 200, sent
    mine = await _receive(ws)
    assert (mine["type"], mine["line_id"], mine["text"]) == ("line", sent["line_id"], text)
    assert mine["id"] == sent["entry_id"]
    (item,) = await bot.next_for_victims("bot-1")
    line = bot.line_for_victim(item, handoff.reply)
    assert (line.id, line.text, line.sender) == (sent["line_id"], text, Sender.COUNSELOR)
    await bot.ack(item)
    for kind in (EventKind.HELD, EventKind.DELIVERED, EventKind.FAILED):
        await bot.event(handoff.case_id, Event(kind, Sender.VICTIM, time.time(), line.id))
        state = await _receive(ws)
        assert (state["kind"], state["ref"]) == (kind.value, line.id)

    for bad in ("", " ", "x" * 4001):
        assert (await _post(hotline, alice, handoff.case_id, "lines", text=bad))[0] == 400
    assert (await _post(hotline, alice, handoff.case_id, "end"))[0] == 200
    assert (await _receive(ws))["kind"] == "ended"
    status, body = await _post(hotline, alice, handoff.case_id, "lines", text="after")
    assert (status, body["error"]) == (409, "the chat is over (you ended it)")
    assert (await _post(hotline, alice, handoff.case_id, "end"))[0] == 409
    (ended,) = await bot.next_for_victims("bot-1")
    assert ended.kind is OutboxKind.ENDED
    await ws.close()


async def test_sending_needs_the_cases_reply_key(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline, with_reply_key=False)
    bot = LiveChat(hotline.client.app[redis_key])
    await bot.ensure_relay_group()
    assert (await _post(hotline, alice, handoff.case_id, "start"))[0] == 200
    status, body = await _post(hotline, alice, handoff.case_id, "lines", text="hello")
    assert status == 409
    assert "no reply key" in body["error"]
    (joined,) = await bot.next_for_victims("bot-1")
    assert joined.kind is OutboxKind.JOINED, "the start went out; no line did"
    await bot.ack(joined)
    assert await bot.next_for_victims("bot-1") == []


async def test_a_victim_who_left_is_not_called_back(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    bot = LiveChat(hotline.client.app[redis_key])
    assert (await _post(hotline, alice, handoff.case_id, "start"))[0] == 200
    await bot.event(handoff.case_id, Event(EventKind.ENDED, Sender.VICTIM, time.time()))
    status, body = await _post(hotline, alice, handoff.case_id, "lines", text="are you there?")
    assert (status, body["error"]) == (409, "the chat is over (the victim left)")
    status, body = await _post(hotline, alice, handoff.case_id, "start")
    assert (status, body["error"]) == (409, "the victim left this chat")


async def test_chat_actions_need_the_csrf_token_and_the_case(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    await add_counselor(hotline, "bob")
    bob = await sign_in(hotline, "bob")
    path = f"/api/cases/{handoff.case_id}/chat/start"
    cookie = {"Cookie": alice.api_headers()["Cookie"]}
    no_token = await hotline.client.post(path, json={}, headers=cookie)
    assert no_token.status == 403
    wrong = await hotline.client.post(path, json={}, headers=cookie | {"X-CSRF-Token": "no"})
    assert wrong.status == 403
    cross = await hotline.client.post(
        path, json={}, headers=alice.api_headers() | {"Origin": "https://evil.example"}
    )
    assert cross.status == 403
    fetched_cross_site = await hotline.client.post(
        path, json={}, headers=alice.api_headers() | {"Sec-Fetch-Site": "cross-site"}
    )
    assert fetched_cross_site.status == 403
    not_held = await hotline.client.post(path, json={}, headers=bob.api_headers())
    assert not_held.status == 403
    assert (await not_held.json())["error"] == "this case is not yours: claim it first"
    assert await hotline.client.app[redis_key].xlen(streams.RELAY_OUTBOX_STREAM) == 0
    null_origin = await hotline.client.post(
        path, json={}, headers=alice.api_headers() | {"Origin": "null"}
    )
    assert null_origin.status == 200, "same-origin fetch under no-referrer, with the token"


async def test_a_signed_out_counselors_socket_is_closed(
    hotline: RunningHotline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "RECHECK_S", 0.1)
    alice, handoff = await _desk(hotline)
    ws = await _connect(hotline, alice, handoff.case_id)
    await _until_caught_up(ws)
    response = await hotline.client.post(
        "/console/logout",
        data={"csrf": alice.csrf},
        headers={"Cookie": alice.headers("")["Cookie"]},
        allow_redirects=False,
    )
    assert response.status == 303
    closing = await asyncio.wait_for(ws.receive(), 5)
    assert closing.type is aiohttp.WSMsgType.CLOSE
    assert ws.close_code == live.CLOSE_NOT_ALLOWED


async def test_canned_responses_in_korean_and_english_victims_language_first(
    hotline: RunningHotline,
) -> None:
    shipped_responses = load(shipped())
    by_language: dict[str, list[str]] = {}
    for canned in shipped_responses:
        by_language.setdefault(canned.language, []).append(canned.id)
    assert set(by_language) >= {"ko", "en"}
    assert by_language["ko"] == by_language["en"], "the same answers in every language"
    assert next(r.language for r in in_order_for(shipped_responses, "en")) == "en"

    alice, _handoff = await _desk(hotline)
    response = await hotline.client.get(
        "/api/canned-responses?language=ko", headers=alice.api_headers()
    )
    listed = (await response.json())["responses"]
    languages = [r["language"] for r in listed]
    count = len(by_language["ko"])
    assert languages[:count] == ["ko"] * count and "en" in languages[count:]
    assert any("1366" in r["text"] for r in listed if r["language"] == "ko")
    document = await (await hotline.client.get("/api/openapi.json")).json()
    assert document["paths"]["/api/cases/{case_id}/chat/lines"]["post"]["summary"].startswith(
        "Send a line"
    )


async def test_a_broken_canned_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ko.yaml").write_text("- {id: a, title: A, text: 가}\n", encoding="utf-8")
    (tmp_path / "en.yaml").write_text("- {id: b, title: B, text: b}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="ids differ"):
        load(tmp_path)
    (tmp_path / "en.yaml").write_text("- {id: a, title: A}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"en\.yaml, entry 1"):
        load(tmp_path)


async def test_one_hub_read_serves_every_socket_and_a_new_case_joins_at_once(
    redis: Redis,
) -> None:
    # The hub blocks for 4 s: only the wake-up makes a newly watched case's entry arrive in 1.
    hub = TranscriptHub(redis, block_ms=4000)
    await hub.start()
    chat = LiveChat(redis)
    try:
        first = await hub.subscribe("case-a")
        await chat.event("case-a", Event(EventKind.HELD, Sender.VICTIM, 1.0))
        await asyncio.wait_for(first.queue.get(), 2)
        subscriptions = [await hub.subscribe(f"case-{n}") for n in range(20)]
        await asyncio.sleep(0.05)  # let the hub block again
        # Only this test's database: a shared server also serves other databases' clients.
        db = str(redis.connection_pool.connection_kwargs.get("db", 0))
        clients = await redis.client_list()
        blocked = [c for c in clients if c["cmd"] == "xread" and c["db"] == db]
        assert len(blocked) == 1, "one blocking read for every watched case"
        late = await hub.subscribe("case-late")
        started = time.monotonic()
        await chat.event("case-late", Event(EventKind.HELD, Sender.VICTIM, 1.0))
        entry = await asyncio.wait_for(late.queue.get(), 2)
        assert entry is not None and time.monotonic() - started < 1.0
        await chat.event("case-7", Event(EventKind.FAILED, Sender.VICTIM, 1.0))
        assert await asyncio.wait_for(subscriptions[7].queue.get(), 2) is not None
        assert subscriptions[8].queue.empty()
        hub.unsubscribe(subscriptions[3])
        assert "case-3" not in hub.watched
    finally:
        await hub.stop()
    assert late.ended and await late.queue.get() is None, "stopping ends every subscription"
    assert await redis.keys(streams.CONSOLE_HUB_WAKE_PREFIX + "*") == []


async def test_a_stalled_socket_is_dropped_not_buffered(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "QUEUE_LIMIT", 3)
    hub = TranscriptHub(redis, block_ms=1000)
    await hub.start()
    try:
        stalled = await hub.subscribe("case-s")
        for _ in range(5):
            await LiveChat(redis).event("case-s", Event(EventKind.HELD, Sender.VICTIM, 1.0))
        for _ in range(100):
            if stalled.ended:
                break
            await asyncio.sleep(0.02)
        assert stalled.overflowed and "case-s" not in hub.watched
    finally:
        await hub.stop()


async def test_stopping_the_app_closes_the_sockets_and_the_hub(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {}) as running:
        alice, handoff = await _desk(running)
        ws = await _connect(running, alice, handoff.case_id)
        await _until_caught_up(ws)
        hub = running.client.app[live.hub_key]
        assert hub.watched == {handoff.case_id}
        # The server stops, not the test client (which would close its own sockets first).
        closing = asyncio.create_task(running.client.server.close())
        message = await asyncio.wait_for(ws.receive(), 10)
        assert message.type in {aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED}
        assert ws.close_code == aiohttp.WSCloseCode.GOING_AWAY
        await asyncio.wait_for(closing, 10)
    assert hub.watched == frozenset()
    assert await redis.keys(streams.CONSOLE_HUB_WAKE_PREFIX + "*") == []


async def test_closing_a_case_ends_its_chat_for_the_victim(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    bot = LiveChat(hotline.client.app[redis_key])
    await bot.ensure_relay_group()
    assert (await _post(hotline, alice, handoff.case_id, "start"))[0] == 200
    (joined,) = await bot.next_for_victims("bot-1")
    await bot.ack(joined)
    closed = await hotline.client.post(
        f"/api/cases/{handoff.case_id}/close",
        json={"outcome": "referred"},
        headers=alice.api_headers(),
    )
    assert closed.status == 200, await closed.text()
    (ended,) = await bot.next_for_victims("bot-1")
    assert (ended.kind, ended.case_id) == (OutboxKind.ENDED, handoff.case_id)
    presence = await bot.presence(handoff.case_id)
    assert presence is not None and (presence.kind, presence.by) == (
        EventKind.ENDED,
        Sender.COUNSELOR,
    )


async def test_a_victims_self_harm_words_flag_the_line(hotline: RunningHotline) -> None:
    alice, handoff = await _desk(hotline)
    chat = LiveChat(hotline.client.app[redis_key])
    centre = await _centre_public(hotline)
    for text in ("I want to die", "정말 죽고 싶어요", "thank you"):
        await chat.from_victim(handoff.case_id, new_line(Sender.VICTIM, text), centre)
    await chat.from_counselor(
        handoff.case_id,
        new_line(Sender.COUNSELOR, "suicide prevention line: 109"),
        centre,
        handoff.reply.public_key(),
    )
    ws = await _connect(hotline, alice, handoff.case_id)
    history = await _until_caught_up(ws)
    # The console page raises its alert on the flag (static/alerts.js); a counselor's own
    # words are never flagged.
    assert [m.get("flags") for m in history] == [["self_harm"], ["self_harm"], [], None]
    await ws.close()
