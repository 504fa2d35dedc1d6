"""Each Telegram update is processed once, across restarts and several bot workers.

Telegram redelivers what it thinks was not received: a webhook answered late or with an error,
getUpdates after a restart before the offset was confirmed, two workers behind one load
balancer. A worker `claim`s an `update_id` with a lease (Redis SET NX holding its own token,
expiring after `TELEGRAM_UPDATE_LEASE_S`) and marks it `done` once handled (kept a day).

- A copy of an update that is done is dropped.
- A copy of an update another worker holds is `busy`: the webhook answers 503, so Telegram
  tries again later. If that worker died mid-turn, its lease runs out and the next copy is
  handled: in webhook mode an update is acknowledged (200) only after it was handled, so a
  worker's crash loses nothing.
- A text or button press is marked done by the write that steps its conversation (`Once`, in
  the same round trip), not after its replies: they go out at Telegram's pace, seconds for a
  long turn, and a copy arriving meanwhile is dropped as done (the webhook answers 200) rather
  than asked again for. The step's write also keeps its replies until they went out
  (`bot.telegram.outgoing`): a worker that dies after the step has them sent by another; it
  never has the step taken twice.
- In polling mode the getUpdates offset moves past an update only once it was handled
  (`bot.telegram.polling`), so a dead worker's update is fetched again and handed over the same
  way.

The key holds only the bot id and Telegram's update counter, which name no one.
"""

from __future__ import annotations

import secrets
from enum import Enum

from redis.asyncio import Redis

from backend.core import redis_keys
from bot.sessions import Once

_DONE = b"done"


class Claim(Enum):
    MINE = "mine"  # handle it
    DONE = "done"  # a copy of an update already handled: drop it
    BUSY = "busy"  # another worker holds it now: ask Telegram to try again later


class UpdateDedupe:
    def __init__(
        self, redis: Redis, bot_id: int, *, lease_s: int = redis_keys.TELEGRAM_UPDATE_LEASE_S
    ) -> None:
        self._redis = redis
        self._bot_id = bot_id
        self._lease_s = lease_s
        self._token = secrets.token_hex(8).encode()  # this worker

    async def claim(self, update_id: int) -> Claim:
        key = redis_keys.telegram_update_key(self._bot_id, update_id)
        ttl = self._lease_s
        if await self._redis.set(key, self._token, nx=True, ex=ttl):
            return Claim.MINE
        holder = await self._redis.get(key)
        if holder == self._token:
            return Claim.MINE  # admitted by this worker's webhook, now dispatched
        if holder == _DONE:
            return Claim.DONE
        if holder is None:  # the lease ran out just now: try once more
            taken = await self._redis.set(key, self._token, nx=True, ex=ttl)
            return Claim.MINE if taken else Claim.BUSY
        return Claim.BUSY

    def once(self, update_id: int) -> Once:
        """The claim as a `Once`, for a caller that takes it in the same step as the
        conversation lock (`SessionStore.hold`): the same key and token as `claim`, a lease
        renewed while the turn runs, marked done by the write that steps the conversation."""
        key = redis_keys.telegram_update_key(self._bot_id, update_id)
        # Renewed while the turn holds its conversation, so short: a worker killed mid-turn
        # lets the update go within seconds (the next copy is handled), as it lets the lock go.
        lease_s = min(self._lease_s, redis_keys.TELEGRAM_UPDATE_TURN_LEASE_S)
        return Once(key, self._token, lease_s, _DONE, redis_keys.TELEGRAM_UPDATE_TTL_S)

    @staticmethod
    def refused(holder: bytes | None) -> Claim:
        """What a `Once` refused for `holder` means: done, or held by another worker."""
        return Claim.DONE if holder == _DONE else Claim.BUSY

    def done_key(self, update_id: int) -> str:
        """The key a caller's own atomic write may set to `done` (kept
        `TELEGRAM_UPDATE_TTL_S`), to mark the update done without a round trip of its own."""
        return redis_keys.telegram_update_key(self._bot_id, update_id)

    async def done(self, update_id: int) -> None:
        key = redis_keys.telegram_update_key(self._bot_id, update_id)
        await self._redis.set(key, _DONE, ex=redis_keys.TELEGRAM_UPDATE_TTL_S)
