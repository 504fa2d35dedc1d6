"""The Telegram door under stress: order and concurrency, duplicates, Telegram's errors and
limits, a blocked bot, a forged webhook, and updates that are malformed or not for the bot.

Each test drives the real `Application` over HTTP against the fake Bot API, in polling and in
webhook mode unless it is about one of them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import redis_keys as streams
from backend.core.conversation import Inbound
from backend.flows.registry import FlowRegistry
from bot.runtime import ConversationRuntime, Turn
from bot.telegram.dedupe import Claim, UpdateDedupe
from bot.telegram.door import SECRET_HEADER, TelegramDoor
from bot.telegram.outbox import OutboxLimits, TelegramOutbox, _Bucket
from tests import telegram_support
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import (
    CANARY_NAME,
    CANARY_TEXT,
    HAPPY_PATH,
    TOKEN,
    USER_ID,
    WEBHOOK_SECRET,
    Victim,
    all_match,
    make_runtime,
    reports,
    running_door,
    say,
    texts,
)

center_key = telegram_support.center_key
door = telegram_support.door
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram


class _WatchedRuntime(ConversationRuntime):
    """The real runtime, slowed a little and watched: how many turns run at once, per chat and
    overall. The pause makes overlap certain wherever the door allows it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: dict[str, int] = {}
        self.most_per_chat = 0
        self.most_overall = 0

    async def handle(self, inbound: Inbound, **kwargs: Any) -> Turn:
        self.running[inbound.pseudonym] = self.running.get(inbound.pseudonym, 0) + 1
        self.most_per_chat = max(self.most_per_chat, self.running[inbound.pseudonym])
        self.most_overall = max(self.most_overall, sum(self.running.values()))
        try:
            await asyncio.sleep(0.05)
            return await super().handle(inbound, **kwargs)
        finally:
            self.running[inbound.pseudonym] -= 1


