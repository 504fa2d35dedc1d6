"""Contract suite for the case store and the reports stream, on every backend pair."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore, envelope_of
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.conversation import SubmitReport
from backend.core.sealing import Envelope, RoutingHeader, open_envelope, seal
from backend.intake import Intake, ensure_group
from backend.models import CaseStatus, Outcome
from bot.reports import ReportSender


def _report(category: str = "deepfake", priority: int = 0) -> SubmitReport:
    key = f"{uuid.uuid4().hex}:3"
    return SubmitReport(
        idempotency_key=key,
        case_id=uuid.uuid4().hex,
        category=category,
        priority=priority,
        language="ko",
        channel="web",
        answers={"category": category, "details": "무슨 일이 있었는지"},
    )


def _envelope(public_key_owner: X25519PrivateKey, case_id: str, priority: int = 0) -> Envelope:
    header = RoutingHeader(case_id, priority, "ko", "web", "filming", "kid", "2026-11-21T00:00:00Z")
    return seal(b'{"answers": {}}', header, public_key_owner.public_key())


async def test_store_is_idempotent_and_lists_by_priority_then_age(engine: AsyncEngine) -> None:
    private = keys.generate_private_key()
    store = CaseStore(engine)
    low = _envelope(private, "low-case")
    high = _envelope(private, "high-case", priority=2)
    assert await store.store_sealed("key-low", low)
    assert not await store.store_sealed("key-low", low)
    assert not await store.store_sealed("key-low-replayed", low), "same case id twice"
    assert await store.store_sealed("key-high", high)
    assert [c.id for c in await store.list_open()] == ["high-case", "low-case"]
    stored = await store.get("low-case")
    assert stored.ciphertext == low.ciphertext
    assert open_envelope(envelope_of(stored), private) == b'{"answers": {}}'
    assert await store.count() == 2


async def test_intake_stores_each_report_once(redis: Redis, engine: AsyncEngine) -> None:
    private = keys.generate_private_key()
    sender = ReportSender(redis, private.public_key())
    reports = [_report() for _ in range(5)]
    for report in reports:
        await sender.send(report)
    await sender.send(reports[0])  # the bot retried a turn: same idempotency key
    store = CaseStore(engine)
    intake = Intake(redis, store, "test-consumer")
    await ensure_group(redis)
    task = asyncio.create_task(intake.run())
    try:
        for _ in range(200):
            pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
            if await store.count() == 5 and pending["pending"] == 0:
                break
            await asyncio.sleep(0.02)
    finally:
        intake.stop()
        await task
    assert await store.count() == 5
    case = await store.get(reports[1].case_id)
    body = json.loads(open_envelope(envelope_of(case), private))
    assert body == {"answers": reports[1].answers}
    assert case.priority == reports[1].priority and case.category == "deepfake"


async def test_a_dead_consumers_entries_are_reclaimed(redis: Redis, engine: AsyncEngine) -> None:
    private = keys.generate_private_key()
    await ensure_group(redis)
    await ReportSender(redis, private.public_key()).send(_report())
    # A consumer reads the entry and dies before storing or acknowledging it.
    await redis.xreadgroup(
        streams.INTAKE_GROUP, "dead-consumer", {streams.REPORTS_STREAM: ">"}, count=10
    )
    store = CaseStore(engine)
    survivor = Intake(redis, store, "survivor")
    claimed = await redis.xautoclaim(
        streams.REPORTS_STREAM, streams.INTAKE_GROUP, "survivor", min_idle_time=0, start_id="0-0"
    )
    await survivor.handle(claimed[1])
    assert await store.count() == 1
    pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
    assert pending["pending"] == 0


async def test_own_pending_entries_are_handled_after_a_restart(
    redis: Redis, engine: AsyncEngine
) -> None:
    private = keys.generate_private_key()
    await ensure_group(redis)
    await ReportSender(redis, private.public_key()).send(_report())
    await redis.xreadgroup(streams.INTAKE_GROUP, "node-1", {streams.REPORTS_STREAM: ">"}, count=10)
    store = CaseStore(engine)
    intake = Intake(redis, store, "node-1")
    task = asyncio.create_task(intake.run())
    try:
        for _ in range(200):
            if await store.count() == 1:
                break
            await asyncio.sleep(0.02)
    finally:
        intake.stop()
        await task
    assert await store.count() == 1


async def test_malformed_entries_are_acknowledged_and_stored_nowhere(
    redis: Redis, engine: AsyncEngine
) -> None:
    await ensure_group(redis)
    await redis.xadd(streams.REPORTS_STREAM, {"idempotency_key": "x", "envelope": b"garbage"})
    await redis.xadd(streams.REPORTS_STREAM, {"something": "else"})
    store = CaseStore(engine)
    entries = await redis.xreadgroup(
        streams.INTAKE_GROUP, "c", {streams.REPORTS_STREAM: ">"}, count=10
    )
    await Intake(redis, store, "c").handle(entries[0][1])  # type: ignore[index, arg-type]  # redis-py types XREADGROUP loosely
    assert await store.count() == 0
    pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
    assert pending["pending"] == 0


async def test_an_unreachable_event_flags_its_cases_after_the_batch_is_stored(
    redis: Redis, engine: AsyncEngine
) -> None:
    """The event comes in the same batch as its report, behind it: the case is stored first,
    then flagged; an event of an unknown kind or without case ids is dead-lettered. A case id
    not stored yet keeps the event pending for it (tests/test_intake_event_before_its_case.py)."""
    private = keys.generate_private_key()
    sender = ReportSender(redis, private.public_key())
    report, other = _report(), _report()
    await ensure_group(redis)
    await sender.send(report)
    await sender.send(other)
    await sender.send_event("e1", streams.EVENT_VICTIM_UNREACHABLE, [report.case_id, "unknown"])
    await redis.xadd(
        streams.REPORTS_STREAM,
        {streams.FIELD_IDEMPOTENCY_KEY: "e2", streams.FIELD_EVENT: "victim_sang"},
    )
    store = CaseStore(engine)
    entries = await redis.xreadgroup(
        streams.INTAKE_GROUP, "c", {streams.REPORTS_STREAM: ">"}, count=10
    )
    await Intake(redis, store, "c").handle(entries[0][1])  # type: ignore[index, arg-type]  # redis-py types XREADGROUP loosely
    flagged = {c.id: c.victim_unreachable_at for c in await store.list_open()}
    assert flagged[report.case_id] is not None
    assert flagged[other.case_id] is None
    assert await store.count() == 2, "an event is not a case"
    assert await redis.xlen(streams.DEAD_LETTER_STREAM) == 1
    pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
    assert pending["pending"] == 1, "the event waits for its unknown case"


async def test_only_a_coarse_age_group_is_stored_in_clear(
    redis: Redis, engine: AsyncEngine
) -> None:
    """The routing header carries minor, adult or not_said (issue 16); a report whose header
    says more (an age) is dead-lettered, never stored with it in clear. A header without one (a
    bot of before) is a case of age not said."""
    private = keys.generate_private_key()
    await ensure_group(redis)
    store = CaseStore(engine)
    minor = uuid.uuid4().hex
    older = _envelope(private, uuid.uuid4().hex)
    assert b"age_group" not in older.header_bytes
    for case_id, age_group in ((minor, "minor"), ("finer", "15")):
        header = RoutingHeader(case_id, 2, "ko", "web", "filming", "kid", "t", age_group=age_group)
        envelope = seal(b"{}", header, private.public_key())
        await redis.xadd(
            streams.REPORTS_STREAM,
            {"idempotency_key": case_id, "envelope": envelope.to_bytes()},
        )
    await redis.xadd(
        streams.REPORTS_STREAM, {"idempotency_key": "older", "envelope": older.to_bytes()}
    )
    entries = await redis.xreadgroup(
        streams.INTAKE_GROUP, "c", {streams.REPORTS_STREAM: ">"}, count=10
    )
    await Intake(redis, store, "c").handle(entries[0][1])  # type: ignore[index, arg-type]  # redis-py types XREADGROUP loosely
    assert await store.count() == 2
    assert (await store.get(minor)).age_group == "minor"
    assert (await store.get(older.header.case_id)).age_group == "not_said"
    assert await redis.xlen(streams.DEAD_LETTER_STREAM) == 1


async def _read_one(redis: Redis, consumer: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """The next entry of the stream, delivered to `consumer` as its intake would read it."""
    reply = await redis.xreadgroup(
        streams.INTAKE_GROUP, consumer, {streams.REPORTS_STREAM: ">"}, count=1
    )
    # The reply is [[stream, [(id, fields), ...]]], typed loosely by redis-py.
    return cast(list[tuple[bytes, dict[bytes, bytes]]], reply[0][1])  # type: ignore[index]  # the shape is in the comment above


async def test_a_handoff_read_before_its_report_is_stored_waits_and_never_makes_a_second_case(
    redis: Redis, engine: AsyncEngine
) -> None:
    """Issue 18, two backends: the report is pending at one (read, not yet stored) when the
    other reads the handoff that joins it. The handoff waits, then joins the one case."""
    private = keys.generate_private_key()
    sender = ReportSender(redis, private.public_key())
    report = _report("filming", priority=0)
    handoff = SubmitReport(
        idempotency_key=report.idempotency_key + ":handoff",
        case_id=report.case_id,
        category="filming",
        priority=1,
        language="ko",
        channel="web",
        answers={"request": "counselor (counselor)", "reply_key": "k"},
    )
    await sender.send(report)
    await sender.send(handoff, joins=True)
    await ensure_group(redis)
    store = CaseStore(engine)
    slow, quick = Intake(redis, store, "backend-a"), Intake(redis, store, "backend-b")
    # Backend A reads the report and has not stored it yet.
    (held,) = await _read_one(redis, "backend-a")
    (joining,) = await _read_one(redis, "backend-b")
    await quick.handle([joining])
    assert await store.count() == 0, "the handoff waits for its case"
    assert (await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP))["pending"] == 2
    await slow.handle([held])
    task = asyncio.create_task(quick.run())
    try:
        for _ in range(300):
            case = await store.get(report.case_id)
            if case.handoff_envelope is not None:
                break
            await asyncio.sleep(0.02)
    finally:
        quick.stop()
        await task
    assert await store.count() == 1
    case = await store.get(report.case_id)
    assert (case.category, case.priority) == ("filming", 1)
    assert case.handoff_envelope is not None
    body = json.loads(open_envelope(Envelope.from_bytes(case.handoff_envelope), private))
    assert body["answers"]["request"] == "counselor (counselor)"
    assert (await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP))["pending"] == 0


async def test_a_handoff_whose_report_was_dead_lettered_is_kept_as_its_own_case(
    redis: Redis, engine: AsyncEngine
) -> None:
    """Nothing lost: with no earlier entry pending, the case will never come; the request is
    stored as the case it names, and a closed case it joins goes back to the queue."""
    private = keys.generate_private_key()
    sender = ReportSender(redis, private.public_key())
    lone = SubmitReport(
        idempotency_key="conv:9:handoff",
        case_id=uuid.uuid4().hex,
        category="unsure",
        priority=1,
        language="ko",
        channel="web",
        answers={"request": "counselor (counselor)"},
    )
    await sender.send(lone, joins=True)
    await ensure_group(redis)
    store = CaseStore(engine)
    intake = Intake(redis, store, "backend-a")
    await intake.handle(await intake._read(">", block_ms=None))
    case = await store.get(lone.case_id)
    assert (case.category, case.status) == ("unsure", "queued")

    await store.transition(lone.case_id, CaseStatus.CLOSED, "t", outcome=Outcome.VICTIM_UNREACHABLE)
    again = SubmitReport(**{**vars(lone), "idempotency_key": "conv:12:handoff", "priority": 2})
    await sender.send(again, joins=True)
    await intake.handle(await intake._read(">", block_ms=None))
    case = await store.get(lone.case_id)
    assert (case.status, case.priority, case.outcome) == ("queued", 2, None), "reopened"
    assert await store.count() == 1
    assert case.handoff_envelope is not None
    assert await store.shred(lone.case_id, "t", "the victim asked")
    assert (await store.get(lone.case_id)).handoff_envelope is None, "shredded with the body"
