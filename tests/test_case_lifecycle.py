"""Contract suite, on every backend pair: status machine, audit chain, receipts, retention,
dead letters, per-case streams and migrations."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import cast

import pytest
from alembic import command
from alembic.config import Config
from redis.asyncio import Redis
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from backend import audit, database
from backend.audit import AuditAction
from backend.cases import CaseStore
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.errors import (
    CaseNotFoundError,
    CaseTransitionError,
    LegalHoldError,
    OutcomeRequiredError,
    ReceiptNotFoundError,
    SealingError,
)
from backend.core.live_chat import (
    Event,
    EventKind,
    LiveChat,
    OutboxItem,
    OutboxKind,
    Sender,
    new_line,
)
from backend.core.receipt_codes import ALPHABET, normalise
from backend.core.sealing import RoutingHeader, seal
from backend.core.settings import Retention
from backend.intake import Entry, Intake, dead_letter_count, ensure_group
from backend.models import CaseStatus, Outcome, utcnow
from backend.receipts import ReceiptBook
from backend.retention import RetentionJob
from bot import cli
from tests.conftest import FAST_KDF, Pair, RunningHotline
from tests.test_console import sign_in_and_change_password


async def _store(engine: AsyncEngine, *case_ids: str) -> CaseStore:
    store = CaseStore(engine)
    public = keys.generate_private_key().public_key()
    batch = []
    for case_id in case_ids:
        header = RoutingHeader(case_id, 0, "ko", "web", "filming", "kid", "2026-11-21T00:00Z")
        batch.append((f"key-{case_id}", seal(b"{}", header, public)))
    assert sorted(await store.store_many(batch)) == sorted(case_ids)
    return store


async def _actions(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT action, subject, detail FROM audit_log ORDER BY seq")
        )
        return [(r[0], r[1], r[2]) for r in rows]


async def test_status_machine_allows_only_its_transitions(engine: AsyncEngine) -> None:
    store = await _store(engine, "c1")
    with pytest.raises(CaseTransitionError):
        await store.transition("c1", CaseStatus.ACTIVE, "counselor:1")  # not claimed yet
    with pytest.raises(CaseTransitionError):
        await store.transition("c1", CaseStatus.PURGED, "counselor:1")  # only by shredding
    with pytest.raises(CaseNotFoundError):
        await store.transition("nope", CaseStatus.CLAIMED, "counselor:1")
    await store.transition("c1", CaseStatus.CLAIMED, "counselor:1", counselor_id=1)
    assert (await store.get("c1")).claimed_by == 1
    await store.transition("c1", CaseStatus.ACTIVE, "counselor:1")
    with pytest.raises(OutcomeRequiredError):
        await store.transition("c1", CaseStatus.CLOSED, "counselor:1")  # how did it end?
    assert (await store.get("c1")).status == "active", "refused: nothing changed"
    await store.transition("c1", CaseStatus.CLOSED, "counselor:1", outcome=Outcome.REFERRED)
    assert (await store.get("c1")).outcome == "referred"
    await store.transition("c1", CaseStatus.QUEUED, "system:receipt")  # the victim came back
    case = await store.get("c1")
    assert case.status == "queued" and case.claimed_by is None and case.outcome is None
    assert await _actions(engine) == [
        ("claim", "c1", "to claimed"),
        ("status", "c1", "to active"),
        ("status", "c1", "to closed (referred)"),
        ("status", "c1", "to queued"),
    ], "refused changes leave no audit link"
    assert (await audit.verify(engine)).intact


async def test_two_counselors_never_claim_the_same_case(engine: AsyncEngine) -> None:
    store = await _store(engine, "c1")
    results = await asyncio.gather(
        *(
            store.transition("c1", CaseStatus.CLAIMED, f"counselor:{n}", counselor_id=n)
            for n in range(1, 5)
        ),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, CaseTransitionError) for r in results if r is not None)
    assert [a for a, _, _ in await _actions(engine)] == ["claim"]


async def test_concurrent_appends_keep_one_unbroken_chain(engine: AsyncEngine) -> None:
    await asyncio.gather(
        *(audit.record(engine, f"counselor:{n}", AuditAction.UNSEAL, f"c{n}") for n in range(12))
    )
    verdict = await audit.verify(engine)
    assert verdict.intact and verdict.links == 12


TAMPERING = {
    "changed": ["UPDATE audit_log SET detail = 'to closed' WHERE seq = 2"],
    "deleted": ["DELETE FROM audit_log WHERE seq = 2"],
    "reordered": [
        "UPDATE audit_log SET seq = -1 WHERE seq = 2",
        "UPDATE audit_log SET seq = 2 WHERE seq = 3",
        "UPDATE audit_log SET seq = 3 WHERE seq = -1",
    ],
}


@pytest.fixture
def cli_env(pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hotline` subcommands run in this test see the pair's database."""
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "cli-data"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", pair.database_url)


