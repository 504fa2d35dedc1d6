"""The supervisors' statistics page (`/console/statistics`) and its CSV: aggregates from
`backend/case_statistics.py`, with every small count shown as "<5" in the page, the chart and
the file alike. The chart is SVG drawn here: no script, nothing fetched from elsewhere."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import date, timedelta

from aiohttp import web

from backend.case_statistics import (
    SMALL_CELL,
    CaseStatistics,
    DayTable,
    Grouping,
    Report,
    centre_today,
)
from backend.console.access import Access, current_session, guard
from backend.console.forms import render
from backend.console.i18n import gettext as _
from backend.core.settings import SlaPolicy
from backend.web import engine_key

statistics_key = web.AppKey("console_statistics", CaseStatistics)

DEFAULT_DAYS = 30
MAX_DAYS = 366
_CHART_W, _CHART_H = 640, 160
# The split chart: a label column, then bars at most this wide, one row per value.
GROUP_CHART_LABEL_W, GROUP_CHART_BAR_W, GROUP_BAR_STEP = 200, 400, 24


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    day: str
    small: bool


def _range(request: web.Request) -> tuple[date, date, Grouping]:
    today = centre_today()
    try:
        end = date.fromisoformat(request.query.get("to") or today.isoformat())
        start = date.fromisoformat(
            request.query.get("from") or (end - timedelta(days=DEFAULT_DAYS - 1)).isoformat()
        )
        grouping = Grouping(request.query.get("by") or Grouping.CATEGORY.value)
    except ValueError:
        raise web.HTTPBadRequest(
            text=_("choose dates as YYYY-MM-DD and a grouping from the list")
        ) from None
    if start > end or (end - start).days >= MAX_DAYS:
        raise web.HTTPBadRequest(text=_("choose a range of one day to a year"))
    return start, end, grouping


def chart(table: DayTable) -> list[Bar]:
    """One bar per day, its height the day's total as the table shows it (`DayTable.day_total`):
    a day under 5 is a hollow bar of height 5 (an upper bound), a day with a "<5" cell a bar of
    its lower bound, so the chart tells no more than the table."""
    if not table.days:
        return []
    totals = {day: table.day_total(day) for day in table.days}
    top = max([SMALL_CELL, *(shown.value for shown in totals.values())])
    width = _CHART_W / len(table.days)
    bars = []
    for i, day in enumerate(table.days):
        shown = totals[day]
        height = _CHART_H * shown.value / top
        bars.append(
            Bar(
                x=round(i * width, 2),
                y=round(_CHART_H - height, 2),
                width=round(max(width - 1, 1), 2),
                height=round(height, 2),
                label=shown.label,
                day=day.isoformat(),
                small=shown.hollow,
            )
        )
    return bars


@dataclass(frozen=True)
class GroupBar:
    """One value of the grouping over the whole range, as a horizontal bar."""

    group: str
    y: float
    width: float
    label: str
    small: bool


def group_chart(table: DayTable) -> list[GroupBar]:
    """One bar per value of the grouping over the whole range (`_group_value`)."""
    values = {g: table.group_total(g) for g in table.group_totals}
    top = max([SMALL_CELL, *(shown.value for shown in values.values())])
    return [
        GroupBar(
            group=group,
            y=i * GROUP_BAR_STEP,
            width=round(GROUP_CHART_BAR_W * shown.value / top, 2),
            label=shown.label,
            small=shown.hollow,
        )
        for i, (group, shown) in enumerate(values.items())
    ]


async def _report(request: web.Request) -> Report:
    start, end, grouping = _range(request)
    return await request.app[statistics_key].report(start, end, grouping)


async def statistics_page(request: web.Request) -> web.Response:
    report = await _report(request)
    return render(
        "statistics.html",
        session=current_session(request),
        report=report,
        groupings=list(Grouping),
        bars=chart(report.per_day),
        group_bars=group_chart(report.per_day),
        group_label_width=GROUP_CHART_LABEL_W,
        group_bar_width=GROUP_CHART_BAR_W,
        group_bar_step=GROUP_BAR_STEP,
        chart_width=_CHART_W,
        chart_height=_CHART_H,
    )


async def statistics_csv(request: web.Request) -> web.Response:
    """The page's cases-per-day table, "<5" included, for a funder's spreadsheet."""
    report = await _report(request)
    table = report.per_day
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["day", *table.groups, "total"])
    for day in table.days:
        cells = [table.cell(day, g).shown for g in table.groups]
        writer.writerow([day.isoformat(), *cells, table.day_total(day).label])
    name = f"hotline-cases-{report.grouping}-{report.start}-{report.end}.csv"
    return web.Response(
        text=out.getvalue(),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


def add_routes(app: web.Application, sla: SlaPolicy) -> None:
    app[statistics_key] = CaseStatistics(app[engine_key], sla)
    app.router.add_get("/console/statistics", guard(Access.SUPERVISOR, statistics_page))
    app.router.add_get("/console/statistics.csv", guard(Access.SUPERVISOR, statistics_csv))
