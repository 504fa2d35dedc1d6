"""Numbers for supervisors and funders: counts and times over the routing facts only (channel,
category, priority, coarse age group, when), each computed by one SQL aggregate. Nothing here
reads a sealed column, and no query returns a case's row.

A count under `SMALL_CELL` is shown as "<5" wherever it leaves this module (`Cell.shown`), so a
rare combination (one minor's report on a quiet Tuesday) cannot single out a victim, and a
total with such a count in it only as the lower bound its parts give (`bounded`), so the count
cannot be worked out by difference. Zero is shown as 0: an empty cell names nobody. Averages
over fewer than `SMALL_CELL` cases are not shown at all.

Days and office hours are the centre's (Korea, UTC+9, no daylight saving), whatever the server's
clock zone.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Final

from sqlalchemy import DateTime, TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.audit import AuditAction
from backend.core.settings import SlaPolicy
from backend.models import TakedownStatus

SMALL_CELL: Final = 5
CENTRE_UTC_OFFSET_H: Final = 9
# Office hours on weekdays, centre time: a request outside them is "after hours".
OFFICE_OPENS_H: Final = 9
OFFICE_CLOSES_H: Final = 18
PRIORITIES: Final = (3, 2, 1, 0)


class Grouping(StrEnum):
    """What the cases-per-day table is split by: routing facts the bot wrote in the clear."""

    CHANNEL = "channel"
    CATEGORY = "category"
    PRIORITY = "priority"
    # minor, adult or not_said (`conversation.AGE_GROUPS`): never an age or a band.
    AGE_GROUP = "age_group"


@dataclass(frozen=True)
class Cell:
    n: int

    @property
    def shown(self) -> str:
        return "<5" if 0 < self.n < SMALL_CELL else str(self.n)

    @property
    def small(self) -> bool:
        return 0 < self.n < SMALL_CELL


@dataclass(frozen=True)
class DayTable:
    """Cases received per centre day (rows) and per value of the grouping (columns)."""

    days: list[date]
    groups: list[str]
    cells: dict[tuple[date, str], Cell]
    totals: dict[date, Cell]
    # Over the whole range, per value of the grouping (the chart of the split).
    group_totals: dict[str, Cell]

    def cell(self, day: date, group: str) -> Cell:
        return self.cells.get((day, group), Cell(0))

    def day_total(self, day: date) -> Shown:
        """The day's total as it may be shown (`bounded`): a row's exact total less its other
        cells would give a "<5" cell of the day away."""
        return bounded(self.totals[day], [self.cell(day, g) for g in self.groups])

    def group_total(self, group: str) -> Shown:
        """A value of the grouping over the whole range, as it may be shown (`bounded`): its
        exact total less its other days would give a day shown as "<5" away."""
        return bounded(self.group_totals[group], [self.cell(day, group) for day in self.days])


@dataclass(frozen=True)
class Shown:
    """A total as the page, the chart and the CSV show it: `value` (a bar's length), `label`,
    and whether it is drawn hollow (an upper bound: under 5)."""

    value: int
    label: str
    hollow: bool


def bounded(total: Cell, parts: list[Cell]) -> Shown:
    """A total of `parts`. Under 5: "<5", hollow, drawn at 5. When a part is shown as "<5",
    the exact total less the other parts would give it away (one victim on a quiet day), so
    it says only what the parts already do: at least the exact parts plus one per "<5" part
    ("≥8"). Otherwise exact."""
    if total.small:
        return Shown(SMALL_CELL, total.shown, hollow=True)
    if any(part.small for part in parts):
        floor = sum(1 if part.small else part.n for part in parts)
        return Shown(floor, f"≥{floor}", hollow=False)
    return Shown(total.n, total.shown, hollow=False)


@dataclass(frozen=True)
class ResponseRow:
    """Per priority: cases a counselor took, minutes to the first claim, SLA met."""

    priority: int
    claimed: Cell
    average_minutes: float | None
    sla_met: Cell
    sla_target_minutes: int


@dataclass(frozen=True)
class TakedownRow:
    status: str
    requests: Cell
    # Sent to removed, in days; only for "removed".
    average_days_to_removal: float | None


@dataclass(frozen=True)
class Report:
    start: date
    end: date
    grouping: Grouping
    per_day: DayTable
    response: list[ResponseRow]
    after_hours: Cell
    in_hours: Cell
    takedowns: list[TakedownRow]


def centre_today() -> date:
    return (datetime.now(UTC) + timedelta(hours=CENTRE_UTC_OFFSET_H)).date()


def _average(total: float | None, n: int) -> float | None:
    return None if total is None or n < SMALL_CELL else round(total / n, 1)


def _sql(statement: str) -> TextClause:
    """A fixed statement (its fragments are ours, never a request's), with typed bounds."""
    return text(statement).bindparams(
        bindparam("start", type_=DateTime()), bindparam("end", type_=DateTime())
    )


class CaseStatistics:
    """The aggregates, in the SQL dialect of the engine (SQLite or PostgreSQL)."""

    def __init__(self, engine: AsyncEngine, sla: SlaPolicy) -> None:
        self._engine = engine
        self._sla = sla
        self._postgres = engine.dialect.name == "postgresql"

    def _epoch_s(self, column: str, *, text_column: bool = False) -> str:
        if self._postgres:
            cast = f"CAST({column} AS timestamptz)" if text_column else column
            return f"EXTRACT(EPOCH FROM {cast})"
        return f"((julianday({column}) - 2440587.5) * 86400.0)"

    def _centre_day(self, column: str) -> str:
        if self._postgres:
            return f"CAST({column} + INTERVAL '{CENTRE_UTC_OFFSET_H} hours' AS date)"
        return f"date({column}, '+{CENTRE_UTC_OFFSET_H} hours')"

    def _centre_hour_and_weekday(self, column: str) -> tuple[str, str]:
        """Hour 0-23 and weekday 0 (Sunday) to 6, centre time, as integers."""
        if self._postgres:
            shifted = f"({column} + INTERVAL '{CENTRE_UTC_OFFSET_H} hours')"
            return (
                f"CAST(EXTRACT(HOUR FROM {shifted}) AS integer)",
                f"CAST(EXTRACT(DOW FROM {shifted}) AS integer)",
            )
        shift = f"'+{CENTRE_UTC_OFFSET_H} hours'"
        return (
            f"CAST(strftime('%H', {column}, {shift}) AS integer)",
            f"CAST(strftime('%w', {column}, {shift}) AS integer)",
        )

    @staticmethod
    def _bounds(start: date, end: date) -> dict[str, datetime]:
        """[start, end] as centre days, in UTC as the columns hold it (naive)."""
        offset = timedelta(hours=CENTRE_UTC_OFFSET_H)
        return {
            "start": datetime.combine(start, time()) - offset,
            "end": datetime.combine(end + timedelta(days=1), time()) - offset,
        }

    async def report(self, start: date, end: date, grouping: Grouping) -> Report:
        bounds = self._bounds(start, end)
        day = self._centre_day("received_at")
        # The grouping is an enum member, never the request's text: safe to name as a column.
        column = Grouping(grouping).value
        hour, weekday = self._centre_hour_and_weekday("received_at")
        after_hours = (
            f"({weekday} IN (0, 6) OR {hour} < {OFFICE_OPENS_H} OR {hour} >= {OFFICE_CLOSES_H})"
        )
        first_claim = (
            "SELECT subject, MIN(at) AS first_at FROM audit_log "
            "WHERE action = :claim GROUP BY subject"
        )
        claimed_s = self._epoch_s("f.first_at", text_column=True)
        waited = f"({claimed_s} - {self._epoch_s('c.received_at')})"
        target = "CASE c.priority " + " ".join(
            f"WHEN {p} THEN {self._sla.target_s(p)}" for p in PRIORITIES
        )
        target += f" ELSE {self._sla.target_s(0)} END"
        async with self._engine.connect() as conn:
            per_day = (
                await conn.execute(
                    _sql(
                        f"SELECT {day} AS day, CAST({column} AS varchar(32)) AS grp, COUNT(*) "  # noqa: S608 - our fragments only; values are bound
                        "FROM cases WHERE received_at >= :start AND received_at < :end "
                        "GROUP BY 1, 2 ORDER BY 1, 2"
                    ),
                    bounds,
                )
            ).all()
            response = (
                await conn.execute(
                    _sql(
                        f"SELECT c.priority, COUNT(*), SUM({waited}), "  # noqa: S608 - our fragments only; values are bound
                        f"SUM(CASE WHEN {waited} <= {target} THEN 1 ELSE 0 END) "
                        f"FROM cases c JOIN ({first_claim}) f ON f.subject = c.id "
                        "WHERE c.received_at >= :start AND c.received_at < :end "
                        "GROUP BY c.priority"
                    ),
                    bounds | {"claim": AuditAction.CLAIM.value},
                )
            ).all()
            hours = (
                await conn.execute(
                    _sql(
                        f"SELECT {after_hours} AS late, COUNT(*) FROM cases "  # noqa: S608 - our fragments only; values are bound
                        "WHERE received_at >= :start AND received_at < :end GROUP BY 1"
                    ),
                    bounds,
                )
            ).all()
            removal = f"({self._epoch_s('t.updated_at')} - {self._epoch_s('t.sent_at')})"
            takedowns = (
                await conn.execute(
                    _sql(
                        f"SELECT t.status, COUNT(*), SUM(CASE WHEN t.status = :removed "  # noqa: S608 - our fragments only; values are bound
                        f"AND t.sent_at IS NOT NULL THEN {removal} END), "
                        "SUM(CASE WHEN t.status = :removed AND t.sent_at IS NOT NULL "
                        "THEN 1 ELSE 0 END) "
                        "FROM takedown_requests t JOIN cases c ON c.id = t.case_id "
                        "WHERE t.created_at >= :start AND t.created_at < :end "
                        "GROUP BY t.status"
                    ),
                    bounds | {"removed": TakedownStatus.REMOVED.value},
                )
            ).all()
        return Report(
            start=start,
            end=end,
            grouping=grouping,
            per_day=_day_table(
                start, end, [(_as_date(r[0]), str(r[1]), int(r[2])) for r in per_day]
            ),
            response=self._response_rows(
                {int(r[0]): (int(r[1]), r[2], int(r[3] or 0)) for r in response}
            ),
            after_hours=Cell(sum(int(r[1]) for r in hours if bool(r[0]))),
            in_hours=Cell(sum(int(r[1]) for r in hours if not bool(r[0]))),
            takedowns=[
                TakedownRow(
                    str(r[0]),
                    Cell(int(r[1])),
                    _average(None if r[2] is None else float(r[2]) / 86400, int(r[3] or 0)),
                )
                for r in sorted(takedowns, key=lambda r: str(r[0]))
            ],
        )

    def _response_rows(self, found: dict[int, tuple[int, float | None, int]]) -> list[ResponseRow]:
        rows = []
        for priority in PRIORITIES:
            n, total_s, met = found.get(priority, (0, None, 0))
            rows.append(
                ResponseRow(
                    priority=priority,
                    claimed=Cell(n),
                    average_minutes=_average(None if total_s is None else float(total_s) / 60, n),
                    sla_met=Cell(met),
                    sla_target_minutes=self._sla.target_s(priority) // 60,
                )
            )
        return rows


def _as_date(value: object) -> date:
    """SQLite's date() is text, PostgreSQL's a date."""
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def _day_table(start: date, end: date, rows: list[tuple[date, str, int]]) -> DayTable:
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    groups = sorted({g for _d, g, _n in rows})
    cells = {(d, g): Cell(n) for d, g, n in rows}
    totals = {d: Cell(sum(n for dd, _g, n in rows if dd == d)) for d in days}
    group_totals = {g: Cell(sum(n for _d, gg, n in rows if gg == g)) for g in groups}
    return DayTable(days, groups, cells, totals, group_totals)
