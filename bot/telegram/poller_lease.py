"""One long poller per bot token, across every bot worker.

Telegram hands getUpdates to one consumer per token: a second poller gets 409 Conflict, or the
two take turns and each sees part of the updates, so a deployment with several workers uses
the webhook. A worker that would poll takes a lease in Redis (`redis_keys.telegram_poller_key`,
SET NX with an expiry) before it asks Telegram for anything, and refuses to start with one
clear line while another holds it. The lease is renewed every third of its length; a worker
that dies stops renewing, and after the lease another may start. A worker that finds its lease
taken (Redis lost it and another started meanwhile) stops polling rather than fight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.core import redis_keys
from backend.core.errors import PollerTakenError

log = logging.getLogger(__name__)

# Renew our own lease, or take it again if it ran out meanwhile; 0 when another holds it.
_RENEW = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

TAKEN = (
    "HOTLINE_TELEGRAM_TOKEN: another worker is already long-polling this bot, and Telegram "
    "serves one poller per token; run several workers with a webhook "
    "(HOTLINE_TELEGRAM_WEBHOOK_URL), or stop the other one (a stopped or dead poller's lease "
    "runs out within HOTLINE_TELEGRAM_POLL_LEASE_S)"
)


class PollerLease:
    def __init__(self, redis: Redis, bot_id: int, lease_s: int) -> None:
        self._redis = redis
        self._key = redis_keys.telegram_poller_key(bot_id)
        self._lease_ms = lease_s * 1000
        # Random, so two processes of one node name never mistake each other's lease.
        self._holder = secrets.token_hex(8)
        self._renewing: asyncio.Task[None] | None = None

    async def acquire(self, on_lost: Callable[[], Awaitable[None]]) -> None:
        """Take the lease and keep it; PollerTakenError if another worker holds it. `on_lost`
        runs once if the lease is ever found in another's hands."""
        if not await self._redis.set(self._key, self._holder, nx=True, px=self._lease_ms):
            raise PollerTakenError(TAKEN)
        self._renewing = asyncio.create_task(self._renew(on_lost), name="telegram-poller-lease")

    async def release(self) -> None:
        if self._renewing is not None:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
            self._renewing = None
        try:
            await self._redis.eval(_RELEASE, 1, self._key, self._holder)
        except RedisError:
            log.warning("telegram: the poller lease was not released; it runs out on its own")

    async def _renew(self, on_lost: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            try:
                kept = await self._redis.eval(_RENEW, 1, self._key, self._holder, self._lease_ms)
            except RedisError as exc:
                log.warning("telegram: poller lease not renewed (%s)", type(exc).__name__)
                continue
            if not kept:
                log.error("telegram: another worker took over long polling; this one stops")
                await on_lost()
                return
