"""The counselor's choice of console language, remembered in a cookie on this browser (the
choice says nothing about a case, so it needs no account row and survives signing out)."""

from __future__ import annotations

from aiohttp import web

from backend.console import i18n
from backend.console.access import Access, guard
from backend.console.forms import read_form

_YEAR_S = 365 * 24 * 3600


def _local(target: str) -> str:
    """Only back to a console page: never an open redirect to another site."""
    if target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console"


async def choose_language(request: web.Request) -> web.Response:
    form = await read_form(request, None)
    language = form.get("language", "")
    if language not in i18n.LANGUAGES:
        raise web.HTTPBadRequest(text=i18n.gettext("unknown language"))
    response = web.HTTPSeeOther(_local(form.get("next", "/console")))
    response.set_cookie(
        i18n.COOKIE_NAME,
        language,
        max_age=_YEAR_S,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )
    raise response


def add_routes(app: web.Application) -> None:
    app.router.add_route("POST", "/console/language", guard(Access.PUBLIC, choose_language))
