"""Telegram's outbound limits across every bot worker, kept in Redis.

Telegram counts per bot (about 30 messages a second) and per chat (about one a second, short
bursts tolerated), whichever worker sends. The outbox's in-process buckets pace one worker;
with several workers behind the webhook their sum would go over. So each send also takes a
slot in two moving windows in Redis, with the `limits` library (`MovingWindowRateLimiter`:
an atomic script per hit, never more than `amount` entries in any window): the bot's
(`per_bot_burst` per `per_bot_burst / per_bot_per_s` seconds, Telegram's 30 per second) and its
chat's (`per_chat_burst` per `per_chat_burst / per_chat_per_s` seconds: 3 per 3 s). Windows are
whole seconds (the library's granularity), at least one.

Both slots are taken in one script, together or not at all (`_ACQUIRE_BOTH`: one round trip a
send, not one per window), in the library's own list of timestamps per window, so its window
statistics tell how long to wait for whichever window was full. A slot is stamped when taken,
and neither is taken while the other is full: no bot slot is left unused behind a full chat,
and no two sends to one chat are closer than its window says.

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
# The `limits` library's moving window (its acquire script: a list of timestamps, newest first,
# at most `limit` long), for the bot's window and the chat's at once.
# KEYS: bot window, chat window. ARGV: now, bot limit, bot expiry (s), chat limit, chat expiry
# (s), take the chat's too (1|0). 0: taken; 1: the bot's window is full; 2: the chat's is.
_ACQUIRE_BOTH = """
local now = tonumber(ARGV[1])
local function full(key, limit, expiry)
  local entry = redis.call('LINDEX', key, limit - 1)
  return entry and tonumber(entry) >= now - expiry
end
local function take(key, limit, expiry)
  redis.call('LPUSH', key, ARGV[1])
  redis.call('LTRIM', key, 0, limit - 1)
  redis.call('EXPIRE', key, expiry)
end
local chat = ARGV[6] == '1'
if full(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3])) then return 1 end
if chat and full(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5])) then return 2 end
take(KEYS[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
if chat then take(KEYS[2], tonumber(ARGV[4]), tonumber(ARGV[5])) end
return 0
"""


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
        self._acquire_both = redis.register_script(_ACQUIRE_BOTH)
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
        windows = [self._key(self._bot, self._bot_id), self._key(self._chat, self._bot_id, chat)]
        while True:
            args = [time.time(), self._bot.amount, self._bot.get_expiry()]
            args += [self._chat.amount, self._chat.get_expiry(), 0 if urgent else 1]
            full = await self._acquire_both(windows, args)
            if full == 0:
                return True
            item, identifiers = (
                (self._bot, (self._bot_id,)) if full == 1 else (self._chat, (self._bot_id, chat))
            )
            if not await self._until_free(abandoned, item, *identifiers):
                return False

    @staticmethod
    def _key(item: RateLimitItemPerSecond, *identifiers: str) -> str:
        """A window's Redis key as the library names it (its prefix, then the item's key)."""
        return f"{redis_keys.TELEGRAM_RATE_PREFIX}:{item.key_for(*identifiers)}"

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
