"""Blocks with expiry (issue 13): a counselor blocks the sender behind a case from the case
page, with a reason and an expiry; the sender then gets only a neutral message with the
emergency numbers, through every door; a supervisor sees the block and lifts it; all audited."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit
from backend.blocks import BlockBook
from backend.core import redis_keys
from backend.core.sealing import Envelope, open_envelope
from backend.core.shifts import ShiftBoard
from backend.flows.registry import FlowRegistry
from backend.models import AuditEntry
from tests import telegram_support
from tests.conftest import Pair, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import (
    TOKEN,
    Victim,
    all_match,
    make_runtime,
    running_door,
    say,
    texts,
)
from tests.test_channels_dialogs import KAKAO_BOT_ID, KAKAO_SECRET, KakaoVictim, Row, WebVictim
from tests.test_console import csrf_of, sign_in_and_change_password, wait_for_cases
from tests.test_console_totp import PASSWORD

center_key = telegram_support.center_key
flows = telegram_support.flows
BLOCKED = say("common.blocked")


def _row(action: str | None, value: str) -> Row:
    return Row(action, value, (), ())


async def test_a_blocked_sender_hears_only_the_emergency_numbers_until_lifted(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    assert all(number in BLOCKED for number in ("112", "119", "1366"))
    env = {"HOTLINE_KAKAO_BOT_ID": KAKAO_BOT_ID, "HOTLINE_KAKAO_SECRET": KAKAO_SECRET}
    async with start_hotline(pair, tmp_path, env) as hotline:
        await ShiftBoard(redis, ttl_s=3600).start(1)
        web, kakao = WebVictim(hotline.client, "en"), KakaoVictim(hotline.client, "en")
        for victim in (web, kakao):
            await victim.play(_row("say", "/start"))
            await victim.play(_row("say", "/human"))
        await sign_in_and_change_password(hotline, PASSWORD)
        cases = await wait_for_cases(hotline, 2)
        for case in cases:
            url = f"/console/cases/{case['id']}"
            page = await (await hotline.client.get(url)).text()
            assert f'action="{url}/block"' in page
            form = {"csrf": csrf_of(page), "reason": "floods the line", "hours": ""}
            blocked = await hotline.client.post(f"{url}/block", data=form, allow_redirects=False)
            assert blocked.status == 303, await blocked.text()
        for victim in (web, kakao):
            assert await victim.play(_row("say", "hello, anyone?")) == [BLOCKED]
        names = [key async for key in redis.scan_iter(redis_keys.BLOCKED_PREFIX + "*")]
        assert len(names) == 2
        assert all([23 * 3600 < await redis.ttl(name) <= 24 * 3600 for name in names])
        sessions = [key async for key in redis.scan_iter(redis_keys.SESSION_KEY_PREFIX + "*")]
        pseudonyms = {name.rsplit(b":", 1)[-1] for name in names}
        assert not [key for key in sessions if key.rsplit(b":", 1)[-1] in pseudonyms]

        listing = await (await hotline.client.get("/console/blocks")).text()
        assert listing.count("floods the line") == 2 and " KST" in listing
        web_case = next(c for c in cases if c["channel"] == "web")
        row = re.search(
            rf'data-block="(\w+)"><td><a href="/console/cases/{web_case["id"]}"', listing
        )
        assert row is not None, listing
        lifted = await hotline.client.post(
            f"/console/blocks/{row.group(1)}/lift",
            data={"csrf": csrf_of(listing)},
            allow_redirects=False,
        )
        assert lifted.status == 303
        assert await web.play(_row("say", "hello, anyone?")) != [BLOCKED], "lifted"
        assert await kakao.play(_row("say", "still there?")) == [BLOCKED]
    async with AsyncSession(engine) as session:
        actions = list((await session.exec(select(AuditEntry.action))).all())
    assert actions.count(audit.AuditAction.BLOCK.value) == 2
    assert actions.count(audit.AuditAction.UNBLOCK.value) == 1


async def test_a_blocked_telegram_sender_hears_only_the_emergency_numbers(
    redis: Redis, flows: FlowRegistry, center_key: X25519PrivateKey
) -> None:
    async with FakeTelegram(TOKEN, max_hold_s=0.3) as telegram:
        runtime, root_secret = make_runtime(redis, flows, center_key)
        async with running_door("polling", redis, telegram, runtime, root_secret):
            victim = Victim(telegram, "en")
            await victim.say("/start", replies=2)
            # `/human` calls the counselor flow: the wait, then what happens next. Both are
            # waited for, or the second, still in flight, would be taken for the blocked
            # sender's reply below.
            asked = await victim.say("/human", replies=2)
            assert all_match(texts(asked), ["safety.handoff", "counselor.what_now"]), texts(asked)
            (entry,) = await telegram_support.reports(redis)
            envelope = Envelope.from_bytes(entry[redis_keys.FIELD_ENVELOPE.encode()])
            body = json.loads(open_envelope(envelope, center_key))
            assert "blocking" not in body["answers"], "never shown as an answer"
            blocks = BlockBook(redis)
            block = await blocks.block(body["blocking"], envelope.header.case_id, "r", "c", 1)
            seen = len(telegram.calls_to("sendMessage"))
            assert texts(await victim.say("hello", replies=1)) == [BLOCKED]
            await blocks.lift(block.id)
            restarted = texts(await victim.say("/start", replies=2))
            assert all_match(restarted, ["safety.welcome", "report.consent"]), restarted
            # One chat's updates are handled in order: once /start is answered, anything else
            # said to the blocked sender would be here.
            since = [
                call
                for call in telegram.calls_to("sendMessage")[seen:]
                if call.json("chat_id") == victim.chat["id"]
            ]
            assert texts(since) == [BLOCKED, *restarted], "a blocked sender hears only that"
