"""Exactly-once turns for doors whose client retries: the web chat after a lost connection.

A client that lost its connection cannot know whether the server took its message, so it sends
the same turn again with the same turn id. The first request with an id claims it (SET NX) and
stores its answer, encrypted, for `WEBCHAT_TURN_REPLAY_TTL_S`; a retry gets that answer instead
of running the step twice. A retry that arrives while the first is still running waits for it.

While the turn runs, the claim is a marker naming the process that runs it, on a lease of
`WEBCHAT_TURN_REPLAY_LEASE_MS` renewed while it runs (`bot.leases`). A process killed mid-turn
stops renewing, the marker expires within seconds, and the victim's retry runs the turn afresh
(issue 18: it used to wait out the whole five minutes).
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
from bot.leases import holder_token, renewed

# A running turn's marker starts with this, then its holder; an answer is sealed after _ANSWER.
_PENDING = b"pending:"
_ANSWER = b"answer:"
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

    def answer_record(
        self,
        pseudonym: Pseudonym,
        turn_id: str,
        answer: bytes,
        ttl_s: int = redis_keys.WEBCHAT_TURN_REPLAY_TTL_S,
    ) -> tuple[str, bytes, int]:
        """The turn's answer as `once` stores it (key, value, lifetime), for the runtime to write
        with the session (`HeldSession.record`): a process killed between the session's write
        and `once`'s own would leave a stepped conversation without the answer, and the retry
        would run the turn again on the next step (issue 14)."""
        key = self._key(pseudonym, turn_id)
        return key, _ANSWER + self._cipher.seal(key, answer), ttl_s

    async def once(
        self,
        pseudonym: Pseudonym,
        turn_id: str,
        handle: Callable[[], Awaitable[bytes]],
        *,
        ttl_s: int = redis_keys.WEBCHAT_TURN_REPLAY_TTL_S,
        lease_ms: int = redis_keys.WEBCHAT_TURN_REPLAY_LEASE_MS,
    ) -> bytes:
        key = self._key(pseudonym, turn_id)
        marker = _PENDING + holder_token().encode()
        if await self._redis.set(key, marker, nx=True, px=lease_ms):
            try:
                async with renewed(self._redis, key, marker, lease_ms):
                    answer = await handle()
            except BaseException:
                # Nothing was answered: let a retry run the turn afresh.
                await self._redis.delete(key)
                raise
            sealed = _ANSWER + self._cipher.seal(key, answer)
            await self._redis.set(key, sealed, xx=True, ex=ttl_s)
            return answer
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_FOR_FIRST_S
        while loop.time() < deadline:
            stored = await self._redis.get(key)
            if isinstance(stored, bytes) and stored.startswith(_ANSWER):
                replayed = self._cipher.open(key, stored[len(_ANSWER) :])
                if replayed is None:
                    break
                return replayed
            if stored is None:  # the first attempt failed, or its process died: run it here
                return await self.once(pseudonym, turn_id, handle, ttl_s=ttl_s, lease_ms=lease_ms)
            await asyncio.sleep(POLL_S)
        raise TurnInProgressError("the same turn is still being handled")
