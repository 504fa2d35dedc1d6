"""Intake and sealing benchmark: prints figures and ratios measured in one run; asserts nothing.

1. Sealing: the cost of sealing one report as the bot does (routing header, per-case data key,
   HPKE-wrapped key, envelope bytes) as a ratio to a bare HPKE seal of the same body in the
   same run. Target: at most 1.5x.
2. Intake: sealed reports stored per second from the reports stream into the case store
   (batched XREADGROUP → one multi-row INSERT per batch → XACK), on the database and Redis
   given. Target: at least 1,000 reports/s on PostgreSQL on a 2-core machine.

Usage (the database's hotline tables and the Redis db are wiped: use scratch ones):
    HOTLINE_BENCH_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/scratch \\
    HOTLINE_BENCH_REDIS_URL=redis://127.0.0.1:6379/15 python bench/intake.py [reports]
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hpke
from redis.asyncio import Redis
from sqlalchemy import text
from sqlmodel import SQLModel

from backend import database
from backend.cases import CaseStore
from backend.core import keys, redis_keys
from backend.core.sealing import RoutingHeader, seal
from backend.intake import Intake, ensure_group

SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
SEAL_TARGET_RATIO = 1.5
INTAKE_TARGET_PER_S = 1000.0


def _body() -> bytes:
    answers = {
        "category": "sextortion",
        "details": "가해자가 영상을 유포하겠다고 협박했습니다. " * 8,
        "platform": "instagram",
        "evidence": json.dumps([{"sha256": "ab" * 32, "kind": "photo"}] * 3),
    }
    return json.dumps({"answers": answers}, ensure_ascii=False).encode()


def _header(key_id: str) -> RoutingHeader:
    return RoutingHeader(
        case_id=uuid.uuid4().hex,
        priority=1,
        language="ko",
        channel="telegram",
        category="sextortion",
        key_id=key_id,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def bench_sealing(rounds: int = 7, per_round: int = 2000) -> float:
    public = keys.generate_private_key().public_key()
    kid = keys.key_id(public)
    body = _body()
    best_bare = best_full = float("inf")
    for _ in range(rounds):  # interleaved, best of each: noise only ever adds time
        start = time.perf_counter()
        for _ in range(per_round):
            SUITE.encrypt(body, public, info=b"")
        best_bare = min(best_bare, (time.perf_counter() - start) / per_round)
        start = time.perf_counter()
        for _ in range(per_round):
            seal(body, _header(kid), public).to_bytes()
        best_full = min(best_full, (time.perf_counter() - start) / per_round)
    ratio = best_full / best_bare
    print(f"sealing: body {len(body)} bytes")
    print(f"  bare HPKE seal:    {best_bare * 1e6:8.1f} us  (floor)")
    print(f"  hotline seal:      {best_full * 1e6:8.1f} us")
    verdict = "ok" if ratio <= SEAL_TARGET_RATIO else "ABOVE TARGET"
    print(f"  ratio:             {ratio:8.2f} x   (target <= {SEAL_TARGET_RATIO}x: {verdict})")
    return ratio


async def bench_intake(database_url: str, redis_url: str, reports: int) -> float:
    engine = database.create_engine(database_url)
    redis = Redis.from_url(redis_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(SQLModel.metadata.drop_all)
            await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        await database.migrate(engine)
        await redis.flushdb()
        await ensure_group(redis)
        public = keys.generate_private_key().public_key()
        kid, body = keys.key_id(public), _body()
        async with redis.pipeline(transaction=False) as pipe:
            for n in range(reports):
                envelope = seal(body, _header(kid), public).to_bytes()
                pipe.xadd(
                    redis_keys.REPORTS_STREAM,
                    {
                        redis_keys.FIELD_IDEMPOTENCY_KEY: f"bench-{n}",
                        redis_keys.FIELD_ENVELOPE: envelope,
                    },
                )
            await pipe.execute()
        store = CaseStore(engine)
        intake = Intake(redis, store, "bench")
        start = time.perf_counter()
        task = asyncio.create_task(intake.run())
        while intake.stored < reports:  # noqa: ASYNC110 - polls a counter; 5 ms is noise here
            await asyncio.sleep(0.005)
        elapsed = time.perf_counter() - start
        intake.stop()
        await task
        assert await store.count() == reports
        pending = await redis.xpending(redis_keys.REPORTS_STREAM, redis_keys.INTAKE_GROUP)
        assert pending["pending"] == 0
    finally:
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()
    rate = reports / elapsed
    verdict = "ok" if rate >= INTAKE_TARGET_PER_S else "BELOW TARGET"
    print(f"intake: {reports} sealed reports from the stream into {engine.dialect.name}")
    print(f"  stored:            {rate:8.0f} reports/s in {elapsed:.2f} s")
    print(
        f"  ratio to target:   {rate / INTAKE_TARGET_PER_S:8.2f} x   "
        f"(target >= {INTAKE_TARGET_PER_S:.0f}/s: {verdict})"
    )
    return rate


def main() -> int:
    reports = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    bench_sealing()
    database_url = os.environ.get("HOTLINE_BENCH_DATABASE_URL")
    redis_url = os.environ.get("HOTLINE_BENCH_REDIS_URL")
    if not database_url or not redis_url:
        print("intake: set HOTLINE_BENCH_DATABASE_URL and HOTLINE_BENCH_REDIS_URL to measure it")
        return 0
    asyncio.run(bench_intake(database_url, redis_url, reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
