"""Who may call what: every console and API endpoint declares an `Access`, checked on each call.

`guard` wraps a handler with its access rule before it is routed; a route under `/console` or
`/api` without one is a bug the authorization-matrix test catches. Roles are ordered
(counselor < supervisor < administrator): a higher role may do what a lower one may. The
administrator's routes also need a session signed in with a second factor.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Final

from aiohttp import web

from backend.console import i18n
from backend.console.i18n import gettext as _
from backend.console.sessions import COOKIE_NAME, ConsoleSession, ConsoleSessionStore
from backend.core.errors import HotlineError
from backend.models import Role
from backend.web import refusal_for

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

sessions_key = web.AppKey("console_sessions", ConsoleSessionStore)
# The centre's language for a counselor who has not chosen one (HOTLINE_CONSOLE_LANGUAGE).
default_language_key = web.AppKey("console_default_language", str)
SESSION = web.RequestKey("console_session", ConsoleSession)
ACCESS_ATTRIBUTE: Final = "hotline_access"

ROLE_RANK = {Role.COUNSELOR.value: 1, Role.SUPERVISOR.value: 2, Role.ADMINISTRATOR.value: 3}


class Access(Enum):
    PUBLIC = "public"  # the sign-in page, static files
    # Signed in, even before the one-time password is changed or a required TOTP is enrolled.
    PASSWORD_CHANGE = "password_change"  # noqa: S105 - a rule name, not a password
    COUNSELOR = Role.COUNSELOR.value
    SUPERVISOR = Role.SUPERVISOR.value
    ADMINISTRATOR = Role.ADMINISTRATOR.value

    @property
    def minimum_rank(self) -> int:
        return ROLE_RANK.get(self.value, 0)


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: type[web.HTTPException], page: str) -> web.HTTPException:
    if _is_api(request):
        reason = {401: _("sign in first"), 403: _("your role may not do this")}[status.status_code]
        return status(text=json.dumps({"error": reason}), content_type="application/json")
    if status is web.HTTPForbidden:
        return status(text=_("Your role may not open this page."))
    return web.HTTPSeeOther(page)


def _without_two_factor(request: web.Request) -> web.HTTPException:
    """Administrators' pages (accounts, the flows studio) need a two-factor sign-in, whatever
    HOTLINE_CONSOLE_REQUIRE_TOTP says: they change who may read cases and what victims are told."""
    if _is_api(request):
        return web.HTTPForbidden(
            text=json.dumps({"error": "two-factor sign-in required"}),
            content_type="application/json",
        )
    return web.HTTPSeeOther("/console/two-factor")


def current_session(request: web.Request) -> ConsoleSession:
    """The session `guard` checked for this request; only valid inside a guarded handler."""
    if SESSION not in request:  # pragma: no cover - a handler that was not guarded
        raise web.HTTPUnauthorized()
    return request[SESSION]


def guard(access: Access, handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        default = request.app.get(default_language_key, i18n.DEFAULT_LANGUAGE)
        language = i18n.chosen(request.cookies.get(i18n.COOKIE_NAME), default)
        with i18n.speaking(language, request.path_qs):
            try:
                return await _checked(request)
            except HotlineError as exc:
                # Said here, while the counselor's language is known: the error middleware
                # outside would answer in English.
                answer = refusal_for(request, exc, i18n.gettext, i18n.error_text)
                if answer is None:
                    raise
                raise answer from None

    async def _checked(request: web.Request) -> web.StreamResponse:
        if access is not Access.PUBLIC:
            session = await request.app[sessions_key].load(request.cookies.get(COOKIE_NAME))
            if session is None:
                raise _refuse(request, web.HTTPUnauthorized, "/console/login")
            if session.must_change_password and access is not Access.PASSWORD_CHANGE:
                raise _refuse(request, web.HTTPUnauthorized, "/console/password")
            if session.needs_totp and access is not Access.PASSWORD_CHANGE:
                raise _refuse(request, web.HTTPUnauthorized, "/console/two-factor")
            if ROLE_RANK.get(session.role, 0) < access.minimum_rank:
                raise _refuse(request, web.HTTPForbidden, "/console")
            if access is Access.ADMINISTRATOR and session.totp_secret is None:
                raise _without_two_factor(request)
            request[SESSION] = session
        return await handler(request)

    setattr(guarded, ACCESS_ATTRIBUTE, access)
    return guarded


def access_of(handler: object) -> Access | None:
    found = getattr(handler, ACCESS_ATTRIBUTE, None)
    return found if isinstance(found, Access) else None


def holder_rule(session: ConsoleSession) -> int | None:
    """Whose cases this session may move: its own (or waiting ones), or any for a supervisor."""
    if ROLE_RANK.get(session.role, 0) >= ROLE_RANK[Role.SUPERVISOR]:
        return None
    return session.counselor_id
