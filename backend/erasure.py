"""Erasing a case for real (issue 12, point 5): the crypto-shred in SQL and everything of the
case in Redis, by one call that the console's supervisor action, `hotline case shred` and
retention share.

The store shreds first (refused under a legal hold, `LegalHoldError`); then Redis forgets the
case: its live-chat transcript stream (which never expired before and survived a purge), the
relay's entries that name it and its link to the conversation, its place in the waiting line,
and its receipt, reply key and replies. The Redis part runs also for a case shredded before,
so a shred that crashed half-way is finished by the next one.
"""

from __future__ import annotations

import logging
from typing import cast

from redis.asyncio import Redis

from backend.cases import CaseStore
from backend.core import redis_keys, replies, waiting_line

log = logging.getLogger(__name__)

_PAGE = 500


async def shred(
    cases: CaseStore, redis: Redis | None, case_id: str, actor: str, reason: str
) -> bool:
    """Shred the case (audited as a purge, with `reason`) and forget it in Redis; True if it
    was shredded now. `LegalHoldError` under a hold, `CaseNotFoundError` for no such case."""
    shredded = await cases.shred(case_id, actor, reason)
    if redis is not None:
        await forget_in_redis(redis, case_id)
    if shredded:
        log.info("case %s shredded (%s)", case_id, actor)
    return shredded


async def forget_in_redis(redis: Redis, case_id: str) -> None:
    await replies.forget(redis, case_id)
    await waiting_line.forget(redis, case_id)
    await redis.delete(
        redis_keys.case_transcript_stream(case_id), redis_keys.relay_link_key(case_id)
    )
    await _drop_entries(redis, case_id, redis_keys.RELAY_OUTBOX_STREAM, redis_keys.RELAY_GROUP)
    await _drop_entries(
        redis,
        case_id,
        redis_keys.TRANSCRIPT_ARCHIVE_STREAM,
        redis_keys.TRANSCRIPT_ARCHIVE_GROUP,
    )


async def _drop_entries(redis: Redis, case_id: str, stream: str, group: str) -> None:
    """A shared stream's entries for this case (the relay outbox's lines sealed to the victim's
    reply key and joined/ended notices; transcript entries not yet archived): acknowledged and
    deleted, so no worker carries or stores them any more."""
    low = "-"
    wanted = case_id.encode()
    while True:
        page = cast(
            list[tuple[bytes, dict[bytes, bytes]]],
            await redis.xrange(stream, min=low, count=_PAGE),
        )
        field = redis_keys.FIELD_CASE.encode()
        ours = [entry for entry, fields in page if fields.get(field) == wanted]
        if ours:
            pipe = redis.pipeline(transaction=True)
            pipe.xack(stream, group, *ours)
            pipe.xdel(stream, *ours)
            pipe.hdel(redis_keys.RELAY_FAILURES_KEY, *ours)
            await pipe.execute()
        if len(page) < _PAGE:
            return
        low = "(" + page[-1][0].decode()
