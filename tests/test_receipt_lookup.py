"""A counselor finds a case by the receipt code a victim reads out: the bot's digest event, the
intake's receipts row, and the console's rate-limited, audited lookup."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.core import redis_keys as streams
from backend.intake import dead_letter_count
from backend.models import AuditEntry, Receipt
from backend.web import redis_key
from tests.conftest import RunningHotline
from tests.test_case_work import raw_rows, receipt_of
from tests.test_console import chat, csrf_of, sign_in_and_change_password, wait_for_cases

OTHER_CODE = "K7QX-3M9D-V2TA-8HPE"


async def _reported(hotline: RunningHotline) -> str:
    """A report through the web chat door; the receipt code the victim is shown."""
    await chat(hotline, text="/start", language="en")
    await chat(hotline, button="agree")
    await chat(hotline, button="deepfake")
    await chat(hotline, button="18_plus")
    await chat(hotline, text="Someone posted a fake video of me")
    return await receipt_of(await chat(hotline, button="send_now"))


async def _receipts(engine: AsyncEngine) -> list[Receipt]:
    async with AsyncSession(engine) as session:
        return list((await session.exec(select(Receipt))).all())


async def _until_kept(engine: AsyncEngine, count: int) -> list[Receipt]:
    for _ in range(250):
        kept = await _receipts(engine)
        if len(kept) >= count:
            return kept
        await asyncio.sleep(0.02)
    raise AssertionError("the receipt event was not stored")


async def _lookup(hotline: RunningHotline, csrf: str, code: object) -> tuple[int, dict[str, Any]]:
    response = await hotline.client.post(
        "/api/receipts/lookup", json={"code": code}, headers={"X-CSRF-Token": csrf}
    )
    body: dict[str, Any] = await response.json()
    return response.status, body


async def _csrf(hotline: RunningHotline) -> str:
    return csrf_of(await (await hotline.client.get("/console")).text())


async def test_a_code_read_out_on_the_phone_opens_the_case(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    code = await _reported(hotline)
    await sign_in_and_change_password(hotline, "a long new passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    (kept,) = await _until_kept(engine, 1)
    assert kept.case_id == case["id"]
    assert code.encode() not in await raw_rows(engine, "receipts"), "only the slow digest"
    csrf = await _csrf(hotline)

    # As a counselor types what they hear: lower case, spaces, O for 0 and l for 1.
    heard = code.lower().replace("-", " ").replace("0", "o").replace("1", "l")
    assert await _lookup(hotline, csrf, heard) == (
        200,
        {"case_id": case["id"], "url": f"/console/cases/{case['id']}"},
    )
    status, body = await _lookup(hotline, csrf, OTHER_CODE)
    assert status == 404 and "no case has this code" in body["error"]
    assert (await _lookup(hotline, csrf, "12345"))[0] == 400
    assert (await _lookup(hotline, csrf, ["not", "text"]))[0] == 400
    no_token = await hotline.client.post("/api/receipts/lookup", json={"code": code})
    assert no_token.status == 403

    # The search box on the queue page leads to the case page.
    page = await (await hotline.client.get("/console")).text()
    assert 'action="/console/receipts/lookup"' in page
    found = await hotline.client.post(
        "/console/receipts/lookup", data={"csrf": csrf, "code": code}, allow_redirects=False
    )
    assert (found.status, found.headers["Location"]) == (303, f"/console/cases/{case['id']}")
    missed = await hotline.client.post(
        "/console/receipts/lookup", data={"csrf": csrf, "code": OTHER_CODE}
    )
    assert missed.status == 404 and "no case has this code" in await missed.text()

    async with AsyncSession(engine) as session:
        audited = (
            await session.exec(
                select(AuditEntry.subject, AuditEntry.detail).where(
                    col(AuditEntry.action) == "receipt-lookup"
                )
            )
        ).all()
    assert [d for s, d in audited if s == case["id"]] == ["found by its receipt code"] * 2
    # What cannot be a code ("12345", a list) was refused before anything was written.
    assert sorted(d for s, d in audited if s != case["id"]) == ["no match", "no match"]
    assert code.encode() not in await raw_rows(engine, "audit_log")


async def test_lookups_are_limited_per_counselor(
    hotline: RunningHotline, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(streams, "RECEIPT_LOOKUP_LIMIT", 3)
    code = await _reported(hotline)
    await sign_in_and_change_password(hotline, "a long new passphrase")
    await wait_for_cases(hotline, 1)
    await _until_kept(engine, 1)
    csrf = await _csrf(hotline)
    for _ in range(3):
        assert (await _lookup(hotline, csrf, OTHER_CODE))[0] == 404
    status, body = await _lookup(hotline, csrf, code)
    assert status == 429 and "too many" in body["error"], "even the right code, once over"
    redis = hotline.client.app[redis_key]
    assert await redis.ttl(streams.receipt_lookups_key(1)) > 0, "the lock runs out"


async def test_intake_keeps_only_well_formed_receipts_of_stored_cases(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await _reported(hotline)
    (kept,) = await _until_kept(engine, 1)
    redis = hotline.client.app[redis_key]
    digest = "0f" * 32
    for case_id, code_digest in (("never-stored", digest), (kept.case_id, "not-hex")):
        await redis.xadd(
            streams.REPORTS_STREAM,
            {
                streams.FIELD_IDEMPOTENCY_KEY: f"test:{case_id}",
                streams.FIELD_EVENT: streams.EVENT_RECEIPT_ISSUED,
                streams.FIELD_CASE_IDS: case_id,
                streams.FIELD_CODE_DIGEST: code_digest,
            },
        )
    for _ in range(250):
        if await dead_letter_count(redis) and not await redis.xlen(streams.REPORTS_STREAM):
            break
        await asyncio.sleep(0.02)
    assert await dead_letter_count(redis) == 1, "the malformed digest is dead-lettered"
    assert [r.digest for r in await _receipts(engine)] == [kept.digest], "no row for no case"
