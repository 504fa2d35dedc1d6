"""Receipts: the table of case codes, kept only as slow hashes (the codes: core/receipt_codes.py).

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

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, delete
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.core.errors import ReceiptNotFoundError
from backend.core.receipt_codes import CaseCode, digest, new_code
from backend.core.settings import KdfCost
from backend.models import DeploymentSecret, Receipt

SALT_NAME = "receipt-salt"
_SALT_BYTES = 16


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
