"""Live-chat transcripts into SQL as the chat runs (issue 12, point 5).

Every transcript entry is written, in the same script call as its place in the case's Redis
stream, onto `TRANSCRIPT_ARCHIVE_STREAM` (backend/core/live_chat.py). This consumer stores them
in `transcript_entries`: lines exactly as they were sealed to the centre key, events as their
content-free fields. So the transcript is part of the case record: a database backup holds it,
and a shred deletes it with the case, in the same transaction. Redis keeps only the live buffer,
trimmed and expiring; the console reads the history from here and the newest from Redis.

Stored once (unique case and stream id; a replay is skipped), acknowledged and deleted after the
commit. An entry for a case already shredded is dropped, so a late one cannot bring it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from backend.core import redis_keys
from backend.core.stream_consumer import REDIS_TRANSIENT, StreamConsumer
from backend.models import Case, CaseStatus, TranscriptEntry

log = logging.getLogger(__name__)

ARCHIVE_GATHER_S = 0.25

Entries = list[tuple[bytes, dict[bytes, bytes]]]
_EVENT_FIELDS = (
    redis_keys.FIELD_EVENT,
    redis_keys.FIELD_BY,
    redis_keys.FIELD_AT,
    redis_keys.FIELD_REF,
)


async def ensure_group(redis: Redis) -> None:
    try:
        await redis.xgroup_create(
            redis_keys.TRANSCRIPT_ARCHIVE_STREAM,
            redis_keys.TRANSCRIPT_ARCHIVE_GROUP,
            id="0",
            mkstream=True,
        )
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _row(fields: dict[bytes, bytes]) -> dict[str, object] | None:
    """An archive entry as a row; None if it is malformed."""
    data = {k.decode(errors="replace"): v for k, v in fields.items()}
    case_id = data.get(redis_keys.FIELD_CASE, b"").decode(errors="replace")
    entry_id = data.get(redis_keys.FIELD_ENTRY, b"").decode(errors="replace")
    if not 0 < len(case_id) <= 64 or not 0 < len(entry_id) <= 40:
        return None
    sealed = data.get(redis_keys.FIELD_SEALED)
    if sealed is not None:
        return {"case_id": case_id, "entry_id": entry_id, "sealed": sealed, "event": None}
    event = {n: data[n].decode(errors="replace") for n in _EVENT_FIELDS if n in data}
    if redis_keys.FIELD_EVENT not in event:
        return None
    text = json.dumps(event, separators=(",", ":"))
    if len(text) > 400:
        return None
    return {"case_id": case_id, "entry_id": entry_id, "sealed": None, "event": text}


class TranscriptArchive(StreamConsumer):
    transient = (*REDIS_TRANSIENT, OperationalError, InterfaceError)

    def __init__(
        self,
        redis: Redis,
        engine: AsyncEngine,
        consumer: str,
        *,
        block_ms: int = redis_keys.TRANSCRIPT_ARCHIVE_BLOCK_MS,
    ) -> None:
        super().__init__()
        self._block_ms = block_ms
        self._redis = redis
        self._engine = engine
        self._consumer = consumer
        self._recover = True
        self.stored = 0

    async def _step(self) -> None:
        if self._recover:
            await ensure_group(self._redis)
            self._recover = False
            await self._handle(await self._read("0", block_ms=None))
        entries = await self._read(">", block_ms=self._block_ms)
        await self._handle(entries)
        if entries:
            # Not latency-critical: let a busy chat room gather into fewer, larger
            # transactions rather than compete with the console's live fan-out entry by entry.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), ARCHIVE_GATHER_S)

    def _service_away(self) -> None:
        log.warning("transcript archive: redis or database unreachable; retrying")
        self._recover = True

    def _step_failed(self, exc: Exception) -> None:
        log.error("transcript archive: unexpected error; retrying", exc_info=exc)
        self._recover = True

    async def _read(self, start: str, *, block_ms: int | None) -> Entries:
        response = await self._redis.xreadgroup(
            redis_keys.TRANSCRIPT_ARCHIVE_GROUP,
            self._consumer,
            {redis_keys.TRANSCRIPT_ARCHIVE_STREAM: start},
            count=redis_keys.TRANSCRIPT_ARCHIVE_BATCH,
            block=block_ms,
        )
        found: Entries = []
        for _stream, entries in cast(list[tuple[bytes, Entries]], response or []):
            found.extend(entries)
        return found

    async def _handle(self, entries: Entries) -> None:
        if not entries:
            return
        rows = [row for _id, fields in entries if fields and (row := _row(fields)) is not None]
        if rows:
            await self._store(rows)
        ids = [entry_id for entry_id, _fields in entries]
        pipe = self._redis.pipeline(transaction=True)
        pipe.xack(redis_keys.TRANSCRIPT_ARCHIVE_STREAM, redis_keys.TRANSCRIPT_ARCHIVE_GROUP, *ids)
        pipe.xdel(redis_keys.TRANSCRIPT_ARCHIVE_STREAM, *ids)
        await pipe.execute()

    async def _store(self, rows: list[dict[str, object]]) -> None:
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        async with self._engine.begin() as conn:
            cases = {str(r["case_id"]) for r in rows}
            shredded = {
                row[0]
                for row in await conn.execute(
                    select(col(Case.id)).where(
                        col(Case.id).in_(cases), col(Case.status) == CaseStatus.PURGED.value
                    )
                )
            }
            kept = [r for r in rows if r["case_id"] not in shredded]
            if kept:
                statement = insert(TranscriptEntry).values(kept).on_conflict_do_nothing()
                await conn.execute(statement)
        self.stored += len(kept)


async def archived(
    engine: AsyncEngine, case_id: str, after: str
) -> list[tuple[str, dict[bytes, bytes]]]:
    """The case's stored transcript entries (after the stream id `after`), as stream fields."""
    query = select(TranscriptEntry).where(col(TranscriptEntry.case_id) == case_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    found: list[tuple[str, dict[bytes, bytes]]] = []
    for row in rows:
        entry = TranscriptEntry.model_validate(row._mapping)
        if _order(entry.entry_id) <= _order(after):
            continue
        if entry.sealed is not None:
            found.append((entry.entry_id, {redis_keys.FIELD_SEALED.encode(): entry.sealed}))
        elif entry.event is not None:
            fields = json.loads(entry.event)
            found.append(
                (entry.entry_id, {str(k).encode(): str(v).encode() for k, v in fields.items()})
            )
    return sorted(found, key=lambda item: _order(item[0]))


def _order(entry_id: str) -> tuple[int, int]:
    millis, _, seq = entry_id.partition("-")
    try:
        return int(millis), int(seq or 0)
    except ValueError:
        return (0, 0)
