"""Finding a case by the receipt code a victim reads out (on the phone, or in another channel).

The bot tells the backend each code's keyed digest (a `receipt_issued` event that intake
keeps in the receipts table); the console computes the digest of what the counselor typed
(forgiving case, spaces, hyphens and O/0, I/L/1) and opens the case it names.

A signed-in console must not become a machine for guessing codes: each counselor may look up
`redis_keys.RECEIPT_LOOKUP_LIMIT` codes per `RECEIPT_LOOKUP_WINDOW_S` (counted in Redis, so
across backend nodes) and every lookup is audited (a miss under the counselor's own name, a hit
on the case); a miss costs one Argon2id in a thread while codes of the old scheme are kept.
The typed code is never logged or stored.

- `POST /console/receipts/lookup` (form: `code`, `csrf`): to the case page, or the queue page's
  search box with an error.
- `POST /api/receipts/lookup` (JSON `{"code": ...}`, `X-CSRF-Token`): `{"case_id": ...}`;
  404 for no such code, 400 for something that is not a code, 429 past the limit.
"""

from __future__ import annotations

import logging

from aiohttp import web
from redis.asyncio import Redis

from backend.audit import AuditAction
from backend.console import app_keys
from backend.console.access import Access, current_session, guard
from backend.console.forms import read_form, read_json, refusal, render
from backend.console.i18n import N_
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.core import redis_keys
from backend.core.errors import ReceiptNotFoundError
from backend.core.receipt_codes import normalise
from backend.receipts import ReceiptBook
from backend.web import redis_key

log = logging.getLogger(__name__)

receipts_key = web.AppKey("console_receipts", ReceiptBook)

NOT_A_CODE = N_("not a receipt code: 16 letters and digits, e.g. K7QX-3M9D-V2TA-8HPE")
NO_SUCH_CODE = N_("no case has this code (mistyped, or the case was erased)")
TOO_MANY = N_("too many code lookups; wait a few minutes")


class LookupRefused(Exception):
    def __init__(self, status: type[web.HTTPException], reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def _count(redis: Redis, counselor_id: int) -> int:
    key = redis_keys.receipt_lookups_key(counselor_id)
    async with redis.pipeline(transaction=True) as pipe:
        pipe.incr(key)
        pipe.expire(key, redis_keys.RECEIPT_LOOKUP_WINDOW_S)
        count, _ = await pipe.execute()
    return int(count)


async def find_case(request: web.Request, session: ConsoleSession, typed: str) -> str:
    """The case id for a typed code; LookupRefused says why not."""
    actor = f"counselor:{session.counselor_id}"
    cases = request.app[app_keys.cases_key]
    # What cannot be a code is refused before anything is counted or written: it matches no
    # case and costs no Argon2id, so it guesses nothing (a refused input changes nothing).
    try:
        normalise(typed)
    except ReceiptNotFoundError:
        raise LookupRefused(web.HTTPBadRequest, NOT_A_CODE) from None
    if await _count(request.app[redis_key], session.counselor_id) > redis_keys.RECEIPT_LOOKUP_LIMIT:
        log.warning("counselor %d: receipt lookups over the limit", session.counselor_id)
        raise LookupRefused(web.HTTPTooManyRequests, TOO_MANY)
    try:
        case_id = await request.app[receipts_key].find(typed)
    except ReceiptNotFoundError:
        await cases.record(actor, AuditAction.RECEIPT_LOOKUP, actor, "no match")
        log.info("counselor %d: a receipt code matched no case", session.counselor_id)
        raise LookupRefused(web.HTTPNotFound, NO_SUCH_CODE) from None
    await cases.record(actor, AuditAction.RECEIPT_LOOKUP, case_id, "found by its receipt code")
    log.info("counselor %d found case %s by its receipt code", session.counselor_id, case_id)
    return case_id


async def lookup_form(request: web.Request) -> web.StreamResponse:
    session = current_session(request)
    form = await read_form(request, session)
    try:
        case_id = await find_case(request, session, form.get("code", ""))
    except LookupRefused as refused:
        return render(
            "receipt_lookup.html",
            status=refused.status.status_code,
            session=session,
            error=_(refused.reason),
        )
    raise web.HTTPSeeOther(f"/console/cases/{case_id}")


async def api_lookup(request: web.Request) -> web.Response:
    """Find a case by a receipt code a victim reads out: body {"code": ...}; its case id."""
    session = current_session(request)
    body = await read_json(request, session)
    code = body.get("code")
    try:
        if not isinstance(code, str):
            raise LookupRefused(web.HTTPBadRequest, NOT_A_CODE)
        case_id = await find_case(request, session, code)
    except LookupRefused as refused:
        raise refusal(request, refused.status, _(refused.reason)) from None
    return web.json_response({"case_id": case_id, "url": f"/console/cases/{case_id}"})


async def lookup_page(request: web.Request) -> web.Response:
    return render("receipt_lookup.html", session=current_session(request), error=None)


def add_routes(app: web.Application, receipts: ReceiptBook) -> None:
    app[receipts_key] = receipts
    for method, path, handler in (
        ("GET", "/console/receipts/lookup", lookup_page),
        ("POST", "/console/receipts/lookup", lookup_form),
        ("POST", "/api/receipts/lookup", api_lookup),
    ):
        app.router.add_route(method, path, guard(Access.COUNSELOR, handler))
