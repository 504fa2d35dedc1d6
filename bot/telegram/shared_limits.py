"""Telegram's outbound limits across every bot worker, kept in Redis, handed out by priority.

Telegram counts per bot (about 30 messages a second) and per chat (about one a second, short
bursts tolerated), whichever worker sends. The outbox's in-process buckets pace one chat on one
worker; with several workers behind the webhook their sum would go over. So each send takes a
slot in two moving windows in Redis: the bot's (`per_bot_burst` per `per_bot_burst /
per_bot_per_s` seconds, Telegram's 30 per second) and its chat's (`per_chat_burst` per
`per_chat_burst / per_chat_per_s` seconds: 3 per 3 s). Windows are whole seconds, at least one.

When the bot's window is the bottleneck (a surge: thousands of new conversations within
minutes), who gets the next slot matters (issue 14): replies to conversations triaged as
danger, self-harm, sextortion or a minor go first. So a send waiting for the bot's window
stands in one line shared by every worker, a sorted set scored by priority, then by when the
send was asked for; a slot goes to a waiter only when fewer waiters stand before it than the
window has room. One script takes both slots, or none, in one atomic step on Redis's clock;
when it cannot, it says how long until this waiter's turn may come (when as many of the
window's slots have aged out as there are waiters before it), so waiters do not all poll at
once. A waiter silent for `TELEGRAM_RATE_WAITER_STALE_MS` (its worker died) is forgotten.

A send whose chat window is full steps out of the line while it waits for its chat: it must
not hold a place that a send to another chat could use. One chat's sends keep their order:
the door sends them one after another, and each waits for the previous to be sent.

Nothing of a send is kept here but an opaque ticket, its score and its slots' times: a crash
loses waiting places, never a message (the outbox and the door decide what is sent, once), and
the place is taken again by the same send on another try, at its first score.

A wait ends early, without a slot and out of the line, when the outbox says the send was dropped
(a quick exit, issue 12): a dropped reply must not go on waiting for, and then take, a slot the
exit's notice needs. The exit's own send (`urgent`) stands before every priority and takes the
bot's slot only: the chat's window was filled by replies the victim is to see no more.

The chat is named by its rate-limit pseudonym (`Purpose.RATE_LIMIT`), never its id, as Redis
keys are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.core import redis_keys
from bot.telegram.outbox import OutboxLimits

# A wait is never shorter than this: a window that frees "now" is asked again a moment later.
_MIN_WAIT_S = 0.005
# A waiter asks again at least this often, so it is never taken for a dead worker's (well
# within TELEGRAM_RATE_WAITER_STALE_MS), and its place is checked against later arrivals.
_MAX_WAIT_S = 3.0
# The highest triage priority (flows: 0-3); a quick exit's own send stands above it.
MAX_PRIORITY = 3
URGENT_PRIORITY = MAX_PRIORITY + 1
# Milliseconds of age a priority step outweighs in a waiter's score: far more than any wait.
_PRIORITY_STEP_MS = 10**13

# KEYS: bot window, line, last asked, chat window. ARGV: ticket, score, bot slots, bot window
# (ms), chat slots, chat window (ms), urgent ("1": the bot's window only), stale after (ms).
# Answers 0 when both slots were taken, else how long (ms) to wait before asking again.
_TAKE = """
local now_s = redis.call('TIME')
local now = tonumber(now_s[1]) * 1000 + math.floor(tonumber(now_s[2]) / 1000)
local ticket, score = ARGV[1], tonumber(ARGV[2])
local bot_slots, bot_ms = tonumber(ARGV[3]), tonumber(ARGV[4])
local chat_slots, chat_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
local urgent, stale_ms = ARGV[7] == '1', tonumber(ARGV[8])
local stale = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - stale_ms, 'LIMIT', 0, 100)
if #stale > 0 then
  redis.call('ZREM', KEYS[2], unpack(stale))
  redis.call('ZREM', KEYS[3], unpack(stale))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - bot_ms)
if not urgent then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now - chat_ms)
  if redis.call('ZCARD', KEYS[4]) >= chat_slots then
    redis.call('ZREM', KEYS[2], ticket)
    redis.call('ZREM', KEYS[3], ticket)
    local oldest = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
    return math.max(1, tonumber(oldest[2]) + chat_ms - now)
  end
