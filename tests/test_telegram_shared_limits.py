"""Telegram's outbound limits hold over every bot worker, not per process (issue 14).

Two doors (two workers' runtimes and outboxes) on one Redis send to the same chats at once,
each on its own well within the limits; the fake Bot API sees their sum, and the sum keeps to
them. Without the shared windows each worker would keep to the limits alone and the sum would be
about twice the bot's rate.
"""

from __future__ import annotations

import asyncio

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import redis_keys
from backend.flows.registry import FlowRegistry
from bot.telegram.door import TelegramDoor
from bot.telegram.outbox import OutboxLimits
from bot.telegram.shared_limits import SharedRateLimits
from tests import telegram_support
from tests.fake_telegram import ApiCall, FakeTelegram
from tests.telegram_support import USER_ID, Victim, make_runtime, running_door

center_key = telegram_support.center_key
flows = telegram_support.flows
telegram = telegram_support.telegram

# Telegram's shape, scaled to keep the test short: 10 a second per bot, 2 per 2 s per chat.
LIMITS = OutboxLimits(
    per_chat_per_s=1.0, per_chat_burst=2, per_bot_per_s=10.0, per_bot_burst=10, backoff_s=0.01
)
CHATS = 10
PER_DOOR = 25
# Sends are counted where they arrive: HTTP jitter moves an arrival by milliseconds, and by
# a few hundred on a loaded 2-core CI machine, so a window is checked shorter than the limit's.
# Without the shared windows the two workers sent 28 in a bot window of 10, far past this slack.
JITTER_S = 0.3


def _most_in_any_window(calls: list[ApiCall], window_s: float) -> int:
    times = sorted(call.at for call in calls)
    return max(sum(1 for t in times[i:] if t < start + window_s) for i, start in enumerate(times))


async def _send_all(door: TelegramDoor, name: str, chats: list[int]) -> None:
    await asyncio.gather(
        *(door.outbox.send(chats[n % len(chats)], f"{name} {n}") for n in range(PER_DOOR))
    )


async def test_two_workers_together_keep_to_the_bot_and_chat_limits(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    victims = [Victim(telegram, "en", USER_ID + n, f"Name{n}") for n in range(CHATS)]
    chats = [victim.chat["id"] for victim in victims]
    first_runtime, root_secret = make_runtime(redis, flows, center_key)
    second_runtime, _ = make_runtime(redis, flows, center_key)
    # Every worker of a deployment shares the bot secret, so they name a chat alike.
    async with (
        running_door("webhook", redis, telegram, first_runtime, root_secret, limits=LIMITS) as a,
        running_door("webhook", redis, telegram, second_runtime, root_secret, limits=LIMITS) as b,
    ):
        for victim in victims:  # each opens their chat with the bot
            await victim.say("/start", replies=2)
        seen = len(telegram.calls_to("sendMessage"))
        await asyncio.gather(_send_all(a, "a", chats), _send_all(b, "b", chats))

    sent = telegram.calls_to("sendMessage")[seen:]
    assert sorted(call.params["text"] for call in sent) == sorted(
        f"{name} {n}" for name in "ab" for n in range(PER_DOOR)
    ), "every message went out"
    assert _most_in_any_window(sent, 1.0 - JITTER_S) <= LIMITS.per_bot_burst
    for chat in chats:
        to_chat = [call for call in sent if call.json("chat_id") == chat]
        assert _most_in_any_window(to_chat, 2.0 - JITTER_S) <= LIMITS.per_chat_burst
    # The windows are kept under the chats' rate-limit pseudonyms, never their ids.
    kept = b" ".join([key async for key in redis.scan_iter(f"{redis_keys.PREFIX}*")])
    assert b"telegram:rate" in kept
    assert not [chat for chat in chats if str(chat).encode() in kept]


async def test_a_full_chat_window_takes_no_slot_of_the_bot(redis: Redis) -> None:
    """Both windows are taken in one step, or neither: a send that waits for its chat's window
    leaves the bot's to the other chats (it used to take the bot's slot first, and waste it)."""
    gate = SharedRateLimits(redis, 7, LIMITS, lambda chat_id: f"chat{chat_id}")
    assert await gate.wait(1) and await gate.wait(1), "the chat's burst of 2"
    given_up = asyncio.Event()
    given_up.set()

    assert not await gate.wait(1, abandoned=given_up), "the chat's window is full"

    bot_window = redis_keys.telegram_rate_key(7, "bot")
    assert await redis.zcard(bot_window) == 2, "no bot slot taken for the send that waits"
    for other in range(2, 10):
        assert await gate.wait(other, abandoned=given_up), "the bot's other 8 slots are free"
    assert not await gate.wait(11, abandoned=given_up), "and then the bot's window is full"
