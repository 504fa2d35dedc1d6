"""Counselor sessions: in Redis, with the unwrapped centre keys encrypted under the cookie.

The cookie carries a session id and a secret. Redis stores, under a hash of the id, the
counselor and the centre private keys encrypted with a key derived from the secret. A stolen
Redis snapshot therefore opens nothing; a stolen cookie is as good as the login (as with any
session), which is why cookies are HttpOnly, SameSite=Strict and short-lived.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from redis.asyncio import Redis

from backend import keys, streams
from backend.pseudonyms import derive_key

COOKIE_NAME = "hotline_console"


@dataclass
class ConsoleSession:
    counselor_id: int
    username: str
    role: str
    must_change_password: bool
    csrf_token: str
    private_keys: dict[str, X25519PrivateKey] = field(repr=False)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class ConsoleSessionStore:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def create(self, session: ConsoleSession) -> str:
        """Store a new session; the returned cookie value is the only way back into it."""
        session_id = secrets.token_bytes(16)
        secret = secrets.token_bytes(32)
        await self._write(session_id, secret, session)
        return f"{_b64(session_id)}.{_b64(secret)}"

    async def update(self, cookie: str, session: ConsoleSession) -> None:
        session_id, secret = self._split(cookie)
        await self._write(session_id, secret, session)

    async def load(self, cookie: str | None) -> ConsoleSession | None:
        if not cookie:
            return None
        try:
            session_id, secret = self._split(cookie)
        except ValueError:
            return None
        key = self._key(session_id)
        raw = await self._redis.get(key)
        if not isinstance(raw, bytes):
            return None
        try:
            plain = ChaCha20Poly1305(derive_key(secret, "console-session")).decrypt(
                raw[:12], raw[12:], key.encode()
            )
        except InvalidTag:
            return None
        data = json.loads(plain)
        await self._redis.expire(key, streams.CONSOLE_SESSION_TTL_S)
        return ConsoleSession(
            counselor_id=data["counselor_id"],
            username=data["username"],
            role=data["role"],
            must_change_password=data["must_change_password"],
            csrf_token=data["csrf_token"],
            private_keys={
                kid: X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))
                for kid, hex_key in data["private_keys"].items()
            },
        )

    async def delete(self, cookie: str) -> None:
        try:
            session_id, _secret = self._split(cookie)
        except ValueError:
            return
        await self._redis.delete(self._key(session_id))

    async def _write(self, session_id: bytes, secret: bytes, session: ConsoleSession) -> None:
        key = self._key(session_id)
        plain = json.dumps(
            {
                "counselor_id": session.counselor_id,
                "username": session.username,
                "role": session.role,
                "must_change_password": session.must_change_password,
                "csrf_token": session.csrf_token,
                "private_keys": {
                    kid: keys.private_bytes(k).hex() for kid, k in session.private_keys.items()
                },
            }
        ).encode()
        nonce = os.urandom(12)
        sealed = nonce + ChaCha20Poly1305(derive_key(secret, "console-session")).encrypt(
            nonce, plain, key.encode()
        )
        await self._redis.set(key, sealed, ex=streams.CONSOLE_SESSION_TTL_S)

    @staticmethod
    def _split(cookie: str) -> tuple[bytes, bytes]:
        id_text, _, secret_text = cookie.partition(".")
        session_id, secret = _unb64(id_text), _unb64(secret_text)
        if len(session_id) != 16 or len(secret) != 32:
            raise ValueError("malformed session cookie")
        return session_id, secret

    @staticmethod
    def _key(session_id: bytes) -> str:
        return streams.console_session_key(hashlib.sha256(session_id).hexdigest())
