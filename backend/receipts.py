"""Receipts: the table of case codes, kept only as digests (the codes: core/receipt_codes.py).

How the digests are made, and why no password hash: `backend/core/receipt_codes.py` and
`THREAT_MODEL.md`. The salt kept here is for the Argon2id digests of codes issued before
issue 14, which are still found (`Receipt.digest_scheme`).
"""

from __future__ import annotations

import asyncio
import secrets

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.core.errors import ReceiptNotFoundError
from backend.core.receipt_codes import (
    CaseCode,
    DigestScheme,
    ReceiptKeys,
    keyed_digest,
    legacy_digest,
    new_code,
)
from backend.core.settings import KdfCost
from backend.models import DeploymentSecret, Receipt

SALT_NAME = "receipt-salt"
_SALT_BYTES = 16


class ReceiptBook:
    """Issue codes for cases and find a case by its code; the API flows and the console use."""

    def __init__(self, engine: AsyncEngine, cost: KdfCost, secret: bytes) -> None:
        self._engine = engine
        self._cost = cost
        self._keys = ReceiptKeys(secret)
        self._salt: bytes | None = None

    def __repr__(self) -> str:
        return "ReceiptBook(<keys hidden>)"

    async def salt(self) -> bytes:
        """The legacy digests' salt, made on a first start and published for the bot."""
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
        await self.attach(case_id, keyed_digest(code, self._keys))
        return code

    async def attach(
        self, case_id: str, code_digest: str, scheme: DigestScheme = DigestScheme.KEYED
    ) -> None:
        async with AsyncSession(self._engine) as session:
            session.add(Receipt(digest=code_digest, case_id=case_id, digest_scheme=scheme.value))
            await session.commit()

    async def find(self, code: str) -> str:
        """The case id for a code; ReceiptNotFoundError for a wrong, mistyped or erased code."""
        found = await self._case_of(keyed_digest(code, self._keys), DigestScheme.KEYED)
        if found is None and await self._legacy_kept():
            # Argon2id at production cost is a good part of a second of CPU: not on the loop.
            wanted = await asyncio.to_thread(legacy_digest, code, await self.salt(), self._cost)
            found = await self._case_of(wanted, DigestScheme.LEGACY)
        if found is None:
            raise ReceiptNotFoundError("no case has this code")
        return found

    async def _case_of(self, code_digest: str, scheme: DigestScheme) -> str | None:
        async with AsyncSession(self._engine) as session:
            row = await session.get(Receipt, code_digest)
        return row.case_id if row is not None and row.digest_scheme == scheme.value else None

    async def _legacy_kept(self) -> bool:
        """Whether any code of the old scheme is still kept (they go with their cases)."""
        statement = (
            select(col(Receipt.digest))
            .where(col(Receipt.digest_scheme) == DigestScheme.LEGACY.value)
            .limit(1)
        )
        async with AsyncSession(self._engine) as session:
            return (await session.exec(statement)).first() is not None

    async def revoke(self, case_id: str) -> None:
        async with AsyncSession(self._engine) as session:
            await session.exec(delete(Receipt).where(col(Receipt.case_id) == case_id))
            await session.commit()
