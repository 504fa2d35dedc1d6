"""Telegram's outbound limits across every bot worker, kept in Redis.

Telegram counts per bot (about 30 messages a second) and per chat (about one a second, short
bursts tolerated), whichever worker sends. The outbox's in-process buckets pace one worker;
with several workers behind the webhook their sum would go over. So each send also takes a
slot in two moving windows in Redis, with the `limits` library (`MovingWindowRateLimiter`:
an atomic script per hit, never more than `amount` entries in any window): the bot's
(`per_bot_burst` per `per_bot_burst / per_bot_per_s` seconds, Telegram's 30 per second) and its
chat's (`per_chat_burst` per `per_chat_burst / per_chat_per_s` seconds: 3 per 3 s). Windows are
whole seconds (the library's granularity), at least one.

The bot's slot is taken first and the chat's right after: a slot is stamped when taken, so
taking the chat's first and then waiting for the bot would let two sends to one chat be closer
than its window says. A chat slot another worker took meanwhile leaves our bot slot unused
(slower, never over), and we wait for the chat and try both again.

A wait ends early, without a slot, when the outbox says the send was dropped (a quick exit,
issue 12): a dropped reply must not go on waiting for, and then take, a slot the exit's notice
needs. The exit's own send takes the bot's slot only: the chat's window was filled by replies
the victim is to see no more.

The chat is named by its rate-limit pseudonym (`Purpose.RATE_LIMIT`), never its id, as Redis
keys are stored. Timestamps are the workers' clocks: keep them synchronised (NTP).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable

from limits import RateLimitItemPerSecond
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from redis.asyncio import Redis

from backend.core import redis_keys
from bot.telegram.outbox import OutboxLimits

# A wait is never shorter than this: a window that frees "now" is asked again a moment later.
_MIN_WAIT_S = 0.005


def _window(rate_per_s: float, burst: int) -> RateLimitItemPerSecond:
    """`burst` sends per the time the rate takes to earn them, in whole seconds (at least 1)."""
    seconds = max(1, math.ceil(burst / rate_per_s))
    return RateLimitItemPerSecond(max(1, math.floor(rate_per_s * seconds)), seconds)


class SharedRateLimits:
    def __init__(
        self, redis: Redis, bot_id: int, limits: OutboxLimits, chat_key: Callable[[int], str]
    ) -> None:
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=redis_keys.TELEGRAM_RATE_PREFIX,
            # Our own pool, so the windows follow the node's Redis (embedded, Sentinel).
            connection_pool=redis.connection_pool,  # type: ignore[arg-type]  # documented option; `limits` types options as scalars
        )
        self._limiter = MovingWindowRateLimiter(storage)
        self._bot = _window(limits.per_bot_per_s, limits.per_bot_burst)
        self._chat = _window(limits.per_chat_per_s, limits.per_chat_burst)
        self._bot_id = str(bot_id)
        self._chat_key = chat_key

    def __repr__(self) -> str:
        return f"SharedRateLimits(bot={self._bot}, chat={self._chat})"

    async def wait(
        self, chat_id: int, *, abandoned: asyncio.Event | None = None, urgent: bool = False
    ) -> bool:
        """Until this worker may send one message to `chat_id` within both windows (True); False,
        without a slot, once `abandoned` is set. `urgent`: the bot's window only."""
        chat = self._chat_key(chat_id)
        while True:
            while not await self._limiter.hit(self._bot, self._bot_id):
                if not await self._until_free(abandoned, self._bot, self._bot_id):
                    return False
            if urgent or await self._limiter.hit(self._chat, self._bot_id, chat):
                return True
            if not await self._until_free(abandoned, self._chat, self._bot_id, chat):
                return False

    async def _until_free(
        self, abandoned: asyncio.Event | None, item: RateLimitItemPerSecond, *identifiers: str
    ) -> bool:
        """Sleep until the window may have room: False (at once) if `abandoned` is set."""
        stats = await self._limiter.get_window_stats(item, *identifiers)
        wait_s = max(min(stats.reset_time - time.time(), float(item.get_expiry())), _MIN_WAIT_S)
        if abandoned is None:
            await asyncio.sleep(wait_s)
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await abandoned.wait()
        return not abandoned.is_set()
