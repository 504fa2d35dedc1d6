"""Receipt codes: the case code a victim keeps to come back to their case from any channel.

The code is 80 random bits written as 16 Crockford base32 characters in four groups
(`K7QX-3M9D-V2TA-8HPE`): no I, L, O or U, so it survives being read aloud, copied by hand or
typed on a phone; lookup forgives case, spaces, hyphens and the usual confusions (O→0, I/L→1).

Only the pure functions live here, so the flow engine and the bot can make and hash codes
without loading the storage (`backend/receipts.py` keeps the table of slow hashes and the salt).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import NewType

from argon2.low_level import Type, hash_secret_raw

from backend.core.errors import ReceiptNotFoundError
from backend.core.settings import KdfCost

CaseCode = NewType("CaseCode", str)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
GROUPS = 4
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH  # 16 characters x 5 bits = 80 bits
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


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


def digest(code: str, salt: bytes, cost: KdfCost) -> str:
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
    """The slow hash of codes where there is no database: the bot, with the published salt.

    The salt is not secret (it only makes this deployment's hashes its own); the backend
    publishes it as it publishes the centre's public key. Hashing runs in a thread, since
    Argon2id at production cost takes a good part of a second of CPU.
    """

    def __init__(self, salt: bytes, cost: KdfCost) -> None:
        self._salt = salt
        self._cost = cost

    def __repr__(self) -> str:
        return "ReceiptHasher(<salt hidden>)"

    @property
    def salt(self) -> bytes:
        return self._salt

    async def digest(self, code: str) -> str | None:
        """The lookup key for a code as typed; None when it cannot be a code at all."""
        try:
            normalise(code)
        except ReceiptNotFoundError:
            return None
        return await asyncio.to_thread(digest, code, self._salt, self._cost)
