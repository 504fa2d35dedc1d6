"""Quick exit jumps every queue (issue 12, point 1): a victim who clicked quickly through many
prompts, or whose counselor wrote a burst of lines, has replies queued at Telegram's pace of
about one a second; her /exit must not wait behind them. Telegram's real limits here, on the
fake Bot API: the queued replies are dropped, the chat is erased at once, and another chat's
replies still go out.

The 1 s bound is the issue's; the failure it guards against took 10 to 20 s (the queue drained
at one message a second), so the bound is far from both.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys
from backend.core.live_chat import OutboxKind, Sender
from backend.flows.registry import FlowRegistry
from bot.telegram.door import QUICK_EXIT_BUTTON
from bot.telegram.outbox import OutboxLimits
from tests import telegram_support
from tests.fake_telegram import ApiCall, FakeTelegram
from tests.telegram_support import EXIT_NOTICE_S, USER_ID, Victim, make_runtime, running_door, say
from tests.test_live_chat import (
    RELAY_ROOT_SECRET,
    Console,
    last_request,
    live_runtime,
    telegram_relay,
)

center_key = telegram_support.center_key
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram

# Telegram's own pace (one message a second per chat, bursts of three); retries kept short.
TELEGRAM_PACE = OutboxLimits(max_attempts=3, backoff_s=0.01)
QUEUED = 30
EXIT_WITHIN_S = 1.0
# Long enough for two more paced replies: a queued one not dropped would show.
PACE_S = 2.5
# Between the worker's own pace (1 s) and the shared window's (3 s), far longer than the
# spread of one of the window's releases (milliseconds).
QUIET_S = 1.8


def _to(calls: list[ApiCall], chat_id: int) -> list[ApiCall]:
    return [c for c in calls if c.json("chat_id") == chat_id]


async def _sent_to(telegram: FakeTelegram, chat_id: int, count: int) -> list[ApiCall]:
    for _ in range(200):
        found = _to(telegram.calls_to("sendMessage"), chat_id)
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} messages to the chat")


async def _between_releases(telegram: FakeTelegram, chat_id: int, count: int) -> None:
    """Until at least `count` replies went, the last `QUIET_S` ago. The chat's shared window
    (3 per 3 s) lets queued replies out three at a time; an exit sent as the first of three
    arrives would race the other two, which leave before the bot can know of it (they are
    deleted with the rest, not dropped). `QUIET_S` after a release, the next reply has been
    paced by the worker's own bucket (1 s) and waits in the shared window: where a send must
    be dropped from, too."""
    while True:
        sent = _to(telegram.calls_to("sendMessage"), chat_id)
        if len(sent) >= count and time.monotonic() - sent[-1].at >= QUIET_S:
            return
        await asyncio.sleep(0.02)


async def _notice(telegram: FakeTelegram, chat_id: int) -> ApiCall:
    for _ in range(200):
        said = [
            c
            for c in _to(telegram.calls_to("sendMessage"), chat_id)
            if c.params["text"] == say("safety.exit")
        ]
        if said:
            (notice,) = said
            return notice
        await asyncio.sleep(0.05)
    raise AssertionError("no exit notice")


async def _exit_jumps_the_queue(telegram: FakeTelegram, victim: Victim, how: str) -> None:
    """With replies queued for the victim's chat: exit, and check it jumped every queue."""
    chat = victim.chat["id"]
    queued_before = len(_to(telegram.calls_to("sendMessage"), chat))
    deletes = len(telegram.calls_to("deleteMessages"))
    started = time.monotonic()
    if how == "button":
        # The last message of every turn carries the button; a turn's first may have just
        # come after it (the shared chat window lets queued replies out three at a time).
        sent = _to(telegram.calls_to("sendMessage"), chat)
        last = next(c for c in reversed(sent) if QUICK_EXIT_BUTTON in c.callback_data())
        assert sent.index(last) >= len(sent) - 2, "the latest turn's last message has it"
        await telegram.press(victim.user, last.result, QUICK_EXIT_BUTTON)
    else:
        victim.sent.append(await telegram.send_text(victim.user, victim.chat, "/exit"))
    first = (await telegram.wait_for("deleteMessages", deletes + 1))[deletes]
    assert first.at - started < EXIT_WITHIN_S, f"first delete after {first.at - started:.2f} s"

    notice = await _notice(telegram, chat)
    await telegram.wait_for("deleteMessages", deletes + 2, timeout_s=EXIT_NOTICE_S + 10)
    await asyncio.sleep(PACE_S)
    after_exit = [c for c in _to(telegram.calls_to("sendMessage"), chat) if c.at >= started]
    assert after_exit == [notice], "no queued reply went out after the exit, only its notice"
    assert len(_to(telegram.calls_to("sendMessage"), chat)) - queued_before == 1
    assert telegram.messages_in(chat) == [], "every message of both sides is deleted"


