"""The case view's work over HTTP: notes, referrals, closing with an outcome, follow-ups, and a
counselor's reply read by the returning victim through the web chat door with their receipt."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore
from backend.console.app_keys import keyring_key
from backend.core import redis_keys as streams
from backend.core.conversation import SubmitReport
from backend.core.settings import Retention
from backend.keyring import KeyRing
from backend.models import utcnow
from backend.retention import RetentionJob
from backend.web import redis_key
from bot.reports import ReportSender
from tests.conftest import RunningHotline
from tests.test_console import chat, csrf_of, report, sign_in_and_change_password, wait_for_cases

SHA = "ab" * 32
PDQ = "f0" * 32


async def raw_rows(engine: AsyncEngine, table: str) -> bytes:
    """Every row of a table as bytes, as a thief with the database file would read it."""
    async with engine.connect() as conn:
        rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - fixed names
    return repr(rows).encode()


async def redis_dump(redis: Redis) -> bytes:
    """Every value in Redis, as a thief with a snapshot would read it."""
    values: list[object] = []
    async for key in redis.scan_iter():
        kind = await redis.type(key)
        if kind == b"string":
            values.append(await redis.get(key))
        elif kind == b"list":
            values.append(await redis.lrange(key, 0, -1))
        elif kind == b"hash":
            values.append(await redis.hgetall(key))
    return repr(values).encode()


async def inject_report(hotline: RunningHotline, case_id: str, answers: dict[str, Any]) -> None:
    """A sealed report as the bot would send it, with evidence facts web chat cannot carry."""
    keyring: KeyRing = hotline.client.app[keyring_key]
    active = await keyring.active()
    assert active is not None
    sender = ReportSender(hotline.client.app[redis_key], active.public_key)
    await sender.send(
        SubmitReport(
            idempotency_key=f"{case_id}:1",
            case_id=case_id,
            category=str(answers.get("category", "unsure")),
            priority=0,
            language="en",
            channel="telegram",
            answers=answers,
        )
    )


async def work_of(hotline: RunningHotline, case_id: str) -> dict[str, Any]:
    response = await hotline.client.get(f"/api/cases/{case_id}/work")
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def post(
    hotline: RunningHotline, path: str, csrf: str, body: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    response = await hotline.client.post(path, json=body, headers={"X-CSRF-Token": csrf})
    return response.status, await response.json()


async def test_notes_referrals_evidence_history_and_closing(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await sign_in_and_change_password(hotline, "a long new passphrase")
    # Evidence records come from real uploads: tests/test_evidence_records.py.
    await inject_report(hotline, "case-evidence", {"category": "deepfake"})
    (case,) = await wait_for_cases(hotline, 1)
    case_id = case["id"]
    work = await work_of(hotline, case_id)
    csrf = work["csrf_token"]
    assert work["evidence"] == []
    assert "referred" in work["outcomes"] and "victim_unreachable" in work["outcomes"]

    marker = "note-marker-7f3a secret detail"
    no_token = await hotline.client.post(f"/api/cases/{case_id}/notes", json={"text": marker})
    assert no_token.status == 403, "a JSON action needs the CSRF header"
    assert (await post(hotline, f"/api/cases/{case_id}/notes", csrf, {"text": "  "}))[0] == 400
    status, body = await post(hotline, f"/api/cases/{case_id}/notes", csrf, {"text": marker})
    assert status == 200 and body["ok"]

    bad = {"service": "no_such_service", "consent": "yes", "consent_method": "in_chat"}
    assert (await post(hotline, f"/api/cases/{case_id}/referrals", csrf, bad))[0] == 400
    no_method = {"service": "police_112", "consent": "yes", "consent_method": ""}
    assert (await post(hotline, f"/api/cases/{case_id}/referrals", csrf, no_method))[0] == 400
    referral = {
        "service": "police_112",
        "consent": "yes",
        "consent_method": "in_chat",
        "detail": "referral-marker-91 wants to file",
    }
    assert (await post(hotline, f"/api/cases/{case_id}/referrals", csrf, referral))[0] == 200

    work = await work_of(hotline, case_id)
    assert [n["text"] for n in work["notes"]] == [marker]
    assert [(r["service_id"], r["consent"], r["consent_method"]) for r in work["referrals"]] == [
        ("police_112", True, "in_chat")
    ]
    assert work["referrals"][0]["detail"] == "referral-marker-91 wants to file"
    for table, secret in (("case_notes", b"note-marker-7f3a"), ("case_referrals", b"marker-91")):
        assert secret not in await raw_rows(engine, table), f"{table} holds only ciphertext"

    # Closing needs an outcome, through the old status form as well as the new one.
    page = await (await hotline.client.get(f"/console/cases/{case_id}")).text()
    assert marker in page
    plain_close = await hotline.client.post(
        f"/console/cases/{case_id}/status", data={"csrf": csrf_of(page), "to": "closed"}
    )
    assert plain_close.status == 400
    status, body = await post(hotline, f"/api/cases/{case_id}/close", csrf, {"outcome": ""})
    assert status == 400 and "outcome" in body["error"]
    assert (await work_of(hotline, case_id))["status"] == "queued", "nothing changed"
    form_close = await hotline.client.post(
        f"/console/cases/{case_id}/close",
        data={"csrf": csrf_of(page), "outcome": "referred"},
        allow_redirects=False,
    )
    assert form_close.status == 303
    work = await work_of(hotline, case_id)
    assert (work["status"], work["outcome"]) == ("closed", "referred")
    actions = [(h["action"], h["detail"]) for h in work["history"]]
    assert ("note", work["notes"][0]["id"]) in actions
    assert ("referral", "police_112 consent=yes (in_chat)") in actions
    assert ("status", "to closed (referred)") in actions


async def receipt_of(done: dict[str, Any]) -> str:
    said = done["messages"][0]["text"]
    return str(said.split("receipt code is ")[1].split(".")[0])


async def test_a_returning_victim_reads_the_counselors_reply_in_web_chat(
    hotline: RunningHotline, engine: AsyncEngine, redis: Redis
) -> None:
    await chat(hotline, text="/start", language="en")
    await chat(hotline, button="agree")
    await chat(hotline, button="deepfake")
    await chat(hotline, button="18_plus")
    await chat(hotline, text="Someone posted a fake video of me")
    done = await chat(hotline, button="send_now")
    code = await receipt_of(done)
    await sign_in_and_change_password(hotline, "a long new passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    work = await work_of(hotline, case["id"])
    assert work["can_reply"], "the bot published the reply key with the receipt"
    reply = "reply-marker-5521: we asked the platform to remove it. Call 1366 any time."
    status, _ = await post(
        hotline, f"/api/cases/{case['id']}/replies", work["csrf_token"], {"text": reply}
    )
    assert status == 200
    assert [r["text"] for r in (await work_of(hotline, case["id"]))["replies"]] == [reply]
    assert b"reply-marker-5521" not in await raw_rows(engine, "case_replies")
    assert b"reply-marker-5521" not in await redis_dump(redis)

    # Days later, in another conversation: only the code brings the reply back.
    back = "r" * 43
    turn = await hotline.client.post(
        "/chat/api/turn", json={"token": back, "text": "/receipt", "language": "en"}
    )
    assert turn.status == 200
    for step in ({"text": code}, {"button": "read_replies"}):
        answer = await (
            await hotline.client.post("/chat/api/turn", json={"token": back, **step})
        ).json()
    said = "\n".join(m["text"] for m in answer["messages"])
    assert "Replies from the center:" in said and reply in said

    # The request is a case of its own, linked to the report, shown in the report's view.
    cases = await wait_for_cases(hotline, 2)
    (follow_up,) = [c for c in cases if c["id"] != case["id"]]
    assert follow_up["category"] == "follow_up"
    work = await work_of(hotline, case["id"])
    assert [(f["id"], f["answers"]["request"]) for f in work["follow_ups"]] == [
        (follow_up["id"], "read_replies")
    ]
    assert work["follow_ups"][0]["answers"]["replies_shown"] == 1
    assert (await work_of(hotline, follow_up["id"]))["follows"] == case["id"]
    page = await (await hotline.client.get(f"/console/cases/{follow_up['id']}")).text()
    assert f"/console/cases/{case['id']}" in page and reply in page


async def test_a_reply_needs_a_receipt_to_reach_the_victim(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await sign_in_and_change_password(hotline, "a long new passphrase")
    await inject_report(hotline, "case-without-receipt", {"category": "unsure"})
    (case,) = await wait_for_cases(hotline, 1)
    work = await work_of(hotline, case["id"])
    assert not work["can_reply"]
    status, body = await post(
        hotline, f"/api/cases/{case['id']}/replies", work["csrf_token"], {"text": "hello"}
    )
    assert status == 409 and "receipt" in body["error"]
    assert await raw_rows(engine, "case_replies") == b"[]"


async def test_a_purged_case_loses_its_work_its_receipt_and_its_replies(
    hotline: RunningHotline, engine: AsyncEngine, redis: Redis
) -> None:
    await report(hotline, "details")
    await sign_in_and_change_password(hotline, "a long new passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    work = await work_of(hotline, case["id"])
    csrf = work["csrf_token"]
    await post(hotline, f"/api/cases/{case['id']}/replies", csrf, {"text": "hi"})
    await post(hotline, f"/api/cases/{case['id']}/notes", csrf, {"text": "a note"})
    await post(hotline, f"/api/cases/{case['id']}/takedowns", csrf, {"language": "en"})
    assert await redis.exists(streams.case_replies_key(case["id"]))
    job = RetentionJob(CaseStore(engine), Retention(queued_days=1), redis)
    assert await job.purge_expired(utcnow() + timedelta(days=2)) == 1
    assert [k async for k in redis.scan_iter(match=streams.RECEIPT_KEY_PREFIX + "*")] == []
    assert not await redis.exists(streams.case_receipt_key(case["id"]))
    assert not await redis.exists(streams.case_replies_key(case["id"]))
    for table in ("case_notes", "case_replies", "takedown_requests"):
        assert await raw_rows(engine, table) == b"[]", table
