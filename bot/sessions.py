"""Conversation sessions in Redis: encrypted, expiring, keyed by the session pseudonym.

The session holds the victim's answers so far and the platform reply address, so it is
encrypted (ChaCha20-Poly1305, key derived from the bot's root secret, the Redis key bound as
associated data so a record cannot be moved to another conversation) and expires after
`session_ttl_s` of silence.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from redis.asyncio import Redis

from backend import streams
from backend.conversation import Pseudonym, Session
from backend.pseudonyms import derive_key

_NONCE_BYTES = 12


class SessionStore:
    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._aead = ChaCha20Poly1305(derive_key(root_secret, "session"))
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return "SessionStore(<key hidden>)"

    async def load(self, pseudonym: Pseudonym) -> Session | None:
        key = streams.session_key(pseudonym)
        raw = await self._redis.get(key)
        if not isinstance(raw, bytes):
            return None
        try:
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], key.encode())
            return Session.from_json(plain)
        except (InvalidTag, ValueError, TypeError):
            # Unreadable (key changed, or tampered): start afresh rather than fail the victim.
            return None

    async def save(self, pseudonym: Pseudonym, session: Session) -> None:
        key = streams.session_key(pseudonym)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, session.to_json(), key.encode())
        await self._redis.set(key, sealed, ex=self._ttl_s)

    async def delete(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(streams.session_key(pseudonym))
