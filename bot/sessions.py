"""Conversation sessions in Redis: encrypted, expiring, keyed by the session pseudonym.

The session holds the victim's answers so far and the platform reply address, so it is
encrypted (ChaCha20-Poly1305, key derived from the bot's root secret, the Redis key bound as
associated data so a record cannot be moved to another conversation) and expires after
`session_ttl_s` of silence.
"""

from __future__ import annotations

from redis.asyncio import Redis

from backend import streams
from backend.conversation import Pseudonym, Session
from backend.record_cipher import RecordCipher


class SessionStore:
    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "session")
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return "SessionStore(<key hidden>)"

    async def load(self, pseudonym: Pseudonym) -> Session | None:
        key = streams.session_key(pseudonym)
        plain = self._cipher.open(key, await self._redis.get(key))
        if plain is None:
            return None
        try:
            return Session.from_json(plain)
        except (ValueError, TypeError):
            # Unreadable (key changed, or tampered): start afresh rather than fail the victim.
            return None

    async def save(self, pseudonym: Pseudonym, session: Session) -> None:
        key = streams.session_key(pseudonym)
        await self._redis.set(key, self._cipher.seal(key, session.to_json()), ex=self._ttl_s)

    async def delete(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(streams.session_key(pseudonym))
