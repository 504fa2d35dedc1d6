"""The administrators' accounts page: list counselors, add one, change a role, deactivate, reset.

Every route is `Access.ADMINISTRATOR`, which also needs a two-factor sign-in (`access.guard`).
Forms post with the session's CSRF token from our origin (`forms.read_form`). A one-time
password is shown once, in the answer to the post that made it, and is never stored in clear.
An account whose role changes, or which is reset or deactivated, is signed out everywhere at
once, so the change holds from its next request.
"""

from __future__ import annotations

import logging

from aiohttp import web

from backend.accounts import AccountAdmin, AccountError
from backend.console import app_keys
from backend.console.access import Access, current_session, guard, sessions_key
from backend.console.forms import read_form, render
from backend.console.i18n import error_text
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.core import waiting_line
from backend.models import Role
from backend.web import engine_key, redis_key

log = logging.getLogger(__name__)

accounts_key = web.AppKey("console_accounts", AccountAdmin)
ROLES = [r.value for r in Role]


def _actor(session: ConsoleSession) -> str:
    return f"counselor:{session.counselor_id}"


def _target(request: web.Request) -> int:
    try:
        return int(request.match_info["counselor_id"])
    except ValueError:
        raise web.HTTPNotFound(text=_("no such account")) from None


async def _page(
    request: web.Request, *, status: int = 200, error: str = "", shown: dict[str, str] | None = None
) -> web.Response:
    return render(
        "accounts.html",
        status=status,
        session=current_session(request),
        accounts=await request.app[accounts_key].accounts(),
        roles=ROLES,
        error=error,
        shown=shown,
    )


async def accounts_page(request: web.Request) -> web.Response:
    return await _page(request)


async def api_accounts(request: web.Request) -> web.Response:
    """Every account: id, username, role, whether active and whether two-factor is on."""
    listed = await request.app[accounts_key].accounts()
    return web.json_response(
        {
            "accounts": [
                {
                    "id": a.id,
                    "username": a.username,
                    "role": a.role,
                    "active": a.active,
                    "two_factor": a.two_factor,
                }
                for a in listed
            ]
        }
    )


async def add_account(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    role = form.get("role", "")
    if role not in ROLES:
        return await _page(request, status=400, error=_("choose a role"))
    try:
        account, password = await request.app[accounts_key].add(
            form.get("username", ""), Role(role), session.private_keys, _actor(session)
        )
    except AccountError as exc:
        return await _page(request, status=400, error=error_text(exc))
    log.info("counselor %d added account %d", session.counselor_id, account.id)
    return await _page(request, shown={"username": account.username, "password": password})


async def change_role(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    target, role = _target(request), form.get("role", "")
    if role not in ROLES:
        return await _page(request, status=400, error=_("choose a role"))
    try:
        await request.app[accounts_key].change_role(target, Role(role), _actor(session))
    except AccountError as exc:
        return await _page(request, status=409, error=error_text(exc))
    await request.app[sessions_key].end_all(target)
    raise web.HTTPSeeOther("/console/accounts")


async def deactivate(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    target = _target(request)
    try:
        done = await request.app[accounts_key].deactivate(target, _actor(session))
    except AccountError as exc:
        return await _page(request, status=409, error=error_text(exc))
    await request.app[sessions_key].end_all(target)
    for case_id in done.requeued:
        await waiting_line.release(request.app[redis_key], case_id)
    log.info("account %d deactivated; %d case(s) requeued", target, len(done.requeued))
    if target == session.counselor_id:
        raise web.HTTPSeeOther("/console/login")
    raise web.HTTPSeeOther("/console/accounts")


async def reset(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    target = _target(request)
    try:
        password = await request.app[accounts_key].reset(
            target, session.private_keys, _actor(session)
        )
    except AccountError as exc:
        return await _page(request, status=409, error=error_text(exc))
    await request.app[sessions_key].end_all(target)
    named = {a.id: a.username for a in await request.app[accounts_key].accounts()}
    return await _page(request, shown={"username": named.get(target, ""), "password": password})


def add_routes(app: web.Application) -> None:
    app[accounts_key] = AccountAdmin(
        app[engine_key], app[app_keys.counselors_key], app[app_keys.keyring_key]
    )
    routes = (
        ("GET", "/console/accounts", accounts_page),
        ("POST", "/console/accounts", add_account),
        ("POST", "/console/accounts/{counselor_id}/role", change_role),
        ("POST", "/console/accounts/{counselor_id}/deactivate", deactivate),
        ("POST", "/console/accounts/{counselor_id}/reset", reset),
        ("GET", "/api/accounts", api_accounts),
    )
    for method, path, handler in routes:
        app.router.add_route(method, path, guard(Access.ADMINISTRATOR, handler))
