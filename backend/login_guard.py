"""Slowing and stopping password guessing at the console's sign-in.

Every attempt is counted *before* its password or code is checked (`reserve`), in one Redis
script, so N guesses sent in parallel cost N attempts: the limit is reached by the (limit+1)-th
reservation, whatever is still being verified (issue 18: 40 parallel guesses once got 39 x 401
and the right password signed in).

Two counters, in this order (issue 13):
- per client address (the real one, `backend/forwarded.py`), `max_failures` within `lock_s`:
  the throttle a single guesser meets first. Addresses are kept only as keyed hashes (the key
  is random, held in Redis and replaced daily) under keys that expire with the window.
- per username, `username_max_failures` within `username_lock_s`: much higher, so someone who
  knows a username cannot lock that counselor out from one address; guessing from many
  addresses still meets it. An administrator lifts it with `hotline counselor unlock`.
A right password gives its own reservation back and resets the username's count; the failures
since the last good sign-in are tallied separately and told to the counselor when they next
sign in. Each failure waits a growing delay (doubling, capped) before it is answered.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.errors import HotlineError
from backend.core.settings import LoginPolicy

MAX_DELAY_S = 8.0

# KEYS: the address's counter, the username's counter.
# ARGV: the address limit and window, the username limit and window.
# Returns {0, address count} when reserved, {1, n} when the address is over its limit, {2, n}
# when the username is.
_RESERVE = """
local address = tonumber(redis.call('GET', KEYS[1]) or '0')
if address >= tonumber(ARGV[1]) then return {1, address} end
local username = tonumber(redis.call('GET', KEYS[2]) or '0')
if username >= tonumber(ARGV[3]) then return {2, username} end
address = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return {0, address}
"""

# KEYS: the address's counter, the username's counter, the username's failure tally.
# ARGV[1]: 1 when the sign-in is complete (reset the username's count and read and clear the
# tally), 0 when only its password was right and a code is still to come.
# Gives the attempt's reservation back (never below zero).
_GIVE_BACK = """
local address = tonumber(redis.call('GET', KEYS[1]) or '0')
if address > 1 then redis.call('DECR', KEYS[1]) else redis.call('DEL', KEYS[1]) end
if ARGV[1] == '0' then return 0 end
redis.call('DEL', KEYS[2])
local tally = redis.call('GET', KEYS[3])
redis.call('DEL', KEYS[3])
return tonumber(tally or '0')
"""


class LoginLockedError(HotlineError):
    """Too many failed sign-ins from this address or for this username; locked for a while."""


def _name(username: str) -> str:
    return hashlib.sha256(username.strip().lower().encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """One reserved sign-in attempt: already counted; `failed` or `succeeded` settles it."""

    address_key: str
    username_key: str
    tally_key: str
    count: int


class LoginGuard:
    def __init__(self, redis: Redis, policy: LoginPolicy) -> None:
        self._redis = redis
        self._policy = policy
        self._reserve = redis.register_script(_RESERVE)
        self._give_back = redis.register_script(_GIVE_BACK)

    async def _address_hash(self, address: str | None) -> str:
        """HMAC of the address under a random key that Redis keeps for a day, so a counter's
        name says nothing without the key, and nothing at all once the key is replaced."""
        fresh = secrets.token_bytes(32)
        key_name = redis_keys.LOGIN_ADDRESS_KEY
        await self._redis.set(key_name, fresh, nx=True, ex=redis_keys.LOGIN_ADDRESS_KEY_TTL_S)
        stored = await self._redis.get(key_name)
        key = fresh if stored is None else stored if isinstance(stored, bytes) else stored.encode()
        return hmac.new(key, (address or "unknown").encode(), hashlib.sha256).hexdigest()

    async def reserve(self, username: str, address: str | None) -> Attempt:
        """Count an attempt before anything is verified; `LoginLockedError` past a limit."""
        name = _name(username)
        attempt = Attempt(
            address_key=redis_keys.login_address_key(await self._address_hash(address)),
            username_key=redis_keys.login_failures_key(name),
            tally_key=redis_keys.login_tally_key(name),
            count=0,
        )
        policy = self._policy
        refused, count = await self._reserve(
            keys=[attempt.address_key, attempt.username_key],
            args=[
                policy.max_failures,
                policy.lock_s,
                policy.username_max_failures,
                policy.username_lock_s,
            ],
        )
        if int(refused):
            raise LoginLockedError("sign-in locked")
        return Attempt(attempt.address_key, attempt.username_key, attempt.tally_key, int(count))

    def delay_s(self, failures: int) -> float:
        """The wait before answering the n-th failure in a row: doubling, capped."""
        return float(min(self._policy.delay_ms / 1000 * 2 ** (failures - 1), MAX_DELAY_S))

    async def failed(self, attempt: Attempt) -> float:
        """The attempt stays counted; tally it for its counselor and wait the growing delay."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.incr(attempt.tally_key)
            pipe.expire(attempt.tally_key, redis_keys.LOGIN_TALLY_TTL_S)
            await pipe.execute()
        delay_s = self.delay_s(max(attempt.count, 1))
        await asyncio.sleep(delay_s)
        return delay_s

    async def password_passed(self, attempt: Attempt) -> None:
        """The password was right and a TOTP code is to come: the address gets its attempt
        back (a counselor signing in is not a guesser), the username's count stays until the
        code is right too, so wrong codes keep counting toward its lock."""
        keys = [attempt.address_key, attempt.username_key, attempt.tally_key]
        await self._give_back(keys=keys, args=[0])

    async def succeeded(self, attempt: Attempt) -> int:
        """Give the attempt back, reset the username's count; the failures since the last
        good sign-in, for the counselor to be told."""
        keys = [attempt.address_key, attempt.username_key, attempt.tally_key]
        return int(await self._give_back(keys=keys, args=[1]))

    async def unlock(self, username: str) -> bool:
        """An administrator lifts a username's lock; True if there was a count to clear."""
        return bool(await self._redis.delete(redis_keys.login_failures_key(_name(username))))
