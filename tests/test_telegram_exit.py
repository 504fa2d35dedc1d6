"""Quick exit on Telegram: /exit or the exit button erase both sides of the chat (within the
48 hours Telegram allows), say one neutral word, and erase that too. Both modes."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from backend.core import redis_keys as streams
from backend.core.conversation import Pseudonym
from bot.telegram.chats import DELETABLE_FOR_S, TelegramChatStore
from bot.telegram.door import QUICK_EXIT_BUTTON, TelegramDoor
from tests import telegram_support
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import EXIT_NOTICE_S, USER_ID, Victim, reports, say

center_key = telegram_support.center_key
door = telegram_support.door
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram


async def _exit_and_check(
    telegram: FakeTelegram, redis: Redis, victim: Victim, exit_action: str
) -> None:
    chat = victim.chat["id"]
    before = telegram.messages_in(chat)
    assert len(before) >= 3, "both sides have spoken"
    sent = len(telegram.calls_to("sendMessage"))
    # The flow may already have erased a message of the victim's (a step's delete flag).
    deleted = len(telegram.calls_to("deleteMessages"))
    if exit_action == "command":
        await telegram.send_text(victim.user, victim.chat, "/exit")
    else:
        last = telegram.calls_to("sendMessage")[-1]
        assert QUICK_EXIT_BUTTON in last.callback_data()
        await telegram.press(victim.user, last.result, QUICK_EXIT_BUTTON)

    (erase,) = (await telegram.wait_for("deleteMessages", deleted + 1))[deleted:]
    (notice,) = (await telegram.wait_for("sendMessage", sent + 1))[sent:]
    assert telegram.calls.index(erase) < telegram.calls.index(notice), "erase, then say"
    assert notice.params["text"] == say("safety.exit")
    assert notice.json("protect_content") is True
    erased = set(erase.json("message_ids"))
    assert set(before) <= erased, "every earlier message, the victim's and the bot's"
    if exit_action == "command":
        assert victim.sent[-1]["message_id"] in erased, "the /exit message itself too"

    # The notice goes in turn, shortly after.
    notice_gone = (
        await telegram.wait_for("deleteMessages", deleted + 2, timeout_s=EXIT_NOTICE_S + 5)
    )[deleted + 1]
    assert notice_gone.json("message_ids") == [notice.result["message_id"]]
    assert notice_gone.at - notice.at >= EXIT_NOTICE_S * 0.9
    assert telegram.messages_in(chat) == []
    for prefix in (streams.SESSION_KEY_PREFIX, streams.TELEGRAM_CHAT_PREFIX):
        assert not [k async for k in redis.scan_iter(match=prefix + "*")]


@pytest.mark.usefixtures("door")
@pytest.mark.parametrize("exit_action", ["command", "button"])
async def test_quick_exit_mid_conversation_erases_the_chat(
    telegram: FakeTelegram, redis: Redis, exit_action: str
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk(2)
    await victim.send("photo", replies=1)  # the victim's upload goes too
    await _exit_and_check(telegram, redis, victim, exit_action)


@pytest.mark.usefixtures("door")
async def test_exit_after_a_finished_report_still_erases_and_does_not_start_over(
    telegram: FakeTelegram, redis: Redis
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk()
    assert len(await reports(redis)) == 1
    await _exit_and_check(telegram, redis, victim, "command")
    assert say("safety.welcome") not in [
        c.params["text"] for c in telegram.calls_to("sendMessage")[2:]
    ]


async def test_only_messages_younger_than_48_hours_are_offered_for_deletion(
    redis: Redis,
) -> None:
    store = TelegramChatStore(redis, b"k" * 32, 3600)
    pseudonym = Pseudonym("p" * 64)
    now = 1_000_000_000.0
    await store.remember(pseudonym, USER_ID, [1, 2], now=now - DELETABLE_FOR_S - 60)
    await store.remember(pseudonym, USER_ID, [3, 4], now=now - 3600)
    await store.remember(pseudonym, USER_ID, [4], now=now)
    assert await store.deletable(pseudonym, now=now) == [3, 4]
    assert await store.chat_id(pseudonym) == USER_ID
    # Another key cannot read the record: it is sealed, not merely encoded.
    assert await TelegramChatStore(redis, b"x" * 32, 3600).chat_id(pseudonym) is None
    await store.forget(pseudonym)
    assert await store.messages(pseudonym) == []


async def test_deletion_goes_in_batches_of_at_most_100(
    door: TelegramDoor, telegram: FakeTelegram
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk(1)
    await door.outbox.delete(USER_ID, list(range(1, 251)))
    batches = [c.json("message_ids") for c in telegram.calls_to("deleteMessages")]
    assert [len(b) for b in batches] == [100, 100, 50]
    assert [i for batch in batches for i in batch] == list(range(1, 251))
