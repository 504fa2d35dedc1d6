"""Canary: a marker in every field a victim fills appears nowhere in plaintext at rest.

Checked after the whole path (web chat and the bot's sender → sealed stream → intake → store →
a counselor unseals, claims and closes it, a handoff message): every row of every table, every
value in Redis, the embedded Redis' append-only file, every file under the data directories,
and every log record. The marker does reach the counselor's page, which proves it was there.
"""

from __future__ import annotations

import base64
import logging
import uuid
from pathlib import Path
from typing import cast

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from backend import audit, bootstrap
from backend.cases import CaseStore
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.conversation import SubmitReport
from backend.core.live_chat import LiveChat, Sender, new_line
from backend.embedded_redis import EmbeddedRedis
from backend.receipts import ReceiptBook
from bot.reports import ReportSender
from tests.conftest import FAST_KDF, Pair, RunningHotline
from tests.test_console import csrf_of, report, sign_in_and_change_password, wait_for_cases

pytestmark = pytest.mark.crypto

MARKER = "CANARY-5be1-가해자"
# Every answer a report flow may collect, each carrying the marker.
FIELDS = ("details", "platform", "offender", "url", "contact", "age", "evidence_note")


async def _redis_values(redis: Redis) -> bytes:
    seen = []
    async for key in redis.scan_iter(count=500):
        seen.append(key)
        kind = cast(bytes, await redis.type(key)).decode()
        if kind == "stream":
            seen.append(repr(await redis.xrange(key)).encode())
        elif kind == "hash":
            seen.append(repr(await redis.hgetall(key)).encode())
        elif kind == "string":
            seen.append(cast(bytes, await redis.get(key)))
        elif kind == "list":
            seen.append(repr(await redis.lrange(key, 0, -1)).encode())
        elif kind == "set":  # a counselor's console sessions (issue 15)
            seen.append(repr(sorted(await redis.smembers(key))).encode())
        elif kind == "zset":
            seen.append(repr(await redis.zrange(key, 0, -1, withscores=True)).encode())
        else:
            raise AssertionError(f"a Redis {kind} this canary does not read yet")
    return b"\n".join(seen)


async def _database_rows(engine: AsyncEngine) -> str:
    dumped = []
    async with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            rows = (await conn.execute(text(f"SELECT * FROM {table.name}"))).all()  # noqa: S608 - our own table names
            dumped.append(repr(rows))
    return "\n".join(dumped)


def _files_under(directories: list[Path]) -> dict[str, bytes]:
    return {
        str(path): path.read_bytes()
        for directory in directories
        for path in directory.rglob("*")
        if path.is_file()
    }


async def test_marker_is_nowhere_in_plaintext(
    *,
    hotline: RunningHotline,
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    embedded_redis: EmbeddedRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await report(hotline, f"hidden camera {MARKER}")
    encoded = bootstrap.read_public_key(tmp_path / "data")
    assert encoded is not None
    case_id = uuid.uuid4().hex
    sender = ReportSender(redis, keys.decode_public_key(encoded))
    # A screenshot kept with consent: sealed at upload, carried in the report, never in clear.
    screenshot = b"\x89PNG screenshot of a threat: " + MARKER.encode()
    await sender.send(
        SubmitReport(
            idempotency_key=f"{case_id}:1",
            case_id=case_id,
            category="sextortion",
            priority=2,
            language="ko",
            channel="web",
            answers={name: f"{name}: {MARKER}" for name in FIELDS},
            sealed_files=(base64.b64encode(sender.seal_file(screenshot)).decode(),),
        )
    )
    # The victim blocked the bot: the content-free event flags the case.
    await sender.send_event(f"{case_id}:blocked", streams.EVENT_VICTIM_UNREACHABLE, [case_id])
    await sign_in_and_change_password(hotline, "a long new password")
    cases = await wait_for_cases(hotline, 2)
    await LiveChat(redis).from_victim(
        case_id, new_line(Sender.VICTIM, MARKER), keys.decode_public_key(encoded)
    )
    code = await ReceiptBook(engine, FAST_KDF, b"r" * 32).issue(case_id)

    for case in cases:
        page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
        assert MARKER in page, "the counselor reads it: it really went through"
        await hotline.client.post(
            f"/console/cases/{case['id']}/claim", data={"csrf": csrf_of(page)}
        )
    listed = await CaseStore(engine).list_open()
    assert all(c.status == "claimed" for c in listed)
    assert [c.id for c in listed if c.victim_unreachable_at is not None] == [case_id]
    assert (await audit.verify(engine)).intact
    async with engine.connect() as conn:
        actions = [r[0] for r in await conn.execute(text("SELECT action FROM audit_log"))]
    # Each page view unseals (the claim redirects back to the page): all audited. The first
    # start also published the shipped flows as version 1 (issue 15).
    assert actions[0] == "flows-publish"
    assert sorted(set(actions[1:])) == ["claim", "unseal"] and actions.count("claim") == 2

    needles = (MARKER.encode(), MARKER.encode("utf-16-le"), code.encode())
    haystacks = {
        "database rows": (await _database_rows(engine)).encode(),
        "redis values": await _redis_values(redis),
        "logs": "\n".join(r.getMessage() for r in caplog.records).encode(),
    }
    directories = [tmp_path]
    if pair.name == "embedded":
        directories.append(embedded_redis.directory)
    files = _files_under(directories)
    haystacks |= files
    assert any(path.endswith(".sqlite3") for path in files) or pair.name == "server"
    for where, haystack in haystacks.items():
        for needle in needles:
            assert needle not in haystack, f"plaintext in {where}"
    assert await redis.xlen(streams.case_transcript_stream(case_id)) == 1
