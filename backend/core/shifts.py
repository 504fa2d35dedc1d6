"""Who is on shift: counselor presence in Redis, kept alive by an open console.

A counselor goes on shift with a button and off with another. In between, the open console
refreshes an expiry every `SHIFT_HEARTBEAT_S`; a laptop closed without going off shift stops
refreshing, and after `SHIFT_PRESENCE_TTL_S` the counselor no longer counts. An expired
presence is never revived by a later refresh: the counselor is told their shift lapsed and goes
on shift again with the button, so the audit log shows every start.

The bot reads only `count()`: when it is zero nobody will answer a handoff now, and the victim is
told so honestly (bot/runtime.py). Only counselor ids are kept here, never names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from redis.asyncio import Redis

from backend.core import redis_keys

# Refresh only a presence that has not expired yet (an expired one is removed instead), in one
# step, so a refresh racing with "off shift" cannot put the counselor back.
_REFRESH = """
local expires = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not expires then return 0 end
if tonumber(expires) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -1
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""


class ShiftBoard:
    def __init__(
        self,
        redis: Redis,
        *,
        ttl_s: int = redis_keys.SHIFT_PRESENCE_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._clock = clock

    async def start(self, counselor_id: int) -> bool:
        """Go on shift; False if already on (the expiry is refreshed either way)."""
        now = self._clock()
        was_on = await self.is_on(counselor_id)
        await self._redis.zadd(redis_keys.SHIFT_PRESENCE, {str(counselor_id): now + self._ttl_s})
        return not was_on

    async def end(self, counselor_id: int) -> bool:
        """Go off shift; False if not on shift (or the shift had lapsed already)."""
        was_on = await self.is_on(counselor_id)
        removed = await self._redis.zrem(redis_keys.SHIFT_PRESENCE, str(counselor_id))
        return was_on and bool(removed)

    async def refresh(self, counselor_id: int) -> str:
        """The console is still open: "on" (expiry renewed), "lapsed" (it had expired and is
        now removed; reported once) or "off"."""
        now = self._clock()
        result = await self._redis.eval(
            _REFRESH, 1, redis_keys.SHIFT_PRESENCE, str(counselor_id), now, now + self._ttl_s
        )
        return {1: "on", -1: "lapsed"}.get(int(result), "off")

    async def is_on(self, counselor_id: int) -> bool:
        expires = await self._redis.zscore(redis_keys.SHIFT_PRESENCE, str(counselor_id))
        return expires is not None and float(expires) > self._clock()

    async def on_shift(self) -> set[int]:
        """The ids of the counselors on shift now."""
        members = cast(
            list[bytes],
            await self._redis.zrangebyscore(redis_keys.SHIFT_PRESENCE, f"({self._clock()}", "+inf"),
        )
        return {int(m) for m in members}

    async def count(self) -> int:
        """How many counselors are on shift now: one round trip, for the bot's handoff."""
        return int(await self._redis.zcount(redis_keys.SHIFT_PRESENCE, f"({self._clock()}", "+inf"))
