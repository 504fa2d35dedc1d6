"""A counselor's "away": still on shift (victims are still told someone is there, and the
counselor keeps the cases they hold), but out of new assignments: a colleague cannot transfer a
case to them until they are back. For a break after a hard conversation, without going off
shift and leaving victims told that nobody is there."""

from __future__ import annotations

from typing import cast

from aiohttp import web

from backend.console.access import Access, current_session, guard
from backend.console.forms import read_form, refusal
from backend.console.i18n import gettext as _
from backend.core import redis_keys
from backend.web import redis_key


async def is_away(request: web.Request, counselor_id: int) -> bool:
    return bool(await request.app[redis_key].sismember(redis_keys.SHIFT_AWAY, str(counselor_id)))


async def away_ids(request: web.Request) -> set[int]:
    members = cast(set[bytes], await request.app[redis_key].smembers(redis_keys.SHIFT_AWAY))
    return {int(m) for m in members}


async def check_available(request: web.Request, counselor_id: int, username: str) -> None:
    """Refuses a new case for a counselor who is away."""
    if await is_away(request, counselor_id):
        raise refusal(
            request,
            web.HTTPConflict,
            _("%(name)s is away and takes no new cases now; choose a colleague who is in.")
            % {"name": username},
        )


async def away_form(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    redis = request.app[redis_key]
    if form.get("away") == "1":
        await redis.sadd(redis_keys.SHIFT_AWAY, str(session.counselor_id))
    else:
        await redis.srem(redis_keys.SHIFT_AWAY, str(session.counselor_id))
    raise web.HTTPSeeOther("/console")


def add_routes(app: web.Application) -> None:
    app.router.add_post("/console/away", guard(Access.COUNSELOR, away_form))
