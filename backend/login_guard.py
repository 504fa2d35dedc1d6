"""Slowing and stopping password guessing at the console's sign-in.

Each failed sign-in for a username waits longer before it is answered (base delay doubling,
capped), and after `max_failures` within the lock window the username is locked: even the right
password is refused until the lock expires. State lives in Redis so every backend node shares it;
usernames are hashed in key names.
"""

from __future__ import annotations

import asyncio
import hashlib

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.errors import HotlineError
from backend.core.settings import LoginPolicy

MAX_DELAY_S = 8.0


class LoginLockedError(HotlineError):
    """Too many failed sign-ins for this username; it is locked for a while."""


def _name(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()


class LoginGuard:
    def __init__(self, redis: Redis, policy: LoginPolicy) -> None:
        self._redis = redis
        self._policy = policy

    async def check(self, username: str) -> None:
        if await self._redis.exists(redis_keys.login_lock_key(_name(username))):
            raise LoginLockedError("sign-in locked")

    def delay_s(self, failures: int) -> float:
        """The wait before answering the n-th failure in a row: doubling, capped."""
        return float(min(self._policy.delay_ms / 1000 * 2 ** (failures - 1), MAX_DELAY_S))

    async def failed(self, username: str) -> float:
        """Count a failure, lock at the limit, and wait the growing delay; return that delay."""
        name = _name(username)
        key = redis_keys.login_failures_key(name)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self._policy.lock_s)
            failures, _ = await pipe.execute()
        if failures >= self._policy.max_failures:
            await self._redis.set(redis_keys.login_lock_key(name), b"1", ex=self._policy.lock_s)
        delay_s = self.delay_s(int(failures))
        await asyncio.sleep(delay_s)
        return delay_s

    async def succeeded(self, username: str) -> None:
        await self._redis.delete(redis_keys.login_failures_key(_name(username)))
