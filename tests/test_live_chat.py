"""The live chat, bot side: a counselor's words reach the victim through every door, the
victim's words reach the transcript, and nothing of either is readable at rest.

The console side is driven here through the protocol itself (`LiveChat.notify_victim`,
`from_counselor`), as the console calls it. Web chat and KakaoTalk run in the composed app
(`bot.node` starts the relay worker); Telegram runs the real door against the fake Bot API.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore, envelope_of
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.conversation import Inbound, Outbound, Pseudonym
from backend.core.live_chat import (
    EventKind,
    LiveChat,
    OutboxKind,
    Sender,
    TranscriptEntry,
    new_line,
    reply_key_of,
)
from backend.core.receipt_codes import ReceiptHasher
from backend.core.sealing import Envelope, open_envelope
from backend.flows.registry import FlowRegistry
from backend.keyring import KeyRing
from bot import webchat
from bot.kakao import SECRET_HEADER
from bot.live import CHECK_BUTTON, HeldLine, HeldLines, VictimSide
from bot.relay import RelayWorker
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram.door import TelegramDoor
from bot.telegram.outbox import OutboxLimits
from tests import telegram_support
from tests.conftest import FAST_KDF, Pair, RunningHotline, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import (
    FAST_LIMITS,
    SESSION_TTL_S,
    Victim,
    plaintext_in_redis,
    running_door,
    say,
    texts,
)
from tests.test_kakao import BOT_ID, SECRET, skill_request

pytestmark = pytest.mark.crypto

center_key = telegram_support.center_key
flows = telegram_support.flows
telegram = telegram_support.telegram

TOKEN = "L" * 43
COUNSELOR_SAYS = "CANARY-상담-9d41 we are here for you"
VICTIM_SAYS = "CANARY-피해-3b7e thank you"
MARKERS = [COUNSELOR_SAYS.split(maxsplit=1)[0].encode(), VICTIM_SAYS.split(maxsplit=1)[0].encode()]


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 10.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.02)


async def events(
    chat: LiveChat, case_id: str, ring: dict[str, X25519PrivateKey]
) -> list[tuple[EventKind, Sender, str]]:
    return [
        (e.event.kind, e.event.by, e.event.ref)
        for e in await chat.transcript(case_id, ring)
        if e.event is not None
    ]


def victim_lines(entries: list[TranscriptEntry]) -> list[str]:
    return [e.line.text for e in entries if e.line is not None and e.line.sender is Sender.VICTIM]


def watch_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Ours at every level; libraries at INFO, as deployed (PTB and httpx echo request bodies at
    DEBUG, which no deployment runs)."""
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")


def assert_nothing_in_clear(caplog: pytest.LogCaptureFixture) -> None:
    logged = "\n".join(r.getMessage() for r in caplog.records).encode()
    for marker in MARKERS:
        assert marker not in logged, "a chat line reached the logs"


class Console:
    """What the console does with a case, through the protocol: the centre's keys, the reply
    key from the opened request."""

    def __init__(self, redis: Redis, ring: dict[str, X25519PrivateKey], answers: dict[str, Any]):
        self.chat = LiveChat(redis)
        self.ring = ring
        self.centre: X25519PublicKey = next(iter(ring.values())).public_key()
        reply = reply_key_of(answers)
        assert reply is not None, "the handoff request carries the conversation's reply key"
        self.reply = reply

    async def say(self, case_id: str, text: str) -> str:
        line = new_line(Sender.COUNSELOR, text)
        await self.chat.from_counselor(case_id, line, self.centre, self.reply)
        return line.id


# -- web chat and KakaoTalk, in the composed app -------------------------------------------


@asynccontextmanager
async def composed(
    pair: Pair, tmp_path: Path, settings: dict[str, str] | None = None
) -> AsyncIterator[RunningHotline]:
    extra = {
        "HOTLINE_KAKAO_BOT_ID": BOT_ID,
        "HOTLINE_KAKAO_SECRET": SECRET,
        # A poll with nothing to say answers after this, not the page's 20 s (a line that
        # comes answers it at once either way).
        "HOTLINE_WEBCHAT_POLL_WAIT_S": "5",
        **(settings or {}),
    }
    async with start_hotline(pair, tmp_path, extra) as running:
        yield running


