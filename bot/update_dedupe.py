"""Each Telegram update is processed once, across restarts and several bot workers.

Telegram redelivers what it thinks was not received: a webhook answered late or with an error,
getUpdates after a restart before the offset was confirmed, two workers behind one load
balancer. The first worker to `claim` an `update_id` (Redis SET NX) processes it; every other
copy is dropped. A claim lasts as long as one turn may take, so a worker that dies mid-turn
lets a later redelivery through; a finished update is remembered for a day.

The key holds only the bot id and Telegram's update counter, which name no one.
"""

from __future__ import annotations

from redis.asyncio import Redis

from backend import streams


class UpdateDedupe:
    def __init__(self, redis: Redis, bot_id: int) -> None:
        self._redis = redis
        self._bot_id = bot_id

    async def claim(self, update_id: int) -> bool:
        """True for the first copy of this update anywhere; False for a duplicate."""
        key = streams.telegram_update_key(self._bot_id, update_id)
        claimed = await self._redis.set(
            key, b"claimed", nx=True, ex=streams.TELEGRAM_UPDATE_CLAIM_TTL_S
        )
        return bool(claimed)

    async def done(self, update_id: int) -> None:
        """Remember a processed update long enough to outlast every redelivery."""
        key = streams.telegram_update_key(self._bot_id, update_id)
        await self._redis.set(key, b"done", xx=True, ex=streams.TELEGRAM_UPDATE_DONE_TTL_S)
