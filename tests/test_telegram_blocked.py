"""A victim who blocks the bot: the conversation ends and the counselors of the cases it opened
see a flag, end to end: Telegram's 403, the bot's content-free event on the reports stream, the
intake, the case store (migration 0005), the console's list, case page and /api/cases."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core import redis_keys as streams
from tests.conftest import Pair, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import TOKEN, USER_ID, Victim
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture
from tests.test_console import sign_in_and_change_password, wait_for_cases


async def test_a_victim_who_blocks_the_bot_flags_their_case_for_the_counselor(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, telegram: FakeTelegram
) -> None:
    env = {"HOTLINE_TELEGRAM_TOKEN": TOKEN, "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url}
    async with start_hotline(pair, tmp_path, env) as hotline:
        victim = Victim(telegram, "en")
        replies = await victim.walk()  # a whole report: one case
        await sign_in_and_change_password(hotline, "a long new passphrase")
        (case,) = await wait_for_cases(hotline, 1)
        assert case["victim_unreachable_at"] is None
        await victim.press(replies[-1], "skip", replies=1)  # the feedback question: ended
        assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []

        # Later the victim blocks the bot; the next message the bot sends is refused (403).
        telegram.blocked_by.add(USER_ID)
        sent = len(telegram.calls_to("sendMessage"))
        await telegram.send_text(victim.user, victim.chat, "/start")
        await telegram.wait_for("sendMessage", sent + 1)

        flagged = await _flagged(hotline.client)
        assert flagged["id"] == case["id"]
        listing = await (await hotline.client.get("/console")).text()
        assert "victim unreachable" in listing
        page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
        assert "The victim blocked the bot" in page
        # Nothing of the conversation is left on the bot's side.
        prefix = streams.TELEGRAM_CHAT_PREFIX + "*"
        assert [k async for k in redis.scan_iter(match=prefix)] == []


async def _flagged(client: Any) -> dict[str, Any]:
    for _ in range(250):
        cases: list[dict[str, Any]] = (await (await client.get("/api/cases")).json())["cases"]
        found = [c for c in cases if c["victim_unreachable_at"] is not None]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError("no case was flagged")
