"""The archive (`/console/archive`): open and closed cases found by status, category,
priority, date received and counselor, a page at a time (`backend/case_archive.py`). Each
result links to the case page, which audits the opening as any case view."""

from __future__ import annotations

from datetime import date
from urllib.parse import urlencode

from aiohttp import web

from backend.case_archive import CaseArchive, Search
from backend.console import app_keys
from backend.console.access import Access, current_session, guard
from backend.console.forms import render
from backend.console.i18n import gettext as _
from backend.models import CaseStatus
from backend.web import engine_key

archive_key = web.AppKey("console_archive", CaseArchive)
_FIELDS = ("status", "category", "priority", "from", "until", "counselor")


def _search(query: dict[str, str]) -> Search:
    def number(name: str) -> int | None:
        return int(query[name]) if query.get(name) else None

    def day(name: str) -> date | None:
        return date.fromisoformat(query[name]) if query.get(name) else None

    try:
        status = query.get("status") or None
        if status is not None:
            CaseStatus(status)
        return Search(
            status=status,
            category=query.get("category") or None,
            priority=number("priority"),
            received_from=day("from"),
            received_until=day("until"),
            counselor_id=number("counselor"),
            page=number("page") or 1,
        )
    except ValueError:
        raise web.HTTPBadRequest(text=_("the search has a value the form does not offer")) from None


async def archive_page(request: web.Request) -> web.Response:
    query = {k: v for k, v in request.query.items() if k in (*_FIELDS, "page")}
    wanted = _search(query)
    found = await request.app[archive_key].search(wanted)
    kept = {k: v for k, v in query.items() if k != "page" and v}
    return render(
        "archive.html",
        session=current_session(request),
        query=query,
        found=found,
        statuses=[s.value for s in CaseStatus],
        categories=await request.app[archive_key].categories(),
        counselors=await request.app[app_keys.counselors_key].roster(),
        page_link=lambda page: "/console/archive?" + urlencode(kept | {"page": page}),
    )


def add_routes(app: web.Application) -> None:
    app[archive_key] = CaseArchive(app[engine_key])
    app.router.add_get("/console/archive", guard(Access.COUNSELOR, archive_page))
