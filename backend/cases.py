"""The case store: sealed reports written exactly once, read back for the console."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.errors import CaseNotFoundError
from backend.models import Case, CaseStatus
from backend.sealing import Envelope, RoutingHeader


@dataclass(frozen=True)
class CaseSummary:
    """What the queue shows: routing facts only, nothing the victim said."""

    id: str
    status: str
    priority: int
    category: str
    language: str
    channel: str
    received_at: datetime


class CaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def store_sealed(self, idempotency_key: str, envelope: Envelope) -> bool:
        """Insert a sealed report once; True if it was new, False if it was already stored."""
        header = envelope.header
        values = {
            "id": header.case_id,
            "idempotency_key": idempotency_key,
            "status": CaseStatus.QUEUED.value,
            "priority": header.priority,
            "language": header.language,
            "channel": header.channel,
            "category": header.category,
            "key_id": header.key_id,
            "created_at": header.created_at,
            "header": envelope.header_bytes,
            "wrapped_key": envelope.wrapped_key,
            "nonce": envelope.nonce,
            "ciphertext": envelope.ciphertext,
        }
        insert = pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        # A replayed stream entry hits either key; both mean "already stored".
        statement = insert(Case).values(**values).on_conflict_do_nothing().returning(col(Case.id))
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
            return result.first() is not None

    async def list_open(self) -> Sequence[CaseSummary]:
        query = (
            select(Case)
            .where(col(Case.status).not_in([CaseStatus.CLOSED.value, CaseStatus.PURGED.value]))
            .order_by(col(Case.priority).desc(), col(Case.received_at))
        )
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()
        return [
            CaseSummary(
                c.id, c.status, c.priority, c.category, c.language, c.channel, c.received_at
            )
            for c in rows
        ]

    async def get(self, case_id: str) -> Case:
        async with AsyncSession(self._engine) as session:
            case = await session.get(Case, case_id)
        if case is None:
            raise CaseNotFoundError(case_id)
        return case

    async def count(self) -> int:
        async with AsyncSession(self._engine) as session:
            return (await session.exec(select(func.count()).select_from(Case))).one()


def envelope_of(case: Case) -> Envelope:
    """Rebuild the sealed envelope of a stored case, to open it in a counselor's session."""
    if case.wrapped_key is None:
        raise CaseNotFoundError(f"{case.id} was erased")
    return Envelope(
        header=RoutingHeader.from_bytes(case.header),
        header_bytes=case.header,
        wrapped_key=case.wrapped_key,
        nonce=case.nonce,
        ciphertext=case.ciphertext,
    )