async def opened_request(
    hotline: RunningHotline, redis: Redis, engine: AsyncEngine
) -> tuple[str, Console]:
    """The waiting case, as a counselor opens it: its id and a console for it."""
    queued = await eventually(lambda: redis.zrange(streams.HANDOFF_QUEUE, 0, -1))
    case_id = queued[-1].decode()
    cases = CaseStore(engine)

    async def stored() -> bool:
        return case_id in {c.id for c in await cases.list_open()}

    await eventually(stored)
    ring = await KeyRing(engine, FAST_KDF).unwrap_with_recovery(hotline.recovery_key)
    envelope = envelope_of(await cases.get(case_id))
    answers = json.loads(open_envelope(envelope, ring[envelope.header.key_id]))["answers"]
    return case_id, Console(redis, ring, answers)


async def web_turn(hotline: RunningHotline, **body: Any) -> dict[str, Any]:
    response = await hotline.client.post(
        "/chat/api/turn", json={"token": TOKEN, "language": "en", **body}
    )
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


async def web_poll(hotline: RunningHotline) -> dict[str, Any]:
    response = await hotline.client.post("/chat/api/poll", json={"token": TOKEN})
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def shown(answer: dict[str, Any]) -> list[str]:
    return [m["text"] for m in answer["messages"]]


