"""Receipt codes: the case code a victim keeps to come back to their case from any channel.

The code is 80 random bits written as 16 Crockford base32 characters in four groups
(`K7QX-3M9D-V2TA-8HPE`): no I, L, O or U, so it survives being read aloud, copied by hand or
typed on a phone; lookup forgives case, spaces, hyphens and the usual confusions (O→0, I/L→1).

Only the pure functions live here, so the flow engine and the bot can make and hash codes
without loading the storage (`backend/receipts.py` keeps the table of digests and the salt).

Stored only as a keyed hash. Design (issue 14; the slow hash before it is kept for old codes):
- HMAC-SHA256 of the normalised code under a key derived from the deployment's receipt secret
  (`backend.core.receipt_secret`: `HOTLINE_RECEIPT_SECRET`, which the bot and the backend share,
  never in the database). The hash is deterministic, so it is the primary key and a lookup is
  one HMAC (microseconds) plus one index probe.
- No password hash is needed: the codes are uniformly random with 80 bits of entropy, so there
  is no dictionary to speed up, and 2^80 guesses are out of reach at any per-guess cost. The key
  adds what the slow hash never gave: a database or Redis thief without the secret cannot test
  a single guess offline. A guesser at the front door is held back by the flows' rate limits and
  the console's lookup limit, not by the hash.
- Argon2id at password cost (the scheme before) made a submission turn cost 0.35-1.2 s of CPU
  when 20 victims submitted at once, for no security the 80 bits did not already give.
- Codes issued before keep working: their rows say `argon2id` (`Receipt.digest_scheme`, added by
  migration 0006) and a lookup that finds nothing under the keyed hash tries the legacy Argon2id
  digest (with the deployment's receipt salt), only while such rows exist (the backend) or
  Redis may still hold one (the bot, at most `redis_keys.RECEIPT_TTL_S`).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
from enum import StrEnum
from typing import NewType

from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from backend.core import replies
from backend.core.errors import ReceiptNotFoundError
from backend.core.pseudonyms import derive_key
from backend.core.settings import KdfCost

CaseCode = NewType("CaseCode", str)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
GROUPS = 4
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH  # 16 characters x 5 bits = 80 bits
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


class DigestScheme(StrEnum):
    """How a stored receipt digest was made (`Receipt.digest_scheme`, the receipt event)."""

    KEYED = "hmac-sha256"  # under the deployment's receipt secret: every new code
    LEGACY = "argon2id"  # under the (public) receipt salt: codes issued before issue 14


class ReceiptKeys:
    """The deployment's receipt secret, split by purpose: the digest key and the reply-key
    key never meet, so a digest says nothing about a reply key and the reverse."""

    def __init__(self, secret: bytes) -> None:
        self.digest_key = derive_key(secret, "receipt/digest")
        self.reply_key = derive_key(secret, "receipt/reply-key")

    def __repr__(self) -> str:
        return "ReceiptKeys(<keys hidden>)"


def new_code() -> CaseCode:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
    return CaseCode(
        "-".join(chars[i : i + GROUP_LENGTH] for i in range(0, CODE_LENGTH, GROUP_LENGTH))
    )


def normalise(typed: str) -> str:
    """The canonical form of a code as a person may type it; ReceiptNotFoundError if no code."""
    text = "".join(typed.split()).replace("-", "").upper().translate(_CONFUSABLE)
    if len(text) != CODE_LENGTH or any(c not in ALPHABET for c in text):
        raise ReceiptNotFoundError("not a case code")
    return text


def keyed_digest(code: str, keys: ReceiptKeys) -> str:
    """The digest of every code issued now: HMAC-SHA256 under the deployment's digest key."""
    return hmac.new(keys.digest_key, normalise(code).encode(), hashlib.sha256).hexdigest()


def legacy_digest(code: str, salt: bytes, cost: KdfCost) -> str:
    """The Argon2id digest codes were stored under before; only to find those codes again."""
    raw = hash_secret_raw(
        normalise(code).encode(),
        salt,
        cost.time_cost,
        cost.memory_kib,
        cost.parallelism,
        32,
        Type.ID,
    )
    return raw.hex()


def code_from(seed: bytes) -> CaseCode:
    """A code derived from 80 bits of `seed` (a hash of something random), in the same format
    as `new_code`: the pure flow step derives its code so that a retried turn gives the same."""
    value = int.from_bytes(seed[:10])
    chars = "".join(ALPHABET[(value >> (5 * i)) & 31] for i in range(CODE_LENGTH))
    return CaseCode(
        "-".join(chars[i : i + GROUP_LENGTH] for i in range(0, CODE_LENGTH, GROUP_LENGTH))
    )


class ReceiptHasher:
    """Digests and reply keys of codes where there is no database: the bot.

    New codes: the keyed digest and reply key, microseconds each, on the event loop. Codes
    issued before issue 14 are still found (`legacy_digest`: Argon2id with the published salt,
    in a thread) and open their replies with the reply key they were issued with.
    """

    def __init__(self, secret: bytes, legacy_salt: bytes, legacy_cost: KdfCost) -> None:
        self._keys = ReceiptKeys(secret)
        self._salt = legacy_salt
        self._cost = legacy_cost

    def __repr__(self) -> str:
        return "ReceiptHasher(<keys hidden>)"

    def digest(self, code: str) -> str | None:
        """The lookup key a code is issued under now; None when it cannot be a code at all."""
        try:
            return keyed_digest(code, self._keys)
        except ReceiptNotFoundError:
            return None

    async def legacy_digest(self, code: str) -> str | None:
        """The lookup key of a code issued before issue 14 (Argon2id: in a thread)."""
        try:
            normalise(code)
        except ReceiptNotFoundError:
            return None
        return await asyncio.to_thread(legacy_digest, code, self._salt, self._cost)

    def reply_private_key(self, code: str, scheme: DigestScheme) -> X25519PrivateKey | None:
        """The victim's reply key for a code issued under `scheme`; None if it is no code."""
        try:
            normalised = normalise(code)
        except ReceiptNotFoundError:
            return None
        if scheme is DigestScheme.LEGACY:
            return replies.legacy_reply_private_key(normalised, self._salt)
        return replies.reply_private_key(normalised, self._keys.reply_key)