async def test_one_chat_in_order_many_chats_at_once(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    base, root_secret = make_runtime(redis, flows, center_key)
    runtime = _WatchedRuntime(
        base._redis, base._flows, base._sessions, base._reports, receipts=base._receipts
    )
    chats = 4
    async with running_door(mode, redis, telegram, runtime, root_secret):
        victims = [Victim(telegram, "en", USER_ID + i, f"Name{i}") for i in range(chats)]
        # Every victim fires the whole happy path at once, without waiting for a reply: only
        # if each chat's updates are handled in order does every step meet the right state.
        placeholder = {"message_id": 10_000, "date": 0, "text": "?"}
        for action, value, _keys in HAPPY_PATH:
            for victim in victims:
                if action == "say":
                    await telegram.send_text(victim.user, victim.chat, value)
                else:
                    message = {**placeholder, "from": telegram.me, "chat": victim.chat}
                    await telegram.press(victim.user, message, value)
        expected = [key for _action, _value, keys_ in HAPPY_PATH for key in keys_]
        await telegram.wait_for("sendMessage", chats * len(expected), timeout_s=15)
        for victim in victims:
            mine = [
                c
                for c in telegram.calls_to("sendMessage")
                if c.json("chat_id") == victim.chat["id"]
            ]
            assert all_match(texts(mine), expected)
    assert len(await reports(redis)) == chats
    assert runtime.most_per_chat == 1, "one chat's turns never overlap"
    assert runtime.most_overall > 1, "different chats' turns do"


async def test_a_redelivered_update_is_processed_once_across_a_restart(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    async with running_door(mode, redis, telegram, runtime, root_secret):
        _welcome, consent = await victim.walk(1)
    first_start = telegram.delivered[-1]["update_id"]
    # The stopped worker's last long poll is still held by the server; once it returns, its
    # offset can no longer confirm (and so hide) what is redelivered below.
    await asyncio.sleep(telegram.max_hold_s + 0.1)
    polls_before = len(telegram.calls_to("getUpdates"))
    async with running_door(mode, redis, telegram, runtime, root_secret):
        await telegram.redeliver(first_start)  # e.g. the offset was never confirmed
        (category,) = await victim.press(consent, "agree", replies=1)
        assert category.params["text"] == say("report.category")
    redelivered = [u for u in telegram.delivered if u["update_id"] == first_start]
    assert len(redelivered) == 2
    if mode == "polling":
        polls = telegram.calls_to("getUpdates")[polls_before:]
        fetched = [u["update_id"] for c in polls for u in c.result or []]
        assert first_start in fetched, "the new worker really was given it again"
    assert texts(telegram.calls_to("sendMessage")).count(say("safety.welcome")) == 1


@pytest.mark.parametrize("mode", ["webhook"])
async def test_two_workers_given_the_same_update_answer_once(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    async with running_door(mode, redis, telegram, runtime, root_secret):
        first_url = telegram.webhook_url
        async with running_door(mode, redis, telegram, runtime, root_secret):
            second_url = telegram.webhook_url
            assert first_url and second_url and first_url != second_url
            update = {
                "update_id": 777,
                "message": telegram._message(victim.chat, victim.user, "/start"),
            }
            headers = {SECRET_HEADER: WEBHOOK_SECRET}
            async with aiohttp.ClientSession() as http:

                async def post(url: str) -> int:
                    async with http.post(url, json=update, headers=headers) as response:
                        return response.status

                statuses = await asyncio.gather(post(first_url), post(second_url))
                # One worker handles it; the other is told to let Telegram try again later,
                # and that later copy is dropped as done.
                assert sorted(statuses) in ([200, 200], [200, 503])
                assert await post(second_url) == 200
            await telegram.wait_for("sendMessage", 2)
            await asyncio.sleep(0.3)  # a second worker's duplicate replies would show now
    assert texts(telegram.calls_to("sendMessage")) == [say("safety.welcome"), say("report.consent")]


@pytest.mark.usefixtures("door")
async def test_a_429_waits_retry_after_and_the_message_still_arrives(
    telegram: FakeTelegram,
) -> None:
    telegram.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", {"retry_after": 1})
    victim = Victim(telegram, "en")
    refused, welcome, consent = await victim.say("/start", replies=3)
    assert refused.result is None
    assert texts([welcome, consent]) == [say("safety.welcome"), say("report.consent")]
    assert welcome.params["text"] == refused.params["text"], "the same message, sent again"
    assert welcome.at - refused.at >= 0.95, "it waited the retry_after Telegram asked for"


@pytest.mark.usefixtures("door")
async def test_5xx_and_network_errors_are_retried_with_back_off(
    telegram: FakeTelegram,
) -> None:
    telegram.fail_next("sendMessage", 502, "Bad Gateway")
    telegram.fail_next("sendMessage", 500, "Internal Server Error")
    victim = Victim(telegram, "en")
    first, second, welcome, consent = await victim.say("/start", replies=4)
    assert [first.result, second.result] == [None, None]
    assert texts([welcome, consent]) == [say("safety.welcome"), say("report.consent")]
    assert say("common.unavailable") not in texts(telegram.calls_to("sendMessage"))


async def test_the_outbox_keeps_to_the_per_chat_and_per_bot_rates(
    door: TelegramDoor, telegram: FakeTelegram
) -> None:
    victims = [Victim(telegram, "en", USER_ID + i, f"Name{i}") for i in range(2)]
    for victim in victims:
        await victim.walk(1)
    seen = len(telegram.calls_to("sendMessage"))
    per_chat = TelegramOutbox(
        door.application.bot,
        OutboxLimits(per_chat_per_s=20, per_chat_burst=1, per_bot_per_s=1000, per_bot_burst=50),
    )
    await asyncio.gather(*(per_chat.send(USER_ID, f"paced {i}") for i in range(4)))
    paced = telegram.calls_to("sendMessage")[seen:]
    # The pacing itself is checked on the bucket (test_a_bucket_spaces_reservations_...):
    # arrival times at the fake carry HTTP jitter, so here only what arrived, in order.
    assert len(paced) == 4
    assert texts(paced) == [f"paced {i}" for i in range(4)], "in the order they were given"

    seen = len(telegram.calls_to("sendMessage"))
    per_bot = TelegramOutbox(
        door.application.bot,
        OutboxLimits(per_chat_per_s=1000, per_chat_burst=50, per_bot_per_s=20, per_bot_burst=1),
    )
    chats = [v.chat["id"] for v in victims] * 2
    await asyncio.gather(*(per_bot.send(chat, "bot-wide") for chat in chats))
    paced = telegram.calls_to("sendMessage")[seen:]
    assert len(paced) == 4
    assert sorted(c.json("chat_id") for c in paced) == sorted(chats)


def test_a_bucket_spaces_reservations_at_its_rate_after_its_burst() -> None:
    bucket = _Bucket(rate_per_s=20, burst=2)
    waits = [bucket.reserve() for _ in range(5)]
    # Two free, then one every 1/20 s; the clock moves a little between calls, never back.
    assert waits[:2] == [0.0, 0.0]
    for n, wait in enumerate(waits[2:], start=1):
        assert n * 0.05 - 0.005 <= wait <= n * 0.05


@pytest.mark.usefixtures("door")
async def test_a_victim_who_blocked_the_bot_ends_the_session_and_is_flagged(
    telegram: FakeTelegram, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bot")
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.walk(1)
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    telegram.blocked_by.add(USER_ID)
    answered = len(telegram.calls_to("answerCallbackQuery"))
    sent = len(telegram.calls_to("sendMessage"))
    await telegram.press(victim.user, consent.result, "agree")
    await telegram.wait_for("answerCallbackQuery", answered + 1)
    await telegram.wait_for("sendMessage", sent + 1)  # refused: 403
    for _ in range(100):
        if "flag: blocked" in caplog.text:
            break
        await asyncio.sleep(0.02)
    assert "flag: blocked" in caplog.text
    for prefix in (streams.SESSION_KEY_PREFIX, streams.TELEGRAM_CHAT_PREFIX):
        assert not [k async for k in redis.scan_iter(match=prefix + "*")]
    assert len(telegram.calls_to("sendMessage")) == sent + 1, "no retry, no notice to no one"
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.usefixtures("door")
async def test_a_block_announced_by_my_chat_member_ends_the_session(
    telegram: FakeTelegram, redis: Redis
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk(1)
    bot_user = {"id": telegram.bot_id, "is_bot": True, "first_name": "Hotline Test"}
    await telegram.queue_raw(
        {
            "my_chat_member": {
                "chat": victim.chat,
                "from": victim.user,
                "date": 0,
                "old_chat_member": {"status": "member", "user": bot_user},
                "new_chat_member": {"status": "kicked", "user": bot_user, "until_date": 0},
            }
        }
    )
    # The session goes first, the chat record last (after the cases are flagged): wait for both.
    prefixes = (streams.SESSION_KEY_PREFIX, streams.TELEGRAM_CHAT_PREFIX)
    for _ in range(250):
        if not [k for p in prefixes async for k in redis.scan_iter(match=p + "*")]:
            break
        await asyncio.sleep(0.02)
    assert not [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    assert not [k async for k in redis.scan_iter(match=streams.TELEGRAM_CHAT_PREFIX + "*")]


@pytest.mark.parametrize("mode", ["webhook"])
@pytest.mark.parametrize(
    ("secret", "status"), [(None, 401), ("wrong-secret-0123456789", 403), ("", 403)]
)
async def test_a_webhook_call_without_the_right_secret_is_refused_and_does_nothing(
    door: TelegramDoor,
    telegram: FakeTelegram,
    redis: Redis,
    secret: str | None,
    status: int,
) -> None:
    assert telegram.webhook_url is not None
    assert telegram.webhook_secret == WEBHOOK_SECRET, "setWebhook carried the secret"
    victim = Victim(telegram, "en")
    update = {"update_id": 5, "message": telegram._message(victim.chat, victim.user, "/start")}
    headers = {} if secret is None else {SECRET_HEADER: secret}
    async with (
        aiohttp.ClientSession() as http,
        http.post(telegram.webhook_url, json=update, headers=headers) as response,
    ):
        assert response.status == status
    await asyncio.sleep(0.2)  # anything processed would show now
    assert telegram.calls_to("sendMessage") == []
    assert [k async for k in redis.scan_iter()] == []


@pytest.mark.parametrize("mode", ["webhook"])
async def test_a_webhook_body_that_is_not_json_is_a_400(
    door: TelegramDoor, telegram: FakeTelegram
) -> None:
    assert telegram.webhook_url is not None
    headers = {SECRET_HEADER: WEBHOOK_SECRET, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(telegram.webhook_url, data=b"{not json", headers=headers) as response,
    ):
        assert response.status == 400


@pytest.mark.usefixtures("door")
async def test_malformed_unknown_and_foreign_updates_pass_quietly(
    telegram: FakeTelegram, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    victim = Victim(telegram, "en")
    channel = {"id": -100999, "type": "channel", "title": "A channel"}
    stranger = telegram.user(USER_ID + 1, CANARY_NAME)
    for update in (
        {"message": f"not an object {CANARY_TEXT}"},  # malformed: PTB cannot parse it
        {"message": {"message_id": "x", "chat": CANARY_TEXT, "text": CANARY_TEXT}},
        {"a_kind_from_the_future": {"text": CANARY_TEXT}},  # unknown
        {},  # nothing at all
        {"inline_query": {"id": "iq-1", "from": stranger, "query": CANARY_TEXT, "offset": ""}},
        {
            "channel_post": {
                "message_id": 1,
                "chat": channel,
                "date": 0,
                "text": CANARY_TEXT,
            }
        },
        {
            "callback_query": {  # a press on an inline message: no chat to answer in
                "id": "cbq-inline",
                "from": stranger,
                "chat_instance": "1",
                "inline_message_id": "im-1",
                "data": "agree",
            }
        },
        {"message": {"message_id": 3, "date": 0, "chat": victim.chat, "text": "no sender"}},
    ):
        await telegram.queue_raw(update)

    # The bot is not stuck behind them: the victim is answered as usual.
    await victim.walk(1)
    (inline,) = await telegram.wait_for("answerInlineQuery", 1)
    assert inline.json("results") == []
    assert inline.json("button")["start_parameter"] == "start"
    # Updates of different chats (and of none) are delivered over several connections at once.
    assert len(await telegram.wait_for("answerCallbackQuery", 1)) == 1
    left = await telegram.wait_for("leaveChat", 1)
    assert [c.json("chat_id") for c in left] == [channel["id"]]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert CANARY_TEXT not in caplog.text
    assert await redis.xlen(streams.REPORTS_STREAM) == 0


@pytest.mark.parametrize("mode", ["webhook"])
async def test_a_webhook_update_is_acknowledged_only_once_stepped_and_survives_a_dead_worker(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    update = {"update_id": 4242, "message": telegram._message(victim.chat, victim.user, "/start")}
    # Another worker took the update and died mid-turn: its claim is held, nothing was done.
    dead_worker = UpdateDedupe(redis, int(TOKEN.split(":", 1)[0]), lease_s=1)
    assert await dead_worker.claim(4242) is Claim.MINE
    async with running_door(mode, redis, telegram, runtime, root_secret):
        assert telegram.webhook_url is not None
        headers = {SECRET_HEADER: WEBHOOK_SECRET}
        async with aiohttp.ClientSession() as http:

            async def post() -> int:
                assert telegram.webhook_url is not None
                async with http.post(telegram.webhook_url, json=update, headers=headers) as r:
                    return r.status

            assert await post() == 503, "held by another worker: Telegram is to try again"
            assert telegram.calls_to("sendMessage") == []
            await asyncio.sleep(1.2)  # the dead worker's lease runs out
            assert await post() == 200
            # The 200 came only after the turn's step (issue 12: not after its replies, which
            # go out at Telegram's pace and would hold back the chat's next update, /exit too).
            sent = await telegram.wait_for("sendMessage", 2)
            assert texts(sent) == [say("safety.welcome"), say("report.consent")]
            for _ in range(100):  # the replies' record marks the update done
                if await redis.get(dead_worker.done_key(4242)) == b"done":
                    break
                await asyncio.sleep(0.02)
            assert await post() == 200, "a later copy is dropped as done"
    assert len(telegram.calls_to("sendMessage")) == 2