@pytest.mark.usefixtures("cli_env")
@pytest.mark.parametrize("tampering", sorted(TAMPERING))
async def test_audit_verify_names_the_first_broken_link(
    engine: AsyncEngine, capsys: pytest.CaptureFixture[str], tampering: str
) -> None:
    for n in range(4):
        await audit.record(engine, "counselor:1", AuditAction.UNSEAL, f"case-{n}")
    assert await asyncio.to_thread(cli.main, ["audit", "verify"]) == 0
    assert "intact: 4 links" in capsys.readouterr().out
    async with engine.begin() as conn:
        for statement in TAMPERING[tampering]:
            await conn.execute(text(statement))
    assert await asyncio.to_thread(cli.main, ["audit", "verify"]) == 1
    assert "BROKEN at link 2" in capsys.readouterr().out


async def test_receipts_find_the_case_however_the_code_is_typed(engine: AsyncEngine) -> None:
    store = await _store(engine, "c1", "c2")
    book = ReceiptBook(engine, FAST_KDF, b"r" * 32)
    code = await book.issue("c1")
    await book.issue("c2")
    groups = code.split("-")
    assert len(groups) == 4 and all(len(g) == 4 and set(g) <= set(ALPHABET) for g in groups)
    typed = " ".join(groups).lower().replace("0", "o").replace("1", "l")
    assert await book.find(typed) == "c1"
    again = ReceiptBook(engine, FAST_KDF, b"r" * 32)
    assert await again.find(code) == "c1", "the key is per deployment, not per book"
    async with engine.connect() as conn:
        stored = repr((await conn.execute(text("SELECT * FROM receipts"))).all())
    assert normalise(code) not in stored and code not in stored
    wrong = ("1" if code[0] != "1" else "2") + code[1:]
    for bad in (wrong, "", "not a code", code + "X"):
        with pytest.raises(ReceiptNotFoundError):
            await book.find(bad)
    await store.shred("c1", "test", "victim erased the case")
    with pytest.raises(ReceiptNotFoundError):
        await book.find(code)
    assert await book.find(await book.issue("c2")) == "c2"


async def test_retention_shreds_by_status_and_audits(engine: AsyncEngine) -> None:
    store = await _store(engine, "open", "closed", "old-closed")
    for case_id in ("closed", "old-closed"):
        await store.transition(case_id, CaseStatus.CLAIMED, "counselor:1", counselor_id=1)
        await store.transition(
            case_id, CaseStatus.CLOSED, "counselor:1", outcome=Outcome.NO_ACTION_WANTED
        )
    job = RetentionJob(store, Retention(closed_days=30, queued_days=0))
    assert await job.purge_expired(utcnow() + timedelta(days=29)) == 0
    assert await job.purge_expired(utcnow() + timedelta(days=31)) == 2
    assert (await store.get("open")).status == "queued"
    for case_id in ("closed", "old-closed"):
        case = await store.get(case_id)
        assert case.status == "purged" and case.wrapped_key is None
    purges = sorted((s, d) for a, s, d in await _actions(engine) if a == "purge")
    assert purges == [("closed", "retention expired"), ("old-closed", "retention expired")]
    assert await job.purge_expired(utcnow() + timedelta(days=400)) == 0, "open cases kept"
    assert (await audit.verify(engine)).intact


