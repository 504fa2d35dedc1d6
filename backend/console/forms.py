"""The console's one set of request checks and page rendering, shared by every console module.

- A form post (`read_form`): our origin (`check_origin`) and the session's CSRF token in the
  form's `csrf` field.
- A JSON post (`check_json_post`): the session's CSRF token in the `X-CSRF-Token` header, which
  a page on another site can neither read nor set (setting it needs our CORS consent, never
  given), and no sign of another site.
- A WebSocket upgrade (`check_upgrade_origin`): exactly our origin.
"Our origin" is the request's public scheme and host: behind a trusted TLS proxy that is what
the proxy says (backend/forwarded.py), so an https console passes.
"""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from backend.console import i18n
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.web import refused

log = logging.getLogger(__name__)

CSRF_HEADER = "X-CSRF-Token"
CROSS_SITE = i18n.N_("cross-site request refused")

_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("backend.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    extensions=["jinja2.ext.i18n"],
)
# Newstyle gettext: `_("... %(n)s", n=x)` escapes `x` like any other expression.
_templates.install_gettext_callables(  # type: ignore[attr-defined]  # added by jinja2.ext.i18n
    i18n.gettext, i18n.ngettext, newstyle=True
)
_templates.globals.update(
    current_language=i18n.current,
    current_page=i18n.current_page,
    language_names=i18n.LANGUAGE_NAMES,
    script_messages=i18n.script_messages,
)


def local_time(value: datetime | str | float | None, zone: str) -> str:
    """A stored time (UTC: naive or aware, ISO text or Unix time) in the centre's time zone,
    with the zone's name: counselors work in local time; a bare UTC time misleads (issue 18)."""
    if value is None or value == "":
        return ""
    if isinstance(value, int | float):
        moment = datetime.fromtimestamp(value, UTC)
    else:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    local = moment.astimezone(ZoneInfo(zone))
    return f"{local:%Y-%m-%d %H:%M} {local.tzname()}"


_templates.filters["local"] = local_time


def render(name: str, status: int = 200, **context: Any) -> web.Response:
    """A console page from `templates/`, autoescaped: a victim's words are always inert."""
    body = _templates.get_template(name).render(**context)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def json_error(status: type[web.HTTPException], reason: str) -> web.HTTPException:
    return status(text=json.dumps({"error": reason}), content_type="application/json")


def refusal(
    request: web.Request, status: type[web.HTTPException], reason: str
) -> web.HTTPException:
    """JSON for the API, plain text for pages: as the error middleware answers."""
    return refused(request, status, reason)


def own_origin(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}"


def check_origin(request: web.Request) -> None:
    """A form post from our own pages only."""
    # Under `Referrer-Policy: no-referrer` Chromium sends "Origin: null" even on a same-origin
    # form post; Sec-Fetch-Site, which page script cannot set, then says where it came from.
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if origin == "null" and site is not None:
        if site != "same-origin":
            raise web.HTTPForbidden(text=_(CROSS_SITE))
        return
    if site is not None and site not in {"same-origin", "none"}:
        raise web.HTTPForbidden(text=_(CROSS_SITE))
    if origin is not None and origin != own_origin(request):
        raise web.HTTPForbidden(text=_(CROSS_SITE))


async def read_form(request: web.Request, session: ConsoleSession | None) -> dict[str, str]:
    """A form's text fields, after the origin check and (with a session) the CSRF token."""
    check_origin(request)
    form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
    if session is not None and not hmac.compare_digest(form.get("csrf", ""), session.csrf_token):
        raise web.HTTPForbidden(text=_("the form has expired; reload the page"))
    return form


def check_json_post(request: web.Request, session: ConsoleSession) -> None:
    """A JSON state change. Same-origin fetch() sends "Origin: null" under
    `Referrer-Policy: no-referrer`, so the header token is what decides; the origin checks
    only refuse the clearly foreign."""
    site = request.headers.get("Sec-Fetch-Site")
    origin = request.headers.get("Origin")
    if (site is not None and site not in {"same-origin", "none"}) or (
        origin not in {None, "null"} and origin != own_origin(request)
    ):
        raise refusal(request, web.HTTPForbidden, _(CROSS_SITE))
    given = request.headers.get(CSRF_HEADER, "").encode()
    if not hmac.compare_digest(given, session.csrf_token.encode()):
        raise refusal(
            request,
            web.HTTPForbidden,
            _("the %(header)s header is missing or stale; reload") % {"header": CSRF_HEADER},
        )


async def read_json(request: web.Request, session: ConsoleSession) -> dict[str, Any]:
    """A JSON post's object, after `check_json_post`."""
    check_json_post(request, session)
    try:
        body = await request.json()
    except (ValueError, RecursionError):  # RecursionError: [[[[...]]]]
        raise json_error(web.HTTPBadRequest, _("body must be JSON")) from None
    if not isinstance(body, dict):
        raise json_error(web.HTTPBadRequest, _("body must be a JSON object"))
    return body


def check_upgrade_origin(request: web.Request) -> None:
    # Browsers always send Origin on a WebSocket upgrade, with the opening page's real origin
    # whatever the referrer policy: no Origin, or another, is not our page. Without this any
    # site's page could open a socket with the counselor's cookie (cross-site WebSocket
    # hijacking).
    if request.headers.get("Origin") != own_origin(request):
        log.warning("console WebSocket upgrade refused: not from the console's origin")
        raise web.HTTPForbidden(text=_(CROSS_SITE))
