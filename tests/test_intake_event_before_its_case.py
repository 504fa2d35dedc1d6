"""Issue 14: with two backends, an event read before its case was stored was lost.

A report's turn puts two entries on the reports stream: the sealed report, then the receipt
event (or, later, "victim unreachable"). With two intake consumers in the group, one can read
the report and still be committing it while the other reads the event; before the fix the event
found no case, was acknowledged and deleted, and the victim's receipt code never reached the
console. Here consumer "a" takes the report and holds it while a running intake "b" gets the
event; the event must wait (pending, without holding up later reports) and be applied once "a"
stores the case, and be dead-lettered only when its case never comes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.cases import CaseStore
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.conversation import SubmitReport
from backend.intake import Entry, Intake, dead_letter_count, ensure_group
from backend.models import Case, Receipt
from bot.reports import ReportSender

DIGEST = "ab" * 32


def _report() -> SubmitReport:
    return SubmitReport(
        idempotency_key=f"{uuid.uuid4().hex}:6",
        case_id=uuid.uuid4().hex,
        category="deepfake",
        priority=0,
        language="en",
        channel="web",
        answers={"details": "what happened"},
    )


async def _until(
    check: Callable[[], Awaitable[bool]], failure: str, timeout_s: float = 10.0
) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(failure)


async def _pending(redis: Redis) -> int:
    summary = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
    return int(summary["pending"])


async def _receipt_of(engine: AsyncEngine, case_id: str) -> str | None:
    async with AsyncSession(engine) as session:
        found = await session.exec(select(Receipt).where(col(Receipt.case_id) == case_id))
        receipt = found.first()
    return None if receipt is None else receipt.digest


async def _unreachable(engine: AsyncEngine, case_id: str) -> bool:
    async with AsyncSession(engine) as session:
        case = (await session.exec(select(Case).where(col(Case.id) == case_id))).one()
    return case.victim_unreachable_at is not None


@pytest.fixture
async def sender(redis: Redis) -> ReportSender:
    await ensure_group(redis)
    return ReportSender(redis, keys.generate_private_key().public_key())


async def _a_takes_the_report(redis: Redis) -> list[Entry]:
    """Backend "a" reads the report (the stream's first entry) and has not stored it yet."""
    response = await redis.xreadgroup(
        streams.INTAKE_GROUP, "backend-a", {streams.REPORTS_STREAM: ">"}, count=1
    )
    entries = cast(list[Entry], response[0][1])  # type: ignore[index]  # [[stream, entries]]
    assert len(entries) == 1 and streams.FIELD_ENVELOPE.encode() in entries[0][1]
    return entries


@pytest.mark.parametrize("kind", [streams.EVENT_RECEIPT_ISSUED, streams.EVENT_VICTIM_UNREACHABLE])
async def test_an_event_read_before_its_case_is_stored_waits_for_it(
    redis: Redis, engine: AsyncEngine, sender: ReportSender, kind: str
) -> None:
    report = _report()
    await sender.send(report)
    held = await _a_takes_the_report(redis)
    if kind == streams.EVENT_RECEIPT_ISSUED:
        await sender.send_receipt(report.case_id, DIGEST)
    else:
        await sender.send_event("gone-1", kind, [report.case_id])
    store = CaseStore(engine)
    intake_b = Intake(redis, store, "backend-b")
    task = asyncio.create_task(intake_b.run())
    try:
        # "b" has read the event; the case is not stored; the event stays pending.
        async def b_holds_it() -> bool:
            found = await redis.xpending_range(
                streams.REPORTS_STREAM, streams.INTAKE_GROUP, "-", "+", 10, "backend-b"
            )
            return len(found) == 1 and await redis.hlen(streams.INTAKE_EVENT_WAITING_KEY) == 1

        await _until(b_holds_it, "backend b never read the event")
        # Later reports are not held up by the waiting event.
        later = _report()
        await sender.send(later)

        async def later_stored() -> bool:
            return bool(await store.stored_case_ids([later.case_id]))

        await _until(later_stored, "a report behind a waiting event was not stored")
        assert await store.stored_case_ids([report.case_id]) == set()
        # "a" commits the case now; "b" applies the event at its next look.
        await Intake(redis, store, "backend-a").handle(held)

        async def applied() -> bool:
            if kind == streams.EVENT_RECEIPT_ISSUED:
                done = await _receipt_of(engine, report.case_id) == DIGEST
            else:
                done = await _unreachable(engine, report.case_id)
            return done and await _pending(redis) == 0

        await _until(applied, "the event was lost: its case never got it")
    finally:
        intake_b.stop()
        await task
    assert await dead_letter_count(redis) == 0
    assert await redis.hlen(streams.INTAKE_EVENT_WAITING_KEY) == 0
    assert await redis.xlen(streams.REPORTS_STREAM) == 0, "acknowledged entries are deleted"


async def test_an_event_whose_case_never_comes_is_dead_lettered_after_the_wait(
    redis: Redis, engine: AsyncEngine, sender: ReportSender
) -> None:
    await sender.send_receipt("never-stored", DIGEST)
    intake = Intake(redis, CaseStore(engine), "backend-b", event_wait_ms=300)
    task = asyncio.create_task(intake.run())
    try:

        async def still_waiting() -> bool:
            return await redis.hlen(streams.INTAKE_EVENT_WAITING_KEY) == 1

        await _until(still_waiting, "the event was not held")
        assert await dead_letter_count(redis) == 0, "not before the wait is over"

        async def dead_lettered() -> bool:
            return await dead_letter_count(redis) == 1

        await _until(dead_lettered, "the event was never dead-lettered")
    finally:
        intake.stop()
        await task
    ((_, fields),) = cast(list[Entry], await redis.xrange(streams.DEAD_LETTER_STREAM))
    assert fields[streams.FIELD_EVENT.encode()] == streams.EVENT_RECEIPT_ISSUED.encode()
    assert fields[streams.FIELD_CASE_IDS.encode()] == b"never-stored"
    assert b"not stored within" in fields[streams.FIELD_DEAD_REASON.encode()]
    assert await _pending(redis) == 0
    assert await redis.hlen(streams.INTAKE_EVENT_WAITING_KEY) == 0


async def test_a_waiting_event_survives_its_consumers_restart(
    redis: Redis, engine: AsyncEngine, sender: ReportSender
) -> None:
    """The wait is in the stream's pending list, not in memory: a backend restarted while an
    event waits finds it among its own pending entries and applies it once the case is in."""
    report = _report()
    await sender.send(report)
    held = await _a_takes_the_report(redis)
    await sender.send_receipt(report.case_id, DIGEST)
    store = CaseStore(engine)
    first = Intake(redis, store, "backend-b")
    task = asyncio.create_task(first.run())

    async def waiting() -> bool:
        return await redis.hlen(streams.INTAKE_EVENT_WAITING_KEY) == 1

    try:
        await _until(waiting, "backend b never read the event")
    finally:
        first.stop()
        await task
    await Intake(redis, store, "backend-a").handle(held)
    again = Intake(redis, store, "backend-b")
    task = asyncio.create_task(again.run())
    try:

        async def applied() -> bool:
            return await _receipt_of(engine, report.case_id) == DIGEST and not await _pending(redis)

        await _until(applied, "the waiting event was lost in the restart")
    finally:
        again.stop()
        await task
