"""Exactly-once turns for doors whose client retries: the web chat after a lost connection.

A client that lost its connection cannot know whether the server took its message, so it sends
the same turn again with the same turn id. The first request with an id claims it (SET NX) and
stores its answer, encrypted, for `WEBCHAT_TURN_REPLAY_TTL_S`; a retry gets that answer instead
of running the step twice. A retry that arrives while the first is still running waits for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Pseudonym
from backend.core.errors import HotlineError
from backend.core.pseudonyms import derive_key
from backend.core.record_cipher import RecordCipher

_PENDING = b""
WAIT_FOR_FIRST_S = 10.0
POLL_S = 0.05


class TurnInProgressError(HotlineError):
    """The same turn is still being handled by an earlier request; the client should retry."""


class TurnReplay:
    def __init__(self, redis: Redis, root_secret: bytes) -> None:
        self._redis = redis
        self._id_key = derive_key(root_secret, "turn-replay/id")
        self._cipher = RecordCipher(root_secret, "turn-replay/answer")

    def __repr__(self) -> str:
        return "TurnReplay(<keys hidden>)"

    def _key(self, pseudonym: Pseudonym, turn_id: str) -> str:
        digest = hmac.new(self._id_key, f"{pseudonym}:{turn_id}".encode(), hashlib.sha256)
        return redis_keys.turn_replay_key(digest.hexdigest())

    async def once(
        self,
        pseudonym: Pseudonym,
        turn_id: str,
        handle: Callable[[], Awaitable[bytes]],
        *,
        ttl_s: int = redis_keys.WEBCHAT_TURN_REPLAY_TTL_S,
    ) -> bytes:
        key = self._key(pseudonym, turn_id)
        if await self._redis.set(key, _PENDING, nx=True, ex=ttl_s):
            try:
                answer = await handle()
            except BaseException:
                # Nothing was answered: let a retry run the turn afresh.
                await self._redis.delete(key)
                raise
            await self._redis.set(key, self._cipher.seal(key, answer), xx=True, ex=ttl_s)
            return answer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_FIRST_S
        while loop.time() < deadline:
            stored = await self._redis.get(key)
            if isinstance(stored, bytes) and stored != _PENDING:
                replayed = self._cipher.open(key, stored)
                if replayed is None:
                    break
                return replayed
            if stored is None:  # the first attempt failed and released the id
                return await self.once(pseudonym, turn_id, handle, ttl_s=ttl_s)
            await asyncio.sleep(POLL_S)
        raise TurnInProgressError("the same turn is still being handled")
