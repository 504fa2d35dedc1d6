"""Under Telegram's outbound cap, safety conversations' replies go first (issue 14).

In a surge the bot's cap (30 messages a second) is the bottleneck, and replies wait for it.
A victim who writes that she wants to die must not wait behind every ordinary reply asked for
before her: the shared gate hands the bot's slots out by the conversation's triage level, then
by age. Here, on the fake Bot API enforcing the cap with 429s, ordinary victims start their
conversations and fill the line; then a victim in danger writes; her replies go out while most
of the ordinary ones still wait, and every reply still goes out once, in its chat's order.

Also: the webhook asks Telegram for its most connections (setWebhook's max_connections), so a
surge is not throttled to Telegram's default of 40 conversations at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.settings import Settings
from backend.flows.registry import FlowRegistry
from bot.telegram.door import TelegramConfig
from bot.telegram.outbox import OutboxLimits
from bot.telegram.shared_limits import SharedRateLimits
from tests import telegram_support
from tests.fake_telegram import ApiCall, FakeTelegram, SendLimits
from tests.telegram_support import TOKEN, USER_ID, Victim, make_runtime, running_door, say

center_key = telegram_support.center_key
flows = telegram_support.flows

# Telegram's shape at a sixth of its pace, so a line builds up within a second.
LIMITS = OutboxLimits(
    per_chat_per_s=1.0, per_chat_burst=3, per_bot_per_s=5.0, per_bot_burst=5, backoff_s=0.01
)
ORDINARY = 12  # two replies each (welcome, then consent): five windows of the bot's cap
DANGER = "I want to die"


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    # Counted where calls arrive, a little shorter than the outbox's windows: HTTP jitter moves
    # an arrival by milliseconds, and a 429 retried after its `retry_after` would come after
    # hers whatever the order (the retry itself is the reliability tests' to check).
    limits = SendLimits(per_bot=5, bot_window_s=0.8, per_chat=3, chat_window_s=2.5)
    async with FakeTelegram(TOKEN, max_hold_s=0.3, send_limits=limits) as fake:
        yield fake


def _sent(telegram: FakeTelegram) -> list[ApiCall]:
    """The messages Telegram took (not those it answered 429)."""
    return [c for c in telegram.calls_to("sendMessage") if c.result is not None]


def _welcomes(calls: list[ApiCall]) -> int:
    """How many of these calls are a conversation's first reply."""
    return sum(1 for c in calls if c.params["text"] == say("safety.welcome"))


async def _until_answered(telegram: FakeTelegram, victims: list[Victim], replies: int) -> None:
    """Until each of `victims` got at least `replies` messages."""
    chats = [v.chat["id"] for v in victims]
    async with asyncio.timeout(20):
        while True:
            sent = [c.json("chat_id") for c in _sent(telegram)]
            if all(sent.count(chat) >= replies for chat in chats):
                return
            await asyncio.sleep(0.02)


async def test_a_safety_reply_goes_before_ordinary_replies_queued_earlier(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    ordinary = [Victim(telegram, "en", USER_ID + n, f"Name{n}") for n in range(ORDINARY)]
    danger = Victim(telegram, "en", USER_ID + ORDINARY, "Danger")
    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door("webhook", redis, telegram, runtime, root_secret, limits=LIMITS):
        for victim in ordinary:
            await telegram.send_text(victim.user, victim.chat, "/start")
        # Every ordinary turn has stepped (answered 200): its replies wait in the line.
        await telegram.wait_for_webhook_answers(ORDINARY)
        welcomed = _welcomes(_sent(telegram))
        await telegram.send_text(danger.user, danger.chat, DANGER)
        await _until_answered(telegram, ordinary, 2)
        await _until_answered(telegram, [danger], 1)
        sent = _sent(telegram)

    to_danger = [i for i, c in enumerate(sent) if c.json("chat_id") == danger.chat["id"]]
    assert to_danger, "the victim in danger was answered"
    assert sent[to_danger[0]].params["text"] == say("safety.emergency")
    # Each ordinary turn asked for its welcome as it stepped, before she wrote; the cap held
    # most of them back. First come, first served, every one of those would go before hers.
    waiting = ORDINARY - welcomed
    assert waiting >= ORDINARY // 2, "the cap held the ordinary replies back"
    # One or two may take their slots while her turn steps (her handoff is sealed first).
    after = _welcomes([c for c in sent[to_danger[0] :] if c.json("chat_id") != danger.chat["id"]])
    assert after >= waiting - 2, f"{after} of {waiting} earlier ordinary replies went after hers"
    for victim in ordinary:
        mine = [c.params["text"] for c in sent if c.json("chat_id") == victim.chat["id"]]
        assert mine == [say("safety.welcome"), say("report.consent")], "once each, in order"


async def test_the_webhook_asks_telegram_for_100_connections(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door("webhook", redis, telegram, runtime, root_secret):
        (call,) = telegram.calls_to("setWebhook")
    assert call.json("max_connections") == 100
    assert telegram.webhook_max_connections == 100


def test_the_webhook_connections_come_from_the_settings(tmp_path: object) -> None:
    env = {
        "HOTLINE_DATA_DIR": str(tmp_path),
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_WEBHOOK_MAX_CONNECTIONS": "60",
    }
    settings = Settings.from_env(env)
    assert TelegramConfig.from_settings(settings).webhook_max_connections == 60
    default = Settings.from_env({k: v for k, v in env.items() if "MAX_CONN" not in k})
    assert TelegramConfig.from_settings(default).webhook_max_connections == 100


GATE_LIMITS = OutboxLimits(per_chat_per_s=1.0, per_chat_burst=3, per_bot_per_s=5.0, per_bot_burst=5)
BOT_ID = 123456


def _gate(redis: Redis) -> SharedRateLimits:
    return SharedRateLimits(redis, BOT_ID, GATE_LIMITS, lambda chat: f"chat-{chat}")


async def test_a_dead_workers_waiters_do_not_hold_the_line(redis: Redis) -> None:
    """A worker killed while its sends waited leaves their places behind, ahead of everyone
    (the highest priority); they are forgotten once silent, or the bot would never send again."""
    line = redis_keys.telegram_rate_key(BOT_ID, "queue")
    seen = redis_keys.telegram_rate_key(BOT_ID, "seen")
    dead = [f"dead-{n}" for n in range(GATE_LIMITS.per_bot_burst)]
    silent_ms = int(time.time() * 1000) - redis_keys.TELEGRAM_RATE_WAITER_STALE_MS - 1000
    await redis.zadd(line, dict.fromkeys(dead, 0))
    await redis.zadd(seen, dict.fromkeys(dead, silent_ms))
    async with asyncio.timeout(5):
        assert await _gate(redis).wait(1)
    assert await redis.zcard(line) == 0


async def test_a_dropped_send_leaves_the_line_at_once(redis: Redis) -> None:
    """A quick exit drops a send waiting for the bot's window: its place goes with it, not only
    after it fell silent, or it would stand before every later send of its priority."""
    gate = _gate(redis)
    for chat in range(GATE_LIMITS.per_bot_burst):  # the bot's window is full
        assert await gate.wait(chat)
    line = redis_keys.telegram_rate_key(BOT_ID, "queue")
    abandoned = asyncio.Event()
    waiting = asyncio.create_task(gate.wait(99, abandoned=abandoned, priority=3))
    for _ in range(500):  # until it stands in the line
        if await redis.zcard(line):
            break
        await asyncio.sleep(0.01)
    assert await redis.zcard(line) == 1
    abandoned.set()
    assert await waiting is False
    assert await redis.zcard(line) == 0
