"""Counselor sessions: in Redis, with the unwrapped centre keys encrypted under the cookie.

The cookie carries a session id and a secret. Redis stores, under a hash of the id, the
counselor and the centre private keys encrypted with a key derived from the secret. A stolen
Redis snapshot therefore opens nothing; a stolen cookie is as good as the login (as with any
session), which is why cookies are HttpOnly, SameSite=Strict and short-lived.

A session ends after `session_idle_s` without a request and, whatever it does, `session_max_s`
after its sign-in (issue 18: an open console polls every 5 s, so an idle timeout alone let a
session slide forever). The sign-in time is inside the encrypted record, and the Redis expiry
is never set past it. Every session's key is listed under its counselor, so a password change
ends all the others (`end_others`).

A sign-in waiting for its TOTP code is kept the same way but in a store of its own
(`pending=True`: other key names, five minutes, another cookie), so it is never a session:
`guard` cannot load it, and only the code page reads it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys, redis_keys
from backend.core.record_cipher import RecordCipher
from backend.core.settings import LoginPolicy

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
    # Failed sign-ins for this username since the previous good one, told once after sign-in.
    failed_sign_ins: int = 0
    # When the counselor signed in (Unix time); set by the store on `create`.
    signed_in_at: float = 0.0


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _to_hex(raw: bytes | None) -> str | None:
    return None if raw is None else raw.hex()


def _from_hex(text: str | None) -> bytes | None:
    return None if text is None else bytes.fromhex(text)


class ConsoleSessionStore:
    def __init__(
        self, redis: Redis, *, pending: bool = False, lifetime: LoginPolicy | None = None
    ) -> None:
        self._redis = redis
        self._pending = pending
        policy = lifetime or LoginPolicy()
        self._ttl_s = redis_keys.CONSOLE_PENDING_TTL_S if pending else policy.session_idle_s
        self._max_s = redis_keys.CONSOLE_PENDING_TTL_S if pending else policy.session_max_s

    async def create(self, session: ConsoleSession) -> str:
        """Store a new session; the returned cookie value is the only way back into it."""
        session_id = secrets.token_bytes(16)
        secret = secrets.token_bytes(32)
        session.signed_in_at = time.time()
        await self._write(session_id, secret, session)
        if not self._pending:
            # Indexed by counselor: a password change ends the others, a deactivation all.
            index = redis_keys.console_counselor_sessions_key(session.counselor_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.sadd(index, self._key(session_id))
                pipe.expire(index, self._max_s)
                await pipe.execute()
        return f"{_b64(session_id)}.{_b64(secret)}"

    async def end_all(self, counselor_id: int) -> int:
        """End every session of one counselor (deactivated, or their role changed); how many."""
        index = redis_keys.console_counselor_sessions_key(counselor_id)
        members = await self._redis.smembers(index)
        async with self._redis.pipeline(transaction=True) as pipe:
            if members:
                pipe.delete(*members)
            pipe.delete(index)
            results = await pipe.execute()
        return int(results[0]) if members else 0

    async def end_others(self, counselor_id: int, keep: str) -> int:
        """End every session of this counselor but the one of cookie `keep`; how many ended."""
        _id, _secret = self._split(keep)
        kept = self._key(_id)
        index = redis_keys.console_counselor_sessions_key(counselor_id)
        members = await self._redis.smembers(index)
        others = [k for k in members if (k if isinstance(k, str) else k.decode()) != kept]
        if others:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(*others)
                pipe.srem(index, *others)
                await pipe.execute()
        return len(others)

    def _left_s(self, session: ConsoleSession) -> int:
        """Seconds of life left: the idle timeout, never past the absolute lifetime."""
        return min(self._ttl_s, int(session.signed_in_at + self._max_s - time.time()))

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
        session = ConsoleSession(
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
            failed_sign_ins=data.get("failed_sign_ins", 0),
            signed_in_at=data.get("signed_in_at", 0.0),
        )
        left_s = self._left_s(session)
        if left_s <= 0:
            await self._redis.delete(key)
            return None
        if touch and not self._pending:  # a pending sign-in never outlives its five minutes
            await self._redis.expire(key, left_s)
        return session

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
                "failed_sign_ins": session.failed_sign_ins,
                "signed_in_at": session.signed_in_at,
            }
        ).encode()
        ex = max(self._left_s(session), 1)
        await self._redis.set(key, RecordCipher(secret, _LABEL).seal(key, plain), ex=ex)

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
