"""Counselor sessions: in Redis, with the unwrapped centre keys encrypted under the cookie.

The cookie carries a session id and a secret. Redis stores, under a hash of the id, the
counselor and the centre private keys encrypted with a key derived from the secret. A stolen
Redis snapshot therefore opens nothing; a stolen cookie is as good as the login (as with any
session), which is why cookies are HttpOnly, SameSite=Strict and short-lived.

A sign-in waiting for its TOTP code is kept the same way but in a store of its own
(`pending=True`: other key names, five minutes, another cookie), so it is never a session:
`guard` cannot load it, and only the code page reads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys, redis_keys
from backend.core.record_cipher import RecordCipher

# Keyed by a secret that lives only in the cookie: a Redis snapshot opens no session.
_LABEL = "console-session"
COOKIE_NAME = "hotline_console"
PENDING_COOKIE_NAME = "hotline_console_pending"


@dataclass
class ConsoleSession:
    counselor_id: int
    username: str
    role: str
    must_change_password: bool
    csrf_token: str
    private_keys: dict[str, X25519PrivateKey] = field(repr=False)
    # The counselor's TOTP secret while signed in, so a password change can re-seal it.
    totp_secret: bytes | None = field(default=None, repr=False)
    # Two-factor is required and this counselor has none yet: enrolment is all they may do.
    needs_totp: bool = False
    # A secret shown on the enrolment page, not yet confirmed by a code.
    totp_setup: bytes | None = field(default=None, repr=False)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_hex(raw: bytes | None) -> str | None:
    return None if raw is None else raw.hex()


def _from_hex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


class ConsoleSessionStore:
    def __init__(self, redis: Redis, *, pending: bool = False) -> None:
        self._redis = redis
        self._pending = pending
        self._ttl_s = (
            redis_keys.CONSOLE_PENDING_TTL_S if pending else redis_keys.CONSOLE_SESSION_TTL_S
        )

    async def create(self, session: ConsoleSession) -> str:
        """Store a new session; the returned cookie value is the only way back into it."""
        session_id = secrets.token_bytes(16)
        secret = secrets.token_bytes(32)
        await self._write(session_id, secret, session)
        if not self._pending:
            # Indexed by counselor, so an administrator can end them all at once.
            index = redis_keys.console_sessions_of_key(session.counselor_id)
            await self._redis.sadd(index, self._key(session_id))
            await self._redis.expire(index, self._ttl_s)
        return f"{_b64(session_id)}.{_b64(secret)}"

    async def end_all(self, counselor_id: int) -> int:
        """End every session of one counselor (deactivated, or their role changed); how many."""
        index = redis_keys.console_sessions_of_key(counselor_id)
        keys_of = [
            k.decode() if isinstance(k, bytes) else str(k)
            for k in await self._redis.smembers(index)
        ]
        ended = int(await self._redis.delete(*keys_of)) if keys_of else 0
        await self._redis.delete(index)
        return ended

    async def update(self, cookie: str, session: ConsoleSession) -> None:
        session_id, secret = self._split(cookie)
        await self._write(session_id, secret, session)

    async def load(self, cookie: str | None, *, touch: bool = True) -> ConsoleSession | None:
        """The session, its lifetime renewed unless `touch` is False (an open live chat socket
        checking that its session still exists must not keep an abandoned one alive)."""
        if not cookie:
            return None
        try:
            session_id, secret = self._split(cookie)
        except ValueError:
            return None
        key = self._key(session_id)
        plain = RecordCipher(secret, _LABEL).open(key, await self._redis.get(key))
        if plain is None:
            return None
        data = json.loads(plain)
        if touch and not self._pending:  # a pending sign-in never outlives its five minutes
            await self._redis.expire(key, self._ttl_s)
            index = redis_keys.console_sessions_of_key(data["counselor_id"])
            await self._redis.expire(index, self._ttl_s)
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
            totp_secret=_from_hex(data.get("totp_secret")),
            needs_totp=data.get("needs_totp", False),
            totp_setup=_from_hex(data.get("totp_setup")),
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
                "totp_secret": _to_hex(session.totp_secret),
                "needs_totp": session.needs_totp,
                "totp_setup": _to_hex(session.totp_setup),
            }
        ).encode()
        await self._redis.set(key, RecordCipher(secret, _LABEL).seal(key, plain), ex=self._ttl_s)

    @staticmethod
    def _split(cookie: str) -> tuple[bytes, bytes]:
        id_text, _, secret_text = cookie.partition(".")
        session_id, secret = _unb64(id_text), _unb64(secret_text)
        if len(session_id) != 16 or len(secret) != 32:
            raise ValueError("malformed session cookie")
        return session_id, secret

    def _key(self, session_id: bytes) -> str:
        digest = hashlib.sha256(session_id).hexdigest()
        if self._pending:
            return redis_keys.console_pending_key(digest)
        return redis_keys.console_session_key(digest)
