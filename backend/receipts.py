"""Receipts: the case code a victim keeps to come back to their case from any channel.

The code is 80 random bits written as 16 Crockford base32 characters in four groups
(`K7QX-3M9D-V2TA-8HPE`): no I, L, O or U, so it survives being read aloud, copied by hand or
typed on a phone; lookup forgives case, spaces, hyphens and the usual confusions (O→0, I/L→1).

Stored only as a slow hash. Design:
- Argon2id (cost from the KDF settings) of the normalised code, with one salt per deployment,
  made at random on first use and kept in `deployment_secrets`. A per-row salt would make every
  lookup an Argon2id per stored receipt (a scan, and a denial of service); a deployment-wide
  salt keeps the hash deterministic, so the hash itself is the primary key and a lookup is one
  Argon2id plus one index probe.
- What the per-row salt would have bought, resistance to a dictionary shared across rows, is
  not needed: the codes are uniformly random with 80 bits of entropy, so there is no
  dictionary; the salt still stops tables precomputed for every deployment at once.
- A database thief who wants a code back must guess 2^80 codes at Argon2id cost each. A
  guesser at the front door pays one Argon2id per try too (and the flows rate-limit tries).
A pepper outside the database was considered and left out: the backend has no secret outside
the database (the private keys are wrapped inside it), and 80 bits do not need one.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import NewType

from argon2.low_level import Type, hash_secret_raw
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import ReceiptNotFoundError
from backend.models import DeploymentSecret, Receipt
from backend.settings import KdfCost

CaseCode = NewType("CaseCode", str)

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32
GROUPS = 4
GROUP_LENGTH = 4
CODE_LENGTH = GROUPS * GROUP_LENGTH  # 16 characters x 5 bits = 80 bits
SALT_NAME = "receipt-salt"
_SALT_BYTES = 16
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


class ReceiptBook:
    """Issue codes for cases and find a case by its code; the API flows and the console use."""

    def __init__(self, engine: AsyncEngine, cost: KdfCost) -> None:
        self._engine = engine
        self._cost = cost
        self._salt: bytes | None = None

    async def salt(self) -> bytes:
        if self._salt is None:
            async with AsyncSession(self._engine) as session:
                row = await session.get(DeploymentSecret, SALT_NAME)
                if row is None:
                    session.add(
                        DeploymentSecret(name=SALT_NAME, value=secrets.token_bytes(_SALT_BYTES))
                    )
                    try:
                        await session.commit()
                    except IntegrityError:  # another node made it first: use theirs
                        await session.rollback()
                    row = await session.get(DeploymentSecret, SALT_NAME)
                if row is None:  # pragma: no cover - committed above or by another node
                    raise RuntimeError("receipt salt missing")
                self._salt = row.value
        return self._salt

    async def issue(self, case_id: str) -> CaseCode:
        """A new code for a case; show it to the victim once, it is not stored anywhere."""
        code = new_code()
        await self.attach(case_id, digest(code, await self.salt(), self._cost))
        return code

    async def attach(self, case_id: str, code_digest: str) -> None:
        async with AsyncSession(self._engine) as session:
            session.add(Receipt(digest=code_digest, case_id=case_id))
            await session.commit()

    async def find(self, code: str) -> str:
        """The case id for a code; ReceiptNotFoundError for a wrong, mistyped or erased code."""
        # Argon2id at production cost is a good part of a second of CPU: not on the event loop.
        wanted = await asyncio.to_thread(digest, code, await self.salt(), self._cost)
        async with AsyncSession(self._engine) as session:
            row = await session.get(Receipt, wanted)
        if row is None:
            raise ReceiptNotFoundError("no case has this code")
        return row.case_id

    async def revoke(self, case_id: str) -> None:
        async with AsyncSession(self._engine) as session:
            await session.exec(delete(Receipt).where(col(Receipt.case_id) == case_id))
            await session.commit()
