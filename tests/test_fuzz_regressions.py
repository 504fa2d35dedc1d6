"""What the fuzz tests (`tests/test_fuzz_*.py`) found, each kept as a named regression test."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core import redis_keys
from tests.conftest import RunningHotline
from tests.test_console import csrf_of, sign_in_and_change_password


async def test_fuzz_a_receipt_lookup_of_what_cannot_be_a_code_writes_nothing(
    hotline: RunningHotline, redis: Redis, engine: AsyncEngine
) -> None:
    """Found by the console API fuzz: `{"code": ""}` was refused (400) after it had been counted
    against the counselor's lookups and audited; a refused input must change nothing."""
    await sign_in_and_change_password(hotline, "a long new passphrase")
    csrf = csrf_of(await (await hotline.client.get("/console")).text())
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    for code in ["", "12345", "not a code at all, much too long to be one"]:
        response = await hotline.client.post(
            "/api/receipts/lookup", json={"code": code}, headers={"X-CSRF-Token": csrf}
        )
        assert response.status == 400
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert after == before
    assert [k async for k in redis.scan_iter(match=redis_keys.RECEIPT_LOOKUPS_PREFIX + "*")] == []
