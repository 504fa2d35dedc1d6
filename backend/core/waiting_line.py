"""The handoff waiting line: the one place that writes the sorted set of waiting requests.

The bot puts a request in and tells the victim their place; the console takes a case out when a
counselor claims it (keeping its score, so a release puts it back in the same place) and forgets
it when the case closes. Most urgent first, then oldest first: that is what ZRANK means here.
Requests older than `HANDOFF_QUEUE_WINDOW_S` are dropped when a new one comes.
"""

from __future__ import annotations

from typing import cast

from redis.asyncio import Redis

from backend.core import redis_keys


def score(priority: int, at_s: float) -> int:
    """Most urgent first, then oldest first: what ZRANK of HANDOFF_QUEUE means."""
    level = redis_keys.HANDOFF_MAX_PRIORITY - max(0, min(priority, redis_keys.HANDOFF_MAX_PRIORITY))
    return level * redis_keys.HANDOFF_QUEUE_SLOT + int(at_s)


async def enqueue(redis: Redis, case_id: str, priority: int, now: float) -> int:
    """Put a request in line (once; a repeat keeps its place, and a request a counselor took
    stays out of it); its 1-based place."""
    queue = redis_keys.HANDOFF_QUEUE
    if await redis.exists(redis_keys.handoff_taken_key(case_id)):
        return 1  # asked again while a counselor holds it: nobody is before her

    oldest = now - redis_keys.HANDOFF_QUEUE_WINDOW_S
    # withscores=True answers (member, score) pairs; redis-py types every shape at once.
    entries = cast(list[tuple[bytes, float]], await redis.zrange(queue, 0, -1, withscores=True))
    stale = [m for m, at in entries if at % redis_keys.HANDOFF_QUEUE_SLOT < oldest]
    if stale:
        await redis.zrem(queue, *stale)
    await redis.zadd(queue, {case_id: score(priority, now)}, nx=True)
    rank = await redis.zrank(queue, case_id)
    return 1 + (rank if isinstance(rank, int) else 0)


async def raise_priority(redis: Redis, case_id: str, priority: int) -> None:
    """Triage read danger in a waiting victim's words (issue 12): her request moves up to
    `priority`, keeping its arrival time (the score's low part), so it goes before every request
    of a lower priority; a claimed one's kept place moves too, for a release. Never down."""
    slot = redis_keys.HANDOFF_QUEUE_SLOT
    waiting = await redis.zscore(redis_keys.HANDOFF_QUEUE, case_id)
    if waiting is not None:
        raised = score(priority, int(waiting) % slot)
        await redis.zadd(redis_keys.HANDOFF_QUEUE, {case_id: raised}, lt=True)
        return
    taken_key = redis_keys.handoff_taken_key(case_id)
    taken = await redis.get(taken_key)
    if isinstance(taken, bytes) and score(priority, int(float(taken)) % slot) < float(taken):
        await redis.set(
            taken_key, repr(float(score(priority, int(float(taken)) % slot))), keepttl=True
        )


async def claim(redis: Redis, case_id: str) -> None:
    """Taken: it no longer counts in the place the bot tells the next victim, until a release."""
    taken = await redis.zscore(redis_keys.HANDOFF_QUEUE, case_id)
    if taken is not None:
        await redis.set(
            redis_keys.handoff_taken_key(case_id),
            repr(taken),
            ex=redis_keys.HANDOFF_QUEUE_WINDOW_S,
        )
        await redis.zrem(redis_keys.HANDOFF_QUEUE, case_id)


async def release(redis: Redis, case_id: str) -> None:
    """Back in line at the place it had when it was claimed."""
    taken = await redis.getdel(redis_keys.handoff_taken_key(case_id))
    if taken is not None:
        await redis.zadd(redis_keys.HANDOFF_QUEUE, {case_id: float(taken)}, nx=True)


async def forget(redis: Redis, case_id: str) -> None:
    """A closed case no longer waits: out of the positions the bot tells victims, and no
    release of a later claim may put it back in an old place."""
    await redis.zrem(redis_keys.HANDOFF_QUEUE, case_id)
    await redis.delete(redis_keys.handoff_taken_key(case_id))
