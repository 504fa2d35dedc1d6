"""Blocking a case's sender from the case page, and the supervisors' list of blocks (issue 13).

The sender's BLOCKING pseudonym travels only inside the sealed report (`bot/reports.py`), so
blocking opens the case in memory like the case page does, and is audited; the reason and the
expiry stay with the block in Redis (`backend/blocks.py`) and end with it.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from backend.audit import AuditAction
from backend.blocks import BlockBook
from backend.cases import envelope_of
from backend.console import app_keys
from backend.console.access import Access, current_session, guard
from backend.console.forms import read_form, render
from backend.console.i18n import gettext as _
from backend.core import redis_keys
from backend.core.errors import SealingError
from backend.core.sealing import open_envelope
from backend.web import redis_key

log = logging.getLogger(__name__)

blocks_key = web.AppKey("console_blocks", BlockBook)
MAX_REASON_CHARS = 200


def _hours(raw: str) -> int:
    try:
        hours = int(raw or redis_keys.BLOCK_DEFAULT_HOURS)
    except ValueError:
        raise web.HTTPBadRequest(text=_("the expiry is a whole number of hours")) from None
    if not 1 <= hours <= redis_keys.BLOCK_MAX_HOURS:
        raise web.HTTPBadRequest(
            text=_("a block lasts 1 to %(max)s hours; it always ends")
            % {"max": redis_keys.BLOCK_MAX_HOURS}
        )
    return hours


async def block_sender(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > MAX_REASON_CHARS:
        raise web.HTTPBadRequest(
            text=_("give a reason of at most %(n)s characters") % {"n": MAX_REASON_CHARS}
        )
    hours = _hours(form.get("hours", ""))
    cases = request.app[app_keys.cases_key]
    case = await cases.get(request.match_info["case_id"])
    private_key = session.private_keys.get(case.key_id)
    if private_key is None:
        raise web.HTTPForbidden(text=_("This case cannot be opened with your keys."))
    try:
        body = json.loads(open_envelope(envelope_of(case), private_key))
    except (SealingError, ValueError):
        raise web.HTTPForbidden(text=_("This case cannot be opened with your keys.")) from None
    blocking = body.get("blocking") if isinstance(body, dict) else None
    if not isinstance(blocking, str) or not blocking:
        raise web.HTTPBadRequest(text=_("This case's report does not name a sender to block."))
    actor = f"counselor:{session.counselor_id}"
    await cases.record(actor, AuditAction.UNSEAL, case.id)
    block = await request.app[blocks_key].block(blocking, case.id, reason, actor, hours)
    await cases.record(actor, AuditAction.BLOCK, case.id, f"block {block.id} for {hours} h")
    log.info("counselor %d blocked the sender of case %s", session.counselor_id, case.id)
    raise web.HTTPSeeOther(f"/console/cases/{case.id}")


async def blocks_page(request: web.Request) -> web.Response:
    session = current_session(request)
    current = await request.app[blocks_key].current()
    zone = request.app[app_keys.time_zone_key]
    return render("blocks.html", session=session, blocks=current, time_zone=zone)


async def lift_block(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    lifted = await request.app[blocks_key].lift(request.match_info["block_id"])
    if lifted is not None:
        actor = f"counselor:{session.counselor_id}"
        await request.app[app_keys.cases_key].record(
            actor, AuditAction.UNBLOCK, lifted.case_id, f"block {lifted.id}"
        )
        log.info("counselor %d lifted block %s", session.counselor_id, lifted.id)
    raise web.HTTPSeeOther("/console/blocks")


def add_routes(app: web.Application) -> None:
    app[blocks_key] = BlockBook(app[redis_key])
    routes = (
        ("POST", "/console/cases/{case_id}/block", block_sender, Access.COUNSELOR),
        ("GET", "/console/blocks", blocks_page, Access.SUPERVISOR),
        ("POST", "/console/blocks/{block_id}/lift", lift_block, Access.SUPERVISOR),
    )
    for method, path, handler, access in routes:
        app.router.add_route(method, path, guard(access, handler))
