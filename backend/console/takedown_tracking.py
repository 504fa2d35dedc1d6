"""Every takedown request across cases (`/console/takedowns`): re-checks overdue first, then
those due today, then the rest by their next re-check; filtered by state and platform.

State and dates are plain columns; the platform is a sealed field, opened with the counselor's
keys. Each case whose requests are opened for the list gets an `unseal` audit link, as a case
view does; a request the session cannot open is listed without its platform.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.audit import AuditAction
from backend.case_statistics import CENTRE_UTC_OFFSET_H
from backend.case_work import CaseKey, case_key
from backend.console import app_keys
from backend.console.access import Access, current_session, guard
from backend.console.forms import render
from backend.console.i18n import gettext as _
from backend.core.errors import CaseNotFoundError, SealingError
from backend.models import TakedownRequest, TakedownStatus
from backend.takedown import TakedownStore
from backend.web import engine_key

LIMIT = 200


@dataclass(frozen=True)
class Tracked:
    row: TakedownRequest
    platform: str | None
    urgency: str  # "overdue", "due" (today, centre time), "later" or "none"


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def urgency(next_check_at: datetime | None, now: datetime) -> str:
    check = _aware(next_check_at)
    if check is None:
        return "none"
    if check < now:
        return "overdue"
    offset = timedelta(hours=CENTRE_UTC_OFFSET_H)
    end_of_day = datetime.combine((now + offset).date() + timedelta(days=1), datetime.min.time())
    return "due" if check < end_of_day.replace(tzinfo=UTC) - offset else "later"


_ORDER = {"overdue": 0, "due": 1, "later": 2, "none": 3}


async def _rows(request: web.Request, state: str | None) -> list[TakedownRequest]:
    query = select(TakedownRequest).order_by(col(TakedownRequest.created_at).desc()).limit(LIMIT)
    if state:
        query = query.where(col(TakedownRequest.status) == state)
    async with AsyncSession(request.app[engine_key]) as session:
        return list((await session.exec(query)).all())


async def tracking_page(request: web.Request) -> web.Response:
    session = current_session(request)
    state = request.query.get("state") or None
    platform = request.query.get("platform") or None
    if state is not None and state not in {s.value for s in TakedownStatus}:
        raise web.HTTPBadRequest(text=_("the search has a value the form does not offer"))
    rows = await _rows(request, state)
    cases = request.app[app_keys.cases_key]
    actor = f"counselor:{session.counselor_id}"
    keys: dict[str, CaseKey | None] = {}
    now = datetime.now(UTC)
    tracked = []
    for row in rows:
        if row.case_id not in keys:
            try:
                keys[row.case_id] = case_key(await cases.get(row.case_id), session.private_keys)
                await cases.record(actor, AuditAction.UNSEAL, row.case_id, "takedown tracking")
            except (SealingError, CaseNotFoundError):
                keys[row.case_id] = None
        key = keys[row.case_id]
        shown = None if key is None else TakedownStore.open(key, row).fields.get("platform", "")
        tracked.append(Tracked(row, shown, urgency(row.next_check_at, now)))
    platforms = sorted({t.platform for t in tracked if t.platform})
    if platform:
        tracked = [t for t in tracked if t.platform == platform]
    far = datetime.max.replace(tzinfo=UTC)
    tracked.sort(key=lambda t: (_ORDER[t.urgency], _aware(t.row.next_check_at) or far))
    return render(
        "takedowns.html",
        session=session,
        tracked=tracked,
        states=[s.value for s in TakedownStatus],
        platforms=platforms,
        state=state or "",
        platform=platform or "",
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/takedowns", guard(Access.COUNSELOR, tracking_page))
