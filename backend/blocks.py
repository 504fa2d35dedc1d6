"""Blocking a sender for a while (issue 13): a counselor blocks the conversation behind a case,
with a reason and an expiry; a supervisor sees and lifts blocks.

What is blocked is the BLOCKING pseudonym (`backend/core/pseudonyms.py`: its own key, so it
joins with no session, rate limit or case table). The bot puts it inside each sealed report
(`blocking`), so only a signed-in counselor's session reads it, at the moment of blocking; the
database never holds it. The bot learns of the block from Redis (`redis_keys.blocked_key`),
without the backend importing the bot: its door computes the same pseudonym and answers a
blocked sender with a neutral message and the emergency numbers.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from backend.core import redis_keys


@dataclass(frozen=True)
class Block:
    id: str
    case_id: str
    reason: str
    by: str
    until: float


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _block(block_id: str, record: dict[Any, Any]) -> Block:
    fields = {_text(k): _text(v) for k, v in record.items()}
    return Block(block_id, fields["case"], fields["reason"], fields["by"], float(fields["until"]))


class BlockBook:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def block(
        self, blocking_pseudonym: str, case_id: str, reason: str, by: str, hours: int
    ) -> Block:
        block_id = secrets.token_hex(8)
        ttl_s = hours * 3600
        until = time.time() + ttl_s
        record: Mapping[Any, Any] = {
            "case": case_id,
            "reason": reason,
            "by": by,
            "until": str(until),
            "target": redis_keys.blocked_key(blocking_pseudonym),
        }
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(redis_keys.blocked_key(blocking_pseudonym), block_id, ex=ttl_s)
            pipe.hset(redis_keys.block_key(block_id), mapping=record)
            pipe.expire(redis_keys.block_key(block_id), ttl_s)
            pipe.zadd(redis_keys.BLOCKS_INDEX, {block_id: until})
            await pipe.execute()
        return Block(block_id, case_id, reason, by, until)

    async def current(self) -> list[Block]:
        """Blocks still in force, the soonest to end first; ended ones leave the index."""
        now = time.time()
        await self._redis.zremrangebyscore(redis_keys.BLOCKS_INDEX, "-inf", now)
        found = []
        ids = cast("list[bytes]", await self._redis.zrange(redis_keys.BLOCKS_INDEX, 0, -1))
        for raw_id in ids:
            block_id = _text(raw_id)
            record = await self._redis.hgetall(redis_keys.block_key(block_id))
            if not record:
                continue
            fields = {_text(k): _text(v) for k, v in record.items()}
            found.append(
                Block(
                    block_id, fields["case"], fields["reason"], fields["by"], float(fields["until"])
                )
            )
        return found

    async def lift(self, block_id: str) -> Block | None:
        """End a block at once; the block lifted, or None if it had ended already."""
        record = await self._redis.hgetall(redis_keys.block_key(block_id))
        if not record:
            await self._redis.zrem(redis_keys.BLOCKS_INDEX, block_id)
            return None
        fields = {_text(k): _text(v) for k, v in record.items()}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(fields["target"], redis_keys.block_key(block_id))
            pipe.zrem(redis_keys.BLOCKS_INDEX, block_id)
            await pipe.execute()
        return Block(
            block_id, fields["case"], fields["reason"], fields["by"], float(fields["until"])
        )