@pytest.mark.parametrize("how", ["command", "button"])
async def test_exit_drops_30_queued_replies_and_erases_at_once(
    mode: str,
    *,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
    how: str,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door(
        mode, redis, telegram, runtime, root_secret, limits=TELEGRAM_PACE
    ) as _door:
        victim = Victim(telegram, "en")
        other = Victim(telegram, "en", user_id=USER_ID + 1)
        for _ in range(QUEUED // 2):  # each /start: the welcome and the consent question
            victim.sent.append(await telegram.send_text(victim.user, victim.chat, "/start"))
        await _between_releases(telegram, victim.chat["id"], 4)  # the burst went; the rest waits
        await other.say("/start", replies=0)
        assert len(_to(telegram.calls_to("sendMessage"), victim.chat["id"])) < QUEUED // 2
        await _exit_jumps_the_queue(telegram, victim, how)
        assert len(await _sent_to(telegram, other.chat["id"], 2)) == 2, "others' replies go"


async def test_exit_in_a_live_chat_drops_the_counselors_queued_lines(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    async with telegram_relay(redis, telegram, flows, center_key, TELEGRAM_PACE):
        victim = Victim(telegram, "en")
        await victim.say("/start", replies=2)
        await victim.say("/human", replies=2)
        case_id, answers = await last_request(redis, center_key)
        console = Console(redis, {keys.key_id(center_key.public_key()): center_key}, answers)
        await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
        for n in range(QUEUED):
            await console.say(case_id, f"line {n}")
        await _between_releases(telegram, victim.chat["id"], 6)
        await telegram.send_text(victim.user, victim.chat, "I am still here")
        await _exit_jumps_the_queue(telegram, victim, "command")


# One message a chat every 2 s: a victim's replies wait seconds for their slots.
SLOW_CHAT = OutboxLimits(per_chat_per_s=0.5, per_chat_burst=1, max_attempts=3, backoff_s=0.01)
STARTS = 3


async def test_an_exit_through_another_worker_drops_the_replies_waiting_here(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    """Behind a load balancer one chat's updates reach any worker (issue 14): her replies wait
    for their slots on one worker, and her /exit reaches another, whose epoch the first cannot
    see. Nothing of them goes out after the exit, and what went out before it, and her own
    messages, are deleted too: the second worker's erase could not know them yet."""
    first, root_secret = make_runtime(redis, flows, center_key)
    second, _ = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    chat = victim.chat["id"]
    async with running_door("webhook", redis, telegram, first, root_secret, limits=SLOW_CHAT):
        for _ in range(STARTS):  # each: the welcome and the consent question
            victim.sent.append(await telegram.send_text(victim.user, victim.chat, "/start"))
        await telegram.wait_for_webhook_answers(STARTS)
        await _sent_to(telegram, chat, 1)
        # Its setWebhook sends her next update to the second worker.
        async with running_door("webhook", redis, telegram, second, root_secret, limits=SLOW_CHAT):
            started = time.monotonic()
            victim.sent.append(await telegram.send_text(victim.user, victim.chat, "/exit"))
            notice = await _notice(telegram, chat)
            # Two more of the chat's slots: a reply still waiting would go out now.
            await asyncio.sleep(2 / SLOW_CHAT.per_chat_per_s + 0.5)
            replies = _to(telegram.calls_to("sendMessage"), chat)
            after_exit = [c for c in replies if c.at >= started]
            assert after_exit == [notice], "nothing of the first worker's went out after it"
            assert len(replies) < 2 * STARTS, "replies were waiting when she left"
            await asyncio.sleep(EXIT_NOTICE_S)
            assert telegram.messages_in(chat) == [], "every message of both sides is deleted"


async def test_an_exit_through_another_worker_drops_the_counselors_lines_waiting_here(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    """The same in a live chat: the counselor's lines wait for their slots on the worker whose
    relay delivers them, and her /exit reaches another worker."""
    async with telegram_relay(
        redis, telegram, flows, center_key, TELEGRAM_PACE, mode="webhook"
    ) as (_door, _relay, _victims):
        victim = Victim(telegram, "en")
        chat = victim.chat["id"]
        await victim.say("/start", replies=2)
        await victim.say("/human", replies=2)
        case_id, answers = await last_request(redis, center_key)
        console = Console(redis, {keys.key_id(center_key.public_key()): center_key}, answers)
        seen = len(_to(telegram.calls_to("sendMessage"), chat))
        await console.chat.notify_victim(case_id, OutboxKind.JOINED, Sender.COUNSELOR)
        for n in range(QUEUED):
            await console.say(case_id, f"line {n}")
        await _between_releases(telegram, chat, seen + 3 + 2)  # joined (3), and lines went
        other, _ = live_runtime(redis, flows, center_key)
        # Its setWebhook sends her next update to the second worker.
        async with running_door(
            "webhook", redis, telegram, other, RELAY_ROOT_SECRET, limits=TELEGRAM_PACE
        ):
            started = time.monotonic()
            victim.sent.append(await telegram.send_text(victim.user, victim.chat, "/exit"))
            notice = await _notice(telegram, chat)
            await asyncio.sleep(PACE_S)
            lines = _to(telegram.calls_to("sendMessage"), chat)
            after_exit = [c for c in lines if c.at >= started]
            assert after_exit == [notice], "no line of the first worker's went out after it"
            assert len([c for c in lines if c.params["text"].endswith("line 0")]) == 1
            assert not [c for c in lines if c.params["text"].endswith(f"line {QUEUED - 1}")]
            await asyncio.sleep(EXIT_NOTICE_S)
            assert telegram.messages_in(chat) == [], "every message of both sides is deleted"
