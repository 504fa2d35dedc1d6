"""Erasure in the console (issue 12, point 5): a supervisor shreds a case (one action; a victim
asked with her receipt, and `/console/supervision` lists those requests), or keeps it under a
legal hold with a reason, and releases the hold. Each is audited; a hold refuses the shred
(409). Form posts under `/console` (CSRF token in the form, then back to the supervision
page) and JSON posts under `/api` (the token in `X-CSRF-Token`)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from backend import erasure
from backend.console import app_keys
from backend.console.access import Access, current_session, guard
from backend.console.forms import is_api, read_form, read_json
from backend.web import redis_key

log = logging.getLogger(__name__)

SHRED_REASON = "shredded by a supervisor"


async def _input(request: web.Request) -> dict[str, str]:
    session = current_session(request)
    if not is_api(request):
        return await read_form(request, session)
    body = await read_json(request, session)
    return {str(k): v for k, v in body.items() if isinstance(v, str)}


def _done(request: web.Request, **answer: object) -> web.StreamResponse:
    if is_api(request):
        return web.json_response({"ok": True, **answer})
    raise web.HTTPSeeOther("/console/supervision#erase-requests")


async def shred(request: web.Request) -> web.StreamResponse:
    """Shred a case now: its data key, body and work in SQL, its chat and relay in Redis."""
    data = await _input(request)
    session = current_session(request)
    case_id = request.match_info["case_id"]
    reason = " ".join(data.get("reason", "").split())[:150] or SHRED_REASON
    shredded = await erasure.shred(
        request.app[app_keys.cases_key],
        request.app[redis_key],
        case_id,
        f"counselor:{session.counselor_id}",
        reason,
    )
    return _done(request, shredded=shredded)


async def hold(request: web.Request) -> web.StreamResponse:
    """Put a case under a legal hold (a reason is required): nothing shreds it meanwhile."""
    data = await _input(request)
    session = current_session(request)
    await request.app[app_keys.cases_key].set_legal_hold(
        request.match_info["case_id"], f"counselor:{session.counselor_id}", data.get("reason", "")
    )
    return _done(request, legal_hold=True)


async def release(request: web.Request) -> web.StreamResponse:
    """Release a case's legal hold."""
    await _input(request)
    session = current_session(request)
    await request.app[app_keys.cases_key].release_legal_hold(
        request.match_info["case_id"], f"counselor:{session.counselor_id}"
    )
    return _done(request, legal_hold=False)


def add_routes(app: web.Application) -> None:
    actions: tuple[tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]]], ...] = (
        ("/cases/{case_id}/shred", shred),
        ("/cases/{case_id}/hold", hold),
        ("/cases/{case_id}/hold/release", release),
    )
    for path, handler in actions:
        app.router.add_post("/console" + path, guard(Access.SUPERVISOR, handler))
        app.router.add_post("/api" + path, guard(Access.SUPERVISOR, handler))