async def test_web_chat_live_both_ways(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch_logs(caplog)
    async with composed(pair, tmp_path) as hotline:
        assert hotline.client.app[webchat.poll_wait_key] == 5, "HOTLINE_WEBCHAT_POLL_WAIT_S"
        await web_turn(hotline, text="/start")
        asked = await web_turn(hotline, text="/human")
        assert asked["relay"] is True, "the page starts polling for replies"
        assert any(say("live.how_web") in text for text in shown(asked))
        assert (await web_poll(hotline))["messages"] == []  # nothing yet; still open
        case_id, console = await opened_request(hotline, redis, engine)

        await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
        joined = await web_poll(hotline)
        assert shown(joined) == [say("live.joined"), say("live.how_web"), say("live.how_exit")]
        line_id = await console.say(case_id, COUNSELOR_SAYS)
        polled = await web_poll(hotline)
        assert shown(polled) == [f"{say('live.counselor')}: {COUNSELOR_SAYS}"]
        assert polled["relay"] is True
        got = await events(console.chat, case_id, console.ring)
        assert (EventKind.HELD, Sender.VICTIM, line_id) in got
        assert (EventKind.DELIVERED, Sender.VICTIM, line_id) in got

        reply = await web_turn(hotline, text=VICTIM_SAYS)
        assert reply["messages"] == [] and reply["relay"] is True, "no flow step in a live chat"
        entries = await console.chat.transcript(case_id, console.ring)
        assert victim_lines(entries) == [VICTIM_SAYS]

        # A line arriving while the victim writes comes with the answer to their next turn.
        second = await console.say(case_id, "second line")
        await eventually(lambda: _held(redis))
        more = await web_turn(hotline, text="ok")
        assert shown(more) == [f"{say('live.counselor')}: second line"]
        got = await events(console.chat, case_id, console.ring)
        assert (EventKind.DELIVERED, Sender.VICTIM, second) in got

        exited = await web_turn(hotline, text="/exit")
        assert exited["ended"] is True and exited["relay"] is False
        got = await events(console.chat, case_id, console.ring)
        assert got[-1][:2] == (EventKind.ENDED, Sender.VICTIM), "the console learns she left"
        assert (await web_poll(hotline))["relay"] is False, "the page stops polling"
        assert await redis.get(streams.relay_link_key(case_id)) is None
        assert await plaintext_in_redis(redis, MARKERS) == []
    assert_nothing_in_clear(caplog)


async def _held(redis: Redis) -> bool:
    return bool([k async for k in redis.scan_iter(match=streams.HELD_LINES_PREFIX + "*")])


async def kakao_post(hotline: RunningHotline, body: dict[str, Any]) -> dict[str, Any]:
    response = await hotline.client.post("/kakao/skill", json=body, headers={SECRET_HEADER: SECRET})
    assert response.status == 200, await response.text()
    answer: dict[str, Any] = await response.json()
    return answer


def kakao_texts(answer: dict[str, Any]) -> str:
    return "\n\n".join(
        o["simpleText"]["text"] for o in answer["template"]["outputs"] if "simpleText" in o
    )


def kakao_quick(answer: dict[str, Any]) -> list[str]:
    return [q["extra"]["button"] for q in answer["template"].get("quickReplies", [])]


async def test_kakao_replies_come_with_the_next_turn(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch_logs(caplog)
    async with composed(pair, tmp_path) as hotline:
        await kakao_post(hotline, skill_request("hello"))
        asked = await kakao_post(hotline, skill_request("/human"))
        assert say("live.how_kakao") in kakao_texts(asked), "told how replies reach her"
        assert CHECK_BUTTON in kakao_quick(asked), "and offered to check for them"
        case_id, console = await opened_request(hotline, redis, engine)

        await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
        await eventually(lambda: _held(redis))
        line_id = await console.say(case_id, COUNSELOR_SAYS)
        await eventually(lambda: _has(console, case_id, (EventKind.HELD, Sender.VICTIM, line_id)))
        check = await kakao_post(hotline, skill_request("Check", button=CHECK_BUTTON))
        said = kakao_texts(check)
        for key in ("live.joined", "live.how_kakao", "live.how_exit"):
            assert say(key) in said
        assert f"{say('live.counselor')}: {COUNSELOR_SAYS}" in said
        got = await events(console.chat, case_id, console.ring)
        assert (EventKind.DELIVERED, Sender.VICTIM, line_id) in got
        nothing = await kakao_post(hotline, skill_request("Check again", button=CHECK_BUTTON))
        assert kakao_texts(nothing) == say("live.no_replies")

        reply = await kakao_post(hotline, skill_request(VICTIM_SAYS))
        assert "useCallback" not in reply, "no callback URL: answered at once, as always"
        assert kakao_texts(reply) == say("live.sent"), "Kakao needs an answer: a short one"
        assert CHECK_BUTTON in kakao_quick(reply)
        assert victim_lines(await console.chat.transcript(case_id, console.ring)) == [VICTIM_SAYS]

        await kakao_post(hotline, skill_request("/exit"))
        got = await events(console.chat, case_id, console.ring)
        assert got[-1][:2] == (EventKind.ENDED, Sender.VICTIM)
        after = await kakao_post(hotline, skill_request("are you there?"))
        assert CHECK_BUTTON not in kakao_quick(after), "out of the live chat: the flow again"
        assert victim_lines(await console.chat.transcript(case_id, console.ring)) == [VICTIM_SAYS]
        assert await plaintext_in_redis(redis, MARKERS) == []
    assert_nothing_in_clear(caplog)


async def _has(console: Console, case_id: str, event: tuple[EventKind, Sender, str]) -> bool:
    return event in await events(console.chat, case_id, console.ring)


# -- Telegram: the real door, the fake Bot API ----------------------------------------------


def _victims(redis: Redis, root_secret: bytes, centre: X25519PrivateKey) -> VictimSide:
    return VictimSide(
        redis, root_secret, SESSION_TTL_S, centre.public_key(), holding_channels={"web"}
    )


RELAY_ROOT_SECRET = b"r" * 32


def live_runtime(
    redis: Redis, flows: FlowRegistry, centre: X25519PrivateKey
) -> tuple[ConversationRuntime, VictimSide]:
    """A bot worker's runtime with live chat, as `bot.node` wires it; every worker of a
    deployment has the same root secret."""
    victims = _victims(redis, RELAY_ROOT_SECRET, centre)
    runtime = ConversationRuntime(
        redis,
        flows,
        SessionStore(redis, RELAY_ROOT_SECRET, SESSION_TTL_S),
        ReportSender(redis, centre.public_key()),
        receipts=ReceiptHasher(b"r" * 32, b"s" * 16, FAST_KDF),
        live=victims,
    )
    return runtime, victims


@asynccontextmanager
async def telegram_relay(
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    centre: X25519PrivateKey,
    limits: OutboxLimits = FAST_LIMITS,
    *,
    mode: str = "polling",
) -> AsyncIterator[tuple[TelegramDoor, RelayWorker, VictimSide]]:
    runtime, victims = live_runtime(redis, flows, centre)
    async with running_door(
        mode, redis, telegram, runtime, RELAY_ROOT_SECRET, limits=limits
    ) as door:
        relay = RelayWorker(
            redis, runtime, victims, {"telegram": door, "web": victims.held}, "bot-test"
        )
        task = asyncio.create_task(relay.run())
        try:
            yield door, relay, victims
        finally:
            relay.stop()
            await task


async def last_request(redis: Redis, centre: X25519PrivateKey) -> tuple[str, Any]:
    """The newest request on the reports stream (no intake runs here), as the centre opens it."""
    found = cast(list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange(streams.REPORTS_STREAM))
    envelope = Envelope.from_bytes(found[-1][1][b"envelope"])
    return envelope.header.case_id, json.loads(open_envelope(envelope, centre))["answers"]


async def test_telegram_pushes_counselor_lines_and_exit_erases_them(
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch_logs(caplog)
    async with telegram_relay(redis, telegram, flows, center_key):
        victim = Victim(telegram, "en")
        await victim.say("/start", replies=2)
        asked = await victim.say("/human", replies=2)  # the wait, then the flow resumes
        assert say("live.how_push") in texts(asked)[0]
        case_id, answers = await last_request(redis, center_key)
        ring = {keys.key_id(center_key.public_key()): center_key}
        console = Console(redis, ring, answers)

        seen = len(telegram.calls_to("sendMessage"))
        await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
        joined = (await telegram.wait_for("sendMessage", seen + 3))[seen:]
        assert texts(joined) == [say("live.joined"), say("live.how_push"), say("live.how_exit")]
        line_id = await console.say(case_id, COUNSELOR_SAYS)
        (pushed,) = (await telegram.wait_for("sendMessage", seen + 4))[seen + 3 :]
        assert pushed.params["text"] == f"{say('live.counselor')}: {COUNSELOR_SAYS}"
        assert pushed.json("protect_content") is True
        assert "CanaryName" not in pushed.params["text"], "a neutral label, never a name"
        await eventually(
            lambda: _has(console, case_id, (EventKind.DELIVERED, Sender.VICTIM, line_id))
        )

        await telegram.send_text(victim.user, victim.chat, VICTIM_SAYS)

        async def said() -> list[str]:
            return victim_lines(await console.chat.transcript(case_id, ring))

        assert await eventually(said) == [VICTIM_SAYS]
        assert len(telegram.calls_to("sendMessage")) == seen + 4, "no flow answer to her words"

        await victim.say("/exit", replies=1)
        deleted = {
            int(i) for call in telegram.calls_to("deleteMessages") for i in call.json("message_ids")
        }
        assert pushed.result["message_id"] in deleted, "/exit erases the counselor's lines too"
        got = await events(console.chat, case_id, ring)
        assert got[-1][:2] == (EventKind.ENDED, Sender.VICTIM)
        assert await redis.get(streams.relay_link_key(case_id)) is None
        assert await plaintext_in_redis(redis, MARKERS) == []
    assert_nothing_in_clear(caplog)


# -- the relay worker's guarantees ----------------------------------------------------------


async def test_an_entry_a_dead_worker_took_is_delivered_once_by_another(
    redis: Redis, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    root_secret = b"q" * 32
    victims = _victims(redis, root_secret, center_key)
    runtime = ConversationRuntime(
        redis,
        flows,
        SessionStore(redis, root_secret, SESSION_TTL_S),
        _sender(redis, center_key),
        receipts=_hasher(),
        live=victims,
    )
    who = Pseudonym("victim-1")
    await runtime.handle(Inbound(who, "web", text="/start", language="en"))
    await runtime.handle(Inbound(who, "web", text="/human", language="en"))
    case_id, answers = await last_request(redis, center_key)
    ring = {keys.key_id(center_key.public_key()): center_key}
    console = Console(redis, ring, answers)
    await console.chat.ensure_relay_group()
    line_id = await console.say(case_id, COUNSELOR_SAYS)
    (taken,) = await console.chat.next_for_victims("dead-worker")  # and then it died

    relay = RelayWorker(
        redis, runtime, victims, {"web": victims.held}, "live-worker", claim_idle_ms=50, block_ms=50
    )
    task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _has(console, case_id, (EventKind.HELD, Sender.VICTIM, line_id)))
        await asyncio.sleep(0.3)  # time enough for a second delivery, were there one
    finally:
        relay.stop()
        await task
    held = await victims.held.take(who)
    assert [h.ref for h in held] == [line_id], "delivered exactly once"
    assert await redis.xlen(streams.RELAY_OUTBOX_STREAM) == 0, "acknowledged and removed"
    assert taken.ref == line_id


async def test_an_entry_that_cannot_be_carried_out_is_reported_not_retried(
    redis: Redis, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    root_secret = b"p" * 32
    victims = _victims(redis, root_secret, center_key)
    runtime = ConversationRuntime(
        redis,
        flows,
        SessionStore(redis, root_secret, SESSION_TTL_S),
        _sender(redis, center_key),
        receipts=_hasher(),
        live=victims,
    )
    chat = LiveChat(redis)
    await chat.ensure_relay_group()
    await redis.xadd(streams.RELAY_OUTBOX_STREAM, {"case": "x", "kind": "nonsense"})
    ghost = keys.generate_private_key()
    centre = center_key.public_key()
    line = new_line(Sender.COUNSELOR, "to nobody")
    await chat.from_counselor("case-gone", line, centre, ghost.public_key())
    relay = RelayWorker(redis, runtime, victims, {"web": victims.held}, "w", block_ms=50)
    task = asyncio.create_task(relay.run())
    try:
        ring = {keys.key_id(centre): center_key}
        failed = (EventKind.FAILED, Sender.VICTIM, line.id)
        await eventually(lambda: _has_ring(chat, "case-gone", ring, failed))
        await eventually(lambda: _empty(redis))
    finally:
        relay.stop()
        await task


async def _empty(redis: Redis) -> bool:
    return int(await redis.xlen(streams.RELAY_OUTBOX_STREAM)) == 0


async def _has_ring(
    chat: LiveChat,
    case_id: str,
    ring: dict[str, X25519PrivateKey],
    event: tuple[EventKind, Sender, str],
) -> bool:
    return event in await events(chat, case_id, ring)


def _sender(redis: Redis, centre: X25519PrivateKey) -> ReportSender:
    return ReportSender(redis, centre.public_key())


def _hasher() -> ReceiptHasher:
    return ReceiptHasher(b"r" * 32, b"s" * 16, FAST_KDF)


# -- KakaoTalk's callback: a counselor's line as soon as it is written ----------------------


class FakeKakaoCallbacks:
    """Kakao's callback endpoint over real HTTP: records every POSTed skill response and
    answers as Kakao does (or with `status`, to play a callback that fails)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        app = web.Application()
        app.router.add_post("/callback/{n}", self._callback)
        self.server = TestServer(app)
        self._made = 0

    async def _callback(self, request: web.Request) -> web.Response:
        await self.received.put(await request.json())
        if self.status != 200:
            return web.json_response({"status": "ERROR"}, status=self.status)
        return web.json_response({"taskId": "t", "status": "SUCCESS", "message": "OK"})

    def url(self) -> str:
        """A fresh callback URL, as Kakao gives one per request."""
        self._made += 1
        return str(self.server.make_url(f"/callback/{self._made}"))


@asynccontextmanager
async def kakao_callbacks(status: int = 200) -> AsyncIterator[FakeKakaoCallbacks]:
    fake = FakeKakaoCallbacks(status)
    async with fake.server:
        yield fake


async def waiting_on_kakao(
    hotline: RunningHotline, redis: Redis, engine: AsyncEngine
) -> tuple[str, Console]:
    """A Kakao victim who asked for a counselor, the counselor joined, the notices read."""
    await kakao_post(hotline, skill_request("hello"))
    await kakao_post(hotline, skill_request("/human"))
    case_id, console = await opened_request(hotline, redis, engine)
    await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
    await eventually(lambda: _held(redis))
    check = await kakao_post(hotline, skill_request("Check", button=CHECK_BUTTON))
    assert say("live.joined") in kakao_texts(check)
    return case_id, console


# The fake Kakao callback server listens on 127.0.0.1: the one callback host allowed here.
CALLBACK_WAIT = {
    "HOTLINE_KAKAO_CALLBACK_WAIT_MS": "3000",
    "HOTLINE_KAKAO_CALLBACK_HOSTS": "127.0.0.1",
}


async def test_kakao_counselor_line_comes_through_the_callback(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch_logs(caplog)
    async with composed(pair, tmp_path, CALLBACK_WAIT) as hotline, kakao_callbacks() as kakao:
        case_id, console = await waiting_on_kakao(hotline, redis, engine)

        answer = await kakao_post(hotline, skill_request(VICTIM_SAYS, callback_url=kakao.url()))
        assert answer["useCallback"] is True, "answered at once, the request kept open"
        assert answer["data"]["text"] == f"{say('live.sent')}\n\n{say('live.waiting_reply')}"
        line_id = await console.say(case_id, COUNSELOR_SAYS)
        posted = await asyncio.wait_for(kakao.received.get(), 5)
        assert kakao_texts(posted) == f"{say('live.counselor')}: {COUNSELOR_SAYS}"
        assert CHECK_BUTTON in kakao_quick(posted)
        got = await eventually(
            lambda: _has(console, case_id, (EventKind.DELIVERED, Sender.VICTIM, line_id))
        )
        assert got
        assert not await _held(redis), "handed out once"
        again = await kakao_post(hotline, skill_request("Check again", button=CHECK_BUTTON))
        assert kakao_texts(again) == say("live.no_replies"), "not shown a second time"

        # Nothing from the counselor within the wait: told so, with the button to look again.
        quiet = await kakao_post(hotline, skill_request("still there?", callback_url=kakao.url()))
        assert quiet["useCallback"] is True
        nothing = await asyncio.wait_for(kakao.received.get(), 6)
        assert kakao_texts(nothing) == say("live.no_replies")
        assert CHECK_BUTTON in kakao_quick(nothing)

        # She leaves while a request waits: nothing more appears in her chat.
        await kakao_post(hotline, skill_request("one more", callback_url=kakao.url()))
        await kakao_post(hotline, skill_request("/exit"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(kakao.received.get(), 4)
        assert await plaintext_in_redis(redis, MARKERS) == []
    assert_nothing_in_clear(caplog)


async def test_a_line_whose_callback_fails_comes_with_the_next_turn(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with (
        composed(pair, tmp_path, CALLBACK_WAIT) as hotline,
        kakao_callbacks(status=500) as kakao,
    ):
        case_id, console = await waiting_on_kakao(hotline, redis, engine)
        answer = await kakao_post(hotline, skill_request(VICTIM_SAYS, callback_url=kakao.url()))
        assert answer["useCallback"] is True
        line_id = await console.say(case_id, COUNSELOR_SAYS)
        refused = await asyncio.wait_for(kakao.received.get(), 5)
        assert COUNSELOR_SAYS in kakao_texts(refused), "the line was offered to the callback"
        await eventually(lambda: _held(redis))  # and put back
        got = await events(console.chat, case_id, console.ring)
        assert (EventKind.HELD, Sender.VICTIM, line_id) in got
        assert (EventKind.DELIVERED, Sender.VICTIM, line_id) not in got, "Kakao refused it"

        later = await kakao_post(hotline, skill_request("hello?"))
        assert kakao_texts(later) == f"{say('live.counselor')}: {COUNSELOR_SAYS}"
        await eventually(
            lambda: _has(console, case_id, (EventKind.DELIVERED, Sender.VICTIM, line_id))
        )


async def test_lines_a_dead_callback_sender_claimed_are_taken_by_the_next_turn(
    redis: Redis,
) -> None:
    held = HeldLines(redis, b"h" * 32, SESSION_TTL_S)
    who = Pseudonym("victim-claimed")
    await held.deliver(who, "case-1", [Outbound("first")], language="en", ref="l1")
    claimed = await held.claim(who)
    assert [line.text for line in claimed] == ["first"]
    await held.deliver(who, "case-1", [Outbound("second")], language="en", ref="l2")
    assert await held.take(who) == [HeldLine("case-1", "second", "l2")], "first is being sent"
    assert await held.claim(who) == [], "one sender at a time"
    await held.deliver(who, "case-1", [Outbound("third")], language="en", ref="l3")
    await held.unsent(who)
    assert [line.text for line in await held.claim(who)] == ["first", "third"], "in order"
    await redis.delete(streams.held_sending_lease_key(who))  # the sender died mid-POST
    assert [line.ref for line in await held.take(who)] == ["l1", "l3"], "not lost"


# -- while waiting for a counselor: her words are kept for them ----------------------------


async def test_a_waiting_victims_words_are_kept_for_the_counselor(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch_logs(caplog)
    async with composed(pair, tmp_path) as hotline:
        await web_turn(hotline, text="/start")
        await web_turn(hotline, text="/human")
        # After asking she is told what happens next (issue 18), at a step of buttons only.
        helped = await web_turn(hotline, button="resources")
        assert shown(helped)[0] == say("resources.intro"), "buttons still go to the flow"
        waiting = await web_turn(hotline, text=VICTIM_SAYS)
        assert shown(waiting) == [say("live.saved")], "kept, not a restart of the flow"
        assert waiting["relay"] is True

        await kakao_post(hotline, skill_request("hello"))
        await kakao_post(hotline, skill_request("/human"))
        kakao_said = "CANARY-피해-3b7e on kakao"
        kept = await kakao_post(hotline, skill_request(kakao_said))
        assert kakao_texts(kept) == say("live.saved")
        assert CHECK_BUTTON in kakao_quick(kept)

        queued = await eventually(lambda: _two(redis))
        cases = CaseStore(engine)
        ring = await KeyRing(engine, FAST_KDF).unwrap_with_recovery(hotline.recovery_key)
        chat = LiveChat(redis)
        said = [victim_lines(await chat.transcript(case.decode(), ring)) for case in queued]
        assert sorted(said) == sorted([[VICTIM_SAYS], [kakao_said]])
        await eventually(lambda: _stored(cases, 2))

        # Commands still go to the flow: /exit ends the wait, and the console is told.
        exited = await web_turn(hotline, text="/exit")
        assert exited["ended"] is True and exited["relay"] is False
        after = await web_turn(hotline, text="hello again")
        assert say("live.saved") not in shown(after), "no handoff open: the flow again"
        assert await plaintext_in_redis(redis, MARKERS) == []
    assert_nothing_in_clear(caplog)


async def _two(redis: Redis) -> list[bytes] | None:
    queued = cast(list[bytes], await redis.zrange(streams.HANDOFF_QUEUE, 0, -1))
    return queued if len(queued) == 2 else None


async def _stored(cases: CaseStore, count: int) -> bool:
    return len(await cases.list_open()) >= count