async def test_a_legal_hold_keeps_a_case_from_retention_and_every_shred(
    engine: AsyncEngine,
) -> None:
    store = await _store(engine, "held")
    await store.set_legal_hold("held", "counselor:2", "court order 7")
    job = RetentionJob(store, Retention(queued_days=1))
    assert await job.purge_expired(utcnow() + timedelta(days=30)) == 0, "held: retention skips it"
    with pytest.raises(LegalHoldError):
        await store.shred("held", "counselor:2", "asked")
    await store.release_legal_hold("held", "counselor:2")
    assert await job.purge_expired(utcnow() + timedelta(days=30)) == 1
    actions = [(a, d) for a, s, d in await _actions(engine) if s == "held"]
    assert ("legal-hold", "court order 7") in actions and ("hold-release", "") in actions


async def test_malformed_and_ever_failing_reports_go_to_dead_letters(
    redis: Redis, engine: AsyncEngine
) -> None:
    # A real refusal by the database, for one case only.
    async with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(
                text(
                    "CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN "
                    "IF NEW.id = 'poison' THEN RAISE EXCEPTION 'poison'; END IF; "
                    "RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON cases "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_poison()"
                )
            )
        else:
            await conn.execute(
                text(
                    "CREATE TRIGGER refuse_poison BEFORE INSERT ON cases "
                    "WHEN NEW.id = 'poison' BEGIN SELECT RAISE(ABORT, 'poison'); END"
                )
            )
    await ensure_group(redis)
    public = keys.generate_private_key().public_key()
    for case_id in ("a", "poison", "b"):
        header = RoutingHeader(case_id, 0, "ko", "web", "filming", "kid", "2026-11-21T00:00Z")
        envelope = seal(b"{}", header, public).to_bytes()
        await redis.xadd(
            streams.REPORTS_STREAM, {"idempotency_key": f"k-{case_id}", "envelope": envelope}
        )
    too_long = RoutingHeader("c", 0, "ko", "web", "x" * 33, "kid", "2026-11-21T00:00Z")
    await redis.xadd(
        streams.REPORTS_STREAM,
        {"idempotency_key": "k-long", "envelope": seal(b"{}", too_long, public).to_bytes()},
    )
    await redis.xadd(streams.REPORTS_STREAM, {"idempotency_key": "x", "envelope": b"garbage"})
    store = CaseStore(engine)
    intake = Intake(redis, store, "c", max_failures=3)
    task = asyncio.create_task(intake.run())
    try:
        for _ in range(300):
            if await dead_letter_count(redis) == 3:
                break
            await asyncio.sleep(0.02)
    finally:
        intake.stop()
        await task
    assert await dead_letter_count(redis) == 3
    assert {c.id for c in await store.list_open()} == {"a", "b"}
    dead = cast(list[Entry], await redis.xrange(streams.DEAD_LETTER_STREAM))
    reasons = [fields[b"reason"].decode() for _, fields in dead]
    assert any("failed 3 times" in r for r in reasons)
    pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
    assert pending["pending"] == 0
    assert await redis.xlen(streams.REPORTS_STREAM) == 0, "acknowledged entries are deleted"
    assert await redis.hlen(streams.INTAKE_FAILURES_KEY) == 0


