"""Each Telegram update is processed once, across restarts and several bot workers.

Telegram redelivers what it thinks was not received: a webhook answered late or with an error,
getUpdates after a restart before the offset was confirmed, two workers behind one load
balancer. The first worker to `claim` an `update_id` (Redis SET NX, one round trip) processes
it; every other copy within a day is dropped.

WARNING: at-most-once per worker crash. The claim is taken before the turn runs, so an update
whose worker dies mid-turn is not processed again. python-telegram-bot already confirms an
update (polling offset, webhook 200) once it is queued, not once it is handled, so a longer
claim lease would not bring such an update back: it is lost with the worker either way.

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
        claimed = await self._redis.set(key, b"1", nx=True, ex=streams.TELEGRAM_UPDATE_TTL_S)
        return bool(claimed)
