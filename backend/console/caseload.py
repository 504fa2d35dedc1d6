"""A counselor's caseload cap: eight hours with cases that hurt to read is enough without a
ninth at once. A claim beyond `HOTLINE_CASELOAD_CAP` held cases (claimed or active) is refused
with a message that says what to do. Two claims racing at the cap may both pass: the cap is
a guard for people, not an invariant of the store."""

from __future__ import annotations

from aiohttp import web

from backend.console import app_keys
from backend.console.forms import refusal
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession

caseload_cap_key = web.AppKey("console_caseload_cap", int)
DEFAULT_CAP = 5


async def check_room(request: web.Request, session: ConsoleSession) -> None:
    cap = request.app.get(caseload_cap_key, DEFAULT_CAP)
    held = await request.app[app_keys.cases_key].list_held(session.counselor_id)
    if len(held) >= cap:
        raise refusal(
            request,
            web.HTTPConflict,
            _(
                "You already hold %(n)s cases, the most one counselor may hold at once. "
                "Close one or hand it to a colleague before you claim another."
            )
            % {"n": len(held)},
        )