async def test_live_chat_is_sealed_both_ways_and_read_in_order(redis: Redis) -> None:
    centre = keys.generate_private_key()
    reply = keys.generate_private_key()
    chat = LiveChat(redis)
    await chat.ensure_relay_group()
    marker = "CANARY-채팅-1c9e"
    said = new_line(Sender.VICTIM, marker + " 1")
    first = await chat.from_victim("case-1", said, centre.public_key())
    answer = new_line(Sender.COUNSELOR, marker + " answer")
    await chat.from_counselor("case-1", answer, centre.public_key(), reply.public_key())
    await chat.event("case-1", Event(EventKind.DELIVERED, Sender.VICTIM, 1.0, ref=answer.id))
    ring = {keys.key_id(centre.public_key()): centre}

    whole = await chat.transcript("case-1", ring)
    assert [e.line for e in whole[:2]] == [said, answer], "both sides, in order, for the console"
    assert whole[2].event is not None and whole[2].event.ref == answer.id
    assert [e.entry_id for e in await chat.transcript("case-1", ring, after=first)] == [
        e.entry_id for e in whole[1:]
    ]

    (item,) = await chat.next_for_victims("bot-1")
    assert item.kind is OutboxKind.LINE and item.case_id == "case-1"
    assert chat.line_for_victim(item, reply) == answer
    with pytest.raises(SealingError):
        chat.line_for_victim(item, centre)  # sealed for the victim's reply key only
    moved = OutboxItem(item.entry_id, "case-2", item.kind, item.sealed)
    with pytest.raises(SealingError):
        chat.line_for_victim(moved, reply)  # put on another case: refused
    raw = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await redis.xrange(streams.case_transcript_stream("case-1"), count=1),
    )
    await redis.xadd(streams.case_transcript_stream("case-2"), dict(raw[0][1]))  # type: ignore[arg-type]  # bytes fields, as XRANGE gave them
    with pytest.raises(SealingError):
        await chat.transcript("case-2", ring)
    assert await chat.next_for_victims("bot-1") == [item], "unacknowledged: offered again"
    await chat.ack(item)
    assert await chat.next_for_victims("bot-1", block_ms=None) == []
    for stream in (streams.case_transcript_stream("case-1"), streams.RELAY_OUTBOX_STREAM):
        assert marker.encode() not in repr(await redis.xrange(stream)).encode()


async def test_a_dead_relay_workers_outbox_entries_are_taken_over(redis: Redis) -> None:
    chat = LiveChat(redis)
    await chat.ensure_relay_group()
    await chat.notify_victim("case-9", OutboxKind.JOINED, Sender.COUNSELOR)
    (taken,) = await chat.next_for_victims("dead-worker")
    assert await chat.take_over_stale("live-worker", idle_ms=60_000) == []
    (item,) = await chat.take_over_stale("live-worker", idle_ms=0)
    assert item == taken and item.kind is OutboxKind.JOINED
    await chat.ack(item)
    assert await chat.take_over_stale("live-worker", idle_ms=0) == []
    (joined,) = await chat.transcript("case-9", {})
    assert joined.event is not None and joined.event.kind is EventKind.JOINED


def _old_schema_then_upgrade(conn: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(database.MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    command.upgrade(config, database.BASELINE_REVISION)
    conn.execute(text("DROP TABLE alembic_version"))  # as create_all left it
    conn.execute(
        text(
            "INSERT INTO cases (id, idempotency_key, received_at, status, priority, language, "
            "channel, category, key_id, created_at, header, wrapped_key, nonce, ciphertext) "
            "VALUES ('old', 'k', :t, 'queued', 1, 'ko', 'web', 'filming', 'kid', 'x', "
            ":b, :b, :b, :b)"
        ),
        {"t": utcnow().replace(tzinfo=None), "b": b"\x00"},
    )


async def test_a_database_made_before_migrations_upgrades_in_place(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await conn.run_sync(_old_schema_then_upgrade)
    await database.migrate(engine)
    await database.migrate(engine)  # every start runs it; the second does nothing
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: set(inspect(c).get_table_names()))
    assert {"audit_log", "receipts", "deployment_secrets", "alembic_version"} <= tables
    old = await CaseStore(engine).get("old")
    assert old.status_changed_at == old.received_at and old.priority == 1
    await CaseStore(engine).transition("old", CaseStatus.CLAIMED, "counselor:1", counselor_id=1)


async def test_console_alerts_while_dead_letters_wait(
    hotline: RunningHotline, redis: Redis
) -> None:
    await sign_in_and_change_password(hotline, "a long new password")
    assert "dead-letter" not in await (await hotline.client.get("/console")).text()
    await redis.xadd(streams.REPORTS_STREAM, {"idempotency_key": "x", "envelope": b"garbage"})
    for _ in range(250):
        if await dead_letter_count(redis):
            break
        await asyncio.sleep(0.02)
    page = await (await hotline.client.get("/console")).text()
    assert 'role="alert"' in page and "1 report(s) could not be stored" in page