end
redis.call('ZADD', KEYS[2], 'NX', score, ticket)
redis.call('ZADD', KEYS[3], now, ticket)
redis.call('PEXPIRE', KEYS[2], stale_ms)
redis.call('PEXPIRE', KEYS[3], stale_ms)
local used = redis.call('ZCARD', KEYS[1])
local before = redis.call('ZRANK', KEYS[2], ticket)
if before < bot_slots - used then
  local slot = ticket .. ':' .. now
  redis.call('ZADD', KEYS[1], now, slot)
  redis.call('PEXPIRE', KEYS[1], bot_ms)
  if not urgent then
    redis.call('ZADD', KEYS[4], now, slot)
    redis.call('PEXPIRE', KEYS[4], chat_ms)
  end
  redis.call('ZREM', KEYS[2], ticket)
  redis.call('ZREM', KEYS[3], ticket)
  return 0
end
local frees = before - (bot_slots - used)
if frees < used then
  local slot = redis.call('ZRANGE', KEYS[1], frees, frees, 'WITHSCORES')
  return math.max(1, tonumber(slot[2]) + bot_ms - now)
end
-- Deeper than the window: its slots free, then it fills again at most bot_slots a window.
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
local empties = now
if #newest > 0 then empties = tonumber(newest[2]) + bot_ms end
return math.max(1, empties - now + math.floor((frees - used) / bot_slots) * bot_ms)
"""


def _window(rate_per_s: float, burst: int) -> tuple[int, int]:
    """(slots, window in ms): `burst` sends per the time the rate takes to earn them, in whole
    seconds (at least 1)."""
    seconds = max(1, math.ceil(burst / rate_per_s))
    return max(1, math.floor(rate_per_s * seconds)), seconds * 1000


class SharedRateLimits:
    def __init__(
        self, redis: Redis, bot_id: int, limits: OutboxLimits, chat_key: Callable[[int], str]
    ) -> None:
        self._redis = redis
        self._take = redis.register_script(_TAKE)
        self._bot = _window(limits.per_bot_per_s, limits.per_bot_burst)
        self._chat = _window(limits.per_chat_per_s, limits.per_chat_burst)
        self._bot_id = bot_id
        self._chat_key = chat_key
        self._bot_key = redis_keys.telegram_rate_key(bot_id, "bot")
        self._line_key = redis_keys.telegram_rate_key(bot_id, "queue")
        self._seen_key = redis_keys.telegram_rate_key(bot_id, "seen")

    def __repr__(self) -> str:
        return f"SharedRateLimits(bot={self._bot}, chat={self._chat})"

    async def wait(
        self,
        chat_id: int,
        *,
        abandoned: asyncio.Event | None = None,
        urgent: bool = False,
        priority: int = 0,
        asked_at: float | None = None,
    ) -> bool:
        """Until this worker may send one message to `chat_id` within both windows (True); False,
        without a slot, once `abandoned` is set. `urgent`: the bot's window only, before every
        other waiter. `priority` (0-3, the conversation's triage level) and `asked_at` (when
        the send was first asked for, `time.time()`; default now) place it in the line."""
        level = URGENT_PRIORITY if urgent else max(0, min(priority, MAX_PRIORITY))
        asked_ms = int((time.time() if asked_at is None else asked_at) * 1000)
        score = (URGENT_PRIORITY - level) * _PRIORITY_STEP_MS + asked_ms
        ticket = secrets.token_hex(8)
        chat = redis_keys.telegram_rate_key(self._bot_id, "chat:" + self._chat_key(chat_id))
        keys = [self._bot_key, self._line_key, self._seen_key, chat]
        args = [
            ticket,
            score,
            *self._bot,
            *self._chat,
            "1" if urgent else "0",
            redis_keys.TELEGRAM_RATE_WAITER_STALE_MS,
        ]
        taken = False
        try:
            while True:
                wait_ms = int(await self._take(keys, args))
                if wait_ms == 0:
                    taken = True
                    return True
                if not await self._until(abandoned, wait_ms / 1000):
                    return False
        finally:
            if not taken:
                # Out of the line at once (a quick exit, a cancelled turn); if Redis cannot
                # be reached, the place is forgotten once stale.
                with contextlib.suppress(RedisError, OSError):
                    async with self._redis.pipeline(transaction=False) as pipe:
                        pipe.zrem(self._line_key, ticket)
                        pipe.zrem(self._seen_key, ticket)
                        await pipe.execute()

    @staticmethod
    async def _until(abandoned: asyncio.Event | None, wait_s: float) -> bool:
        """Sleep until it may be this waiter's turn: False (at once) if `abandoned` is set."""
        wait_s = min(max(wait_s, _MIN_WAIT_S), _MAX_WAIT_S)
        if abandoned is None:
            await asyncio.sleep(wait_s)
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await abandoned.wait()
        return not abandoned.is_set()
