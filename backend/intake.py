"""Intake: the backend's consumer of the reports stream.

Exactly once in effect: an entry is acknowledged only after its case is committed, and storing
is an upsert on the report's idempotency key, so a redelivery (after a crash between commit
and XACK, or after another consumer reclaims it) stores nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from backend import streams
from backend.cases import CaseStore
from backend.errors import SealingError
from backend.sealing import Envelope

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]
RETRY_DELAY_S = 1.0


async def ensure_group(redis: Redis) -> None:
    try:
        await redis.xgroup_create(
            streams.REPORTS_STREAM, streams.INTAKE_GROUP, id="0", mkstream=True
        )
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


class Intake:
    def __init__(self, redis: Redis, cases: CaseStore, consumer: str) -> None:
        self._redis = redis
        self._cases = cases
        self._consumer = consumer
        self.stored = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Consume until `stop()`; between blocking reads of at most INTAKE_BLOCK_MS.

        Stopping is cooperative rather than by cancelling the task: redis-py can swallow a
        cancellation that lands in a blocking XREADGROUP, and then shutdown hangs.
        """
        await ensure_group(self._redis)
        # First our own pending entries (we crashed before XACK), then new ones.
        await self._drain_own_pending()
        while not self._stopping.is_set():
            try:
                await self._reclaim_stale()
                entries = await self._read(">", block_ms=streams.INTAKE_BLOCK_MS)
                await self.handle(entries)
            except (RedisConnectionError, OSError):
                log.warning("intake: redis or database unreachable; retrying")
                await self._pause()
            except Exception:
                log.exception("intake: unexpected error; retrying")
                await self._pause()

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), RETRY_DELAY_S)

    async def _drain_own_pending(self) -> None:
        while entries := await self._read("0", block_ms=None):
            await self.handle(entries)
            if len(entries) < streams.INTAKE_BATCH:
                return

    async def _reclaim_stale(self) -> None:
        result = await self._redis.xautoclaim(
            streams.REPORTS_STREAM,
            streams.INTAKE_GROUP,
            self._consumer,
            min_idle_time=streams.INTAKE_CLAIM_IDLE_MS,
            start_id="0-0",
            count=streams.INTAKE_BATCH,
        )
        claimed: list[Entry] = [e for e in result[1] if e[1]]
        if claimed:
            log.info("intake: reclaimed %d stale entries", len(claimed))
            await self.handle(claimed)

    async def _read(self, start: str, *, block_ms: int | None) -> list[Entry]:
        response = await self._redis.xreadgroup(
            streams.INTAKE_GROUP,
            self._consumer,
            {streams.REPORTS_STREAM: start},
            count=streams.INTAKE_BATCH,
            block=block_ms,
        )
        if not response:
            return []
        # redis-py types XREADGROUP loosely; the reply is [[stream, [(id, fields), ...]]].
        entries = cast(list[Entry], response[0][1])  # type: ignore[index]
        return [e for e in entries if e[1]]

    async def handle(self, entries: Sequence[Entry]) -> None:
        for entry_id, fields in entries:
            try:
                idempotency_key = fields[streams.FIELD_IDEMPOTENCY_KEY.encode()].decode()
                envelope = Envelope.from_bytes(fields[streams.FIELD_ENVELOPE.encode()])
            except (KeyError, UnicodeDecodeError, SealingError):
                # A malformed entry can never succeed; keep it out of the way (dead letters: #5).
                log.error("intake: dropping malformed entry %s", entry_id.decode())
                await self._redis.xack(streams.REPORTS_STREAM, streams.INTAKE_GROUP, entry_id)
                continue
            if await self._cases.store_sealed(idempotency_key, envelope):
                self.stored += 1
                log.info("intake: stored case %s", envelope.header.case_id)
            await self._redis.xack(streams.REPORTS_STREAM, streams.INTAKE_GROUP, entry_id)
