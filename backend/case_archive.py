"""Finding past and present cases by their routing facts (status, category, priority, when
received, who holds or held them), a page at a time. Routing columns only: a search never
loads a sealed body; opening a result is the case page, audited as any case view.

A receipt code is not a filter here: it would travel in a URL. It is looked up by the form that
posts it (`backend/console/receipt_lookup.py`), rate-limited and audited.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from backend.case_statistics import CENTRE_UTC_OFFSET_H
from backend.cases import CaseSummary
from backend.models import Case

PAGE_SIZE: Final = 25
_COLUMNS = (
    "id",
    "status",
    "priority",
    "category",
    "language",
    "channel",
    "received_at",
    "claimed_by",
    "status_changed_at",
    "victim_unreachable_at",
)


@dataclass(frozen=True)
class Search:
    status: str | None = None
    category: str | None = None
    priority: int | None = None
    received_from: date | None = None
    received_until: date | None = None
    counselor_id: int | None = None
    page: int = 1


@dataclass(frozen=True)
class Found:
    cases: Sequence[CaseSummary]
    total: int
    page: int
    pages: int


def _centre_midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC) - timedelta(hours=CENTRE_UTC_OFFSET_H)


class CaseArchive:
    def __init__(self, engine: AsyncEngine, page_size: int = PAGE_SIZE) -> None:
        self._engine = engine
        self._page_size = page_size

    async def categories(self) -> list[str]:
        query = select(col(Case.category)).distinct().order_by(col(Case.category))
        async with self._engine.connect() as conn:
            return [str(row[0]) for row in (await conn.execute(query)).all()]

    async def search(self, wanted: Search) -> Found:
        conditions: list[Any] = []
        if wanted.status:
            conditions.append(col(Case.status) == wanted.status)
        if wanted.category:
            conditions.append(col(Case.category) == wanted.category)
        if wanted.priority is not None:
            conditions.append(col(Case.priority) == wanted.priority)
        if wanted.received_from is not None:
            conditions.append(col(Case.received_at) >= _centre_midnight(wanted.received_from))
        if wanted.received_until is not None:
            until = _centre_midnight(wanted.received_until + timedelta(days=1))
            conditions.append(col(Case.received_at) < until)
        if wanted.counselor_id is not None:
            conditions.append(col(Case.claimed_by) == wanted.counselor_id)
        where = and_(True, *conditions)
        count = select(func.count()).select_from(Case).where(where)
        page = max(wanted.page, 1)
        rows = (
            select(*(col(getattr(Case, name)) for name in _COLUMNS))
            .where(where)
            .order_by(col(Case.received_at).desc(), col(Case.id))
            .limit(self._page_size)
            .offset((page - 1) * self._page_size)
        )
        async with self._engine.connect() as conn:
            total = int((await conn.execute(count)).scalar_one())
            found = [CaseSummary(*row) for row in (await conn.execute(rows)).all()]
        return Found(found, total, page, max(1, -(-total // self._page_size)))
