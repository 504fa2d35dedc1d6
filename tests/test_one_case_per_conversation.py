"""Issue 18, through the running app over HTTP (web chat, console, store), on both pairs:

- every `/human` opened a new case, with a new receipt when nobody was on shift (13 in one
  session made 13 cases): a handoff now joins the conversation's case, the report just filed
  included, which keeps its category, and enters the waiting line once;
- after `/human` with nobody on shift, and after reading replies, the conversation jumped back
  to the welcome and the consent question: it now says what happens next and offers what the
  victim can do now;
- `safety.emergency` said a counselor was asked while nobody was on shift.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any, cast

from redis.asyncio import Redis
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from backend.console.app_keys import cases_key
from backend.core import redis_keys
from backend.core.shifts import ShiftBoard
from backend.models import Case, Receipt
from backend.web import engine_key, redis_key
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.locales import texts_of
from tests.telegram_support import TOKEN, Victim, all_match, texts
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture
from tests.test_live_chat_through_the_bot import Desk, open_desk, poll, until
from tests.test_live_chat_through_the_bot import event as chat_event

EN = texts_of("en")
CODE = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}")
Answer = dict[str, Any]


async def _turn(hotline: RunningHotline, token: str, **body: str) -> Answer:
    response = await hotline.client.post(
        "/chat/api/turn", json={"token": token, "language": "en", **body}
    )
    assert response.status == 200, await response.text()
    return cast(Answer, await response.json())


def _keys(answer: Answer) -> list[str]:
    """Which texts were said, by their first words (the web chat sends no keys)."""
    found = []
    for message in answer["messages"]:
        text = message["text"]
        key = next(
            (k for k, v in _FIRST_WORDS.items() if text.startswith(v)),
            text[:30],
        )
        found.append(key)
    return found


_FIRST_WORDS = {
    key: EN[key].split("{")[0][:40]
    for key in (
        "safety.welcome",
        "report.consent",
        "safety.no_counselor",
        "safety.handoff",
        "counselor.what_now",
        "receipt.what_now",
        "live.saved",
        "resources.intro",
        "report.received",
    )
} | {
    # The two emergency texts share their first sentences; the unattended one ends differently.
    "safety.emergency": EN["safety.emergency"],
    "safety.emergency_unattended": EN["safety.emergency_unattended"],
}


async def _report(hotline: RunningHotline, token: str) -> str:
    """A filming report through the web chat; its receipt code."""
    for body in (
        {"text": "/start"},
        {"button": "agree"},
        {"button": "filming"},
        {"button": "18_plus"},
        {"text": "Someone filmed me in a changing room."},
    ):
        await _turn(hotline, token, **body)
    received = await _turn(hotline, token, button="send_now")
    code = CODE.search(received["messages"][0]["text"])
    assert code is not None, received
    return code.group()


async def _stored(hotline: RunningHotline, case_id: str, *, joined: bool = True) -> Case:
    """The case once intake stored it (and, with `joined`, the handoff that joined it)."""
    cases = hotline.client.app[cases_key]
    for _ in range(500):
        try:
            case = await cases.get(case_id)
        except LookupError:
            case = None
        if case is not None and (case.handoff_envelope is not None or not joined):
            return case
        await asyncio.sleep(0.02)
    raise AssertionError(f"case {case_id} never stored with its handoff")


async def _counts(hotline: RunningHotline) -> tuple[int, int]:
    """Cases and receipts stored, once intake stored the report's receipt: receipts come on a
    stream of their own, and may be stored after the case and its handoff."""
    for _ in range(500):
        async with hotline.client.app[engine_key].connect() as conn:
            cases = (await conn.execute(select(func.count()).select_from(Case))).scalar_one()
            receipts = (await conn.execute(select(func.count()).select_from(Receipt))).scalar_one()
        if receipts:
            break
        await asyncio.sleep(0.02)
    return int(cases), int(receipts)


async def _waiting(hotline: RunningHotline) -> list[str]:
    queued = await hotline.client.app[redis_key].zrange(redis_keys.HANDOFF_QUEUE, 0, -1)
    return [c.decode() for c in cast(list[bytes], queued)]


async def test_repeated_human_after_a_report_joins_its_case_with_no_new_case_or_receipt(
    hotline: RunningHotline,
) -> None:
    token = "J" * 43
    code = await _report(hotline, token)
    codes = set()
    for _ in range(3):
        asked = await _turn(hotline, token, text="/human")
        assert _keys(asked)[0] == "safety.no_counselor", asked
        codes |= set(CODE.findall(asked["messages"][0]["text"]))
    assert codes == {code}, "the report's receipt, never a new one"
    (case_id,) = await _waiting(hotline)
    case = await _stored(hotline, case_id)
    await asyncio.sleep(0.3)  # what intake would still store, it stores meanwhile
    assert await _counts(hotline) == (1, 1), "one case, one receipt"
    case = await hotline.client.app[cases_key].get(case_id)
    assert case.category == "filming", "the report's category is kept"
    assert case.priority >= 1, "a request for a counselor is at least priority 1"
    assert await _waiting(hotline) == [case_id], "in the waiting line once"

    desk = await open_desk(hotline)
    status, work = await desk.post(f"/api/cases/{case_id}/claim")
    assert status == 200, work
    page = await hotline.client.get(f"/api/cases/{case_id}/work", headers=desk.who.api_headers())
    opened = await page.json()
    answers = opened["answers"]
    assert answers["details"] == "Someone filmed me in a changing room.", "the report"
    assert answers["request"] == "counselor (counselor; nobody was on shift)", "the handoff"
    assert "handoff" in answers["flags"]
    page = await hotline.client.get(f"/console/cases/{case_id}", headers=desk.who.api_headers())
    shown = await page.text()
    assert "Someone filmed me in a changing room." in shown and "asked for a counselor" in shown
    assert "reply_key" not in shown and "Reply key" not in shown


async def test_a_counselor_chats_with_the_victim_of_the_report_her_handoff_joined(
    hotline: RunningHotline,
) -> None:
    """The reply key travels in the handoff that joined the report: the console finds it."""
    desk: Desk = await open_desk(hotline)
    token = "V" * 43  # the token tests.test_live_chat_through_the_bot's `poll` asks with
    await _report(hotline, token)
    asked = await _turn(hotline, token, text="/human")
    assert _keys(asked)[0] == "safety.handoff" and asked["relay"] is True
    (case_id,) = await _waiting(hotline)
    await _stored(hotline, case_id)
    status, body = await desk.post(f"/api/cases/{case_id}/claim")
    assert status == 200, body
    ws = await desk.watch(case_id)
    await until(ws, lambda m: m["type"] == "caught_up")
    assert await desk.chat(case_id, "start") == (200, {"status": "active", "chat": "on"})
    await until(ws, chat_event("joined", "counselor"))
    await poll(hotline)
    status, sent = await desk.chat(case_id, "lines", text="I have read your report.")
    assert status == 200, sent
    got = await poll(hotline)
    assert [m["text"] for m in got["messages"]] == [
        f"{EN['live.counselor']}: I have read your report."
    ]
    await ws.close()
    assert (await _counts(hotline))[0] == 1


async def test_danger_after_a_report_raises_its_case_and_never_promises_an_absent_counselor(
    hotline: RunningHotline,
) -> None:
    token = "D" * 43
    code = await _report(hotline, token)
    said = await _turn(hotline, token, text="I want to die")
    keys = _keys(said)
    assert "safety.emergency" not in keys, "no counselor was asked for: nobody is on shift"
    assert keys[:2] == ["safety.emergency_unattended", "safety.no_counselor"], keys
    assert EN["safety.emergency"].rsplit(". ", 1)[-1] not in said["messages"][0]["text"]
    assert code in said["messages"][1]["text"], "her report's receipt, not a new one"
    (case_id,) = await _waiting(hotline)
    case = await _stored(hotline, case_id)
    for _ in range(500):  # the priority event follows the handoff on the stream
        case = await hotline.client.app[cases_key].get(case_id)
        if case.priority == 3:
            break
        await asyncio.sleep(0.02)
    assert (case.priority, case.category) == (3, "filming")
    assert await _counts(hotline) == (1, 1)

    # With a counselor on shift, the promise is true and is made.
    await ShiftBoard(hotline.client.app[redis_key], ttl_s=3600).start(1)
    other = "E" * 43
    await _report(hotline, other)
    said = await _turn(hotline, other, text="I want to die")
    assert _keys(said)[0] == "safety.emergency", said


async def test_after_human_with_nobody_on_shift_she_is_told_what_next_not_sent_to_the_welcome(
    hotline: RunningHotline,
) -> None:
    token = "W" * 43
    await _turn(hotline, token, text="/start")
    asked = await _turn(hotline, token, text="/human")
    assert _keys(asked) == ["safety.no_counselor", "counselor.what_now"], asked
    labels = [b["label"] for b in asked["messages"][-1]["buttons"]]
    assert labels[:2] == [EN["common.continue"], EN["help.resources"]], labels
    assert "safety.welcome" not in _keys(asked) and "report.consent" not in _keys(asked)
    # What she writes while she waits is kept for the counselor, not read as a flow answer.
    kept = await _turn(hotline, token, text="he posted it again last night")
    assert _keys(kept) == ["live.saved"], kept
    helped = await _turn(hotline, token, button="resources")
    assert _keys(helped)[0] == "resources.intro" and _keys(helped)[-1] == "counselor.what_now"
    again = await _turn(hotline, token, text="/human")
    assert _keys(again) == ["safety.no_counselor", "counselor.what_now"]
    (case_id,) = await _waiting(hotline)
    await _stored(hotline, case_id)
    assert (await _counts(hotline))[0] == 1, "asking twice made one case"


async def test_after_reading_replies_she_is_offered_what_to_do_not_the_welcome(
    hotline: RunningHotline,
) -> None:
    code = await _report(hotline, "R" * 43)
    token = "S" * 43
    await _turn(hotline, token, text="/receipt")
    await _turn(hotline, token, text=code)
    read = await _turn(hotline, token, button="read_replies")
    keys = _keys(read)
    assert keys[-1] == "receipt.what_now", keys
    assert "safety.welcome" not in keys and "report.consent" not in keys
    labels = [b["label"] for b in read["messages"][-1]["buttons"]]
    assert labels[:2] == [EN["help.counselor"], EN["help.resources"]], labels
    asked = await _turn(hotline, token, button="counselor")
    assert _keys(asked) == ["safety.no_counselor", "counselor.what_now"], asked


async def test_telegram_asking_twice_after_a_report_is_one_case_told_truly_what_comes_next(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, telegram: FakeTelegram
) -> None:
    env = {"HOTLINE_TELEGRAM_TOKEN": TOKEN, "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url}
    async with start_hotline(pair, tmp_path, env) as hotline:
        victim = Victim(telegram, "en")
        walked = texts(await victim.walk())
        code = CODE.search(walked[-2])
        assert code is not None, walked
        for _ in range(2):
            asked = texts(await victim.say("/human", replies=2))
            # The unattended answer, then how a reply would come (`live.how_push`).
            assert asked[0].startswith(EN["safety.no_counselor"].split("{")[0]), asked
            assert all_match(asked[1:], ["counselor.what_now"]), asked
            assert CODE.findall(asked[0]) == [code.group()], "the report's receipt"
        # Danger while she waits: guidance that promises nobody absent, her words kept.
        said = texts(await victim.say("I want to die", replies=2))
        assert all_match(said, ["safety.emergency_unattended", "live.saved"]), said
        (case_id,) = await _waiting(hotline)
        await _stored(hotline, case_id)
        for _ in range(500):
            case = await hotline.client.app[cases_key].get(case_id)
            if case.priority == 3:
                break
            await asyncio.sleep(0.02)
        assert (case.category, case.channel, case.priority) == ("deepfake", "telegram", 3)
        assert await _counts(hotline) == (1, 1), "one case, one receipt"
