"""Replies for a victim who comes back later with their receipt code.

The backend must be able to write a reply and must never be able to read it back out to anyone
but the holder of the code, nor learn who that is. Design:
- The reply key pair is derived from the receipt code: HKDF-SHA256 of the normalised code, with
  a key derived from the deployment's receipt secret as HKDF's salt, to an X25519 private key.
  Only someone who has the code (the victim, typing it into any door, through a bot that holds
  the secret) can derive the private key. The code has 80 random bits, and the public key,
  which sits in Redis, lets nobody without the secret test even one guess offline. Codes
  issued before issue 14 used the public receipt salt instead
  (`legacy_reply_private_key`); their replies still open with it.
- When the bot issues a receipt it publishes the public key (and the code's digest) for the
  case in Redis (`redis_keys.case_receipt_key`). Nothing in it names the victim or the chat.
- A counselor's reply is sealed twice: to the centre (under the case's data key, for the console)
  and to the victim's reply key with HPKE, bound to the case id. The victim's copy is stored with
  the case and pushed to `redis_keys.case_replies_key`, where the bot finds it by case id.
- When the victim comes back with the code, the bot finds the case id from the code's digest (as
  it already did), derives the private key from the code, opens the replies and shows them; the
  code is never kept, so at rest every reply is ciphertext for a key nobody holds.
A fresh key pair per conversation was considered and left out: a victim who comes back in a new
conversation (another day, another door) would have lost the key the reply was sealed to.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from backend.core import keys, redis_keys

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_KEY_INFO = b"hotline/v1/reply-key"
_KEYED_KEY_INFO = b"hotline/v2/reply-key"
_SEAL_INFO = b"hotline/v1/reply\x00"


def reply_private_key(normalised: str, key: bytes) -> X25519PrivateKey:
    """The victim's reply key from a normalised code (`receipt_codes.normalise`), keyed by the
    deployment's reply-key key (`receipt_codes.ReceiptKeys`): HKDF's extract is an HMAC under it."""
    seed = HKDF(hashes.SHA256(), 32, key, _KEYED_KEY_INFO).derive(normalised.encode())
    return X25519PrivateKey.from_private_bytes(seed)


def legacy_reply_private_key(normalised: str, salt: bytes) -> X25519PrivateKey:
    """The reply key of a code issued before issue 14, under the public receipt salt."""
    seed = HKDF(hashes.SHA256(), 32, salt, _KEY_INFO).derive(normalised.encode())
    return X25519PrivateKey.from_private_bytes(seed)


def seal_for_victim(text: str, public_key: X25519PublicKey, case_id: str) -> bytes:
    return _SUITE.encrypt(text.encode(), public_key, info=_SEAL_INFO + case_id.encode())


def open_for_victim(sealed: bytes, private_key: X25519PrivateKey, case_id: str) -> str | None:
    """The reply's text; None for anything that does not open (another case, tampering)."""
    try:
        return _SUITE.decrypt(sealed, private_key, info=_SEAL_INFO + case_id.encode()).decode()
    except (InvalidTag, ValueError):
        return None


async def publish_receipt(
    redis: Redis, case_id: str, code_digest: str, public_key: X25519PublicKey
) -> None:
    """The bot, on issuing a receipt: where replies for this case go, and its code's digest."""
    async with redis.pipeline(transaction=True) as pipe:
        queue_receipt(pipe, case_id, code_digest, public_key)
        await pipe.execute()


def queue_receipt(
    pipe: Pipeline, case_id: str, code_digest: str, public_key: X25519PublicKey
) -> None:
    """`publish_receipt` as commands on a pipeline the caller executes with its own writes."""
    key = redis_keys.case_receipt_key(case_id)
    pipe.hset(
        key,
        mapping={
            redis_keys.FIELD_REPLY_KEY: keys.public_bytes(public_key),
            redis_keys.FIELD_RECEIPT_DIGEST: code_digest,
        },
    )
    pipe.expire(key, redis_keys.RECEIPT_TTL_S)


async def reply_key(redis: Redis, case_id: str) -> X25519PublicKey | None:
    """The victim's reply key for a case; None when no receipt was given (or it expired)."""
    raw = await redis.hget(redis_keys.case_receipt_key(case_id), redis_keys.FIELD_REPLY_KEY)
    if not isinstance(raw, bytes):
        return None
    try:
        return keys.load_public_key(raw)
    except ValueError:
        return None


async def deliver(redis: Redis, case_id: str, sealed: bytes) -> None:
    key = redis_keys.case_replies_key(case_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.rpush(key, sealed)
        pipe.ltrim(key, -redis_keys.CASE_REPLIES_MAX, -1)
        pipe.expire(key, redis_keys.RECEIPT_TTL_S)
        await pipe.execute()


async def waiting(redis: Redis, case_id: str) -> list[bytes]:
    """The sealed replies for a case, oldest first."""
    found = await redis.lrange(redis_keys.case_replies_key(case_id), 0, -1)
    return [item for item in found if isinstance(item, bytes)]


async def forget(redis: Redis, case_id: str) -> None:
    """A case was erased: its code stops answering, its replies and reply key go."""
    key = redis_keys.case_receipt_key(case_id)
    digest = await redis.hget(key, redis_keys.FIELD_RECEIPT_DIGEST)
    names = [key, redis_keys.case_replies_key(case_id)]
    if isinstance(digest, bytes):
        names.append(redis_keys.receipt_key(digest.decode()))
    await redis.delete(*names)
