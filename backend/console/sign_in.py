"""Signing in and out of the console: password, then a TOTP code when enrolled; two-factor
enrolment; the password change. Every state change checks the CSRF token and the origin."""

from __future__ import annotations

import io
import logging
import secrets

import segno
from aiohttp import web

from backend import password_policy, totp
from backend.console.access import Access, current_session, guard, sessions_key
from backend.console.app_keys import (
    counselors_key,
    keyring_key,
    login_guard_key,
    pending_key,
    require_totp_key,
)
from backend.console.forms import check_origin, read_form, render
from backend.console.i18n import gettext as _
from backend.console.sessions import COOKIE_NAME, PENDING_COOKIE_NAME, ConsoleSession
from backend.core.errors import AuthenticationError, KeyUnwrapError
from backend.keyring import counselor_holder
from backend.login_guard import LoginLockedError

log = logging.getLogger(__name__)


def _set_cookie(
    request: web.Request, response: web.StreamResponse, value: str, name: str = COOKIE_NAME
) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        secure=request.secure,
        path="/",
    )


async def _require(request: web.Request) -> ConsoleSession:
    """The signed-in counselor; `guard` has checked the session and role before the handler."""
    return current_session(request)


async def login_page(request: web.Request) -> web.Response:
    return render("login.html", error=None)


async def login(request: web.Request) -> web.Response:
    form = await read_form(request, None)
    username, password = form.get("username", ""), form.get("password", "")
    if not username or not password:  # no guess was made: nothing to count or to hash
        return render("login.html", status=401, error="login_failed")
    guard = request.app[login_guard_key]
    try:
        # Counted before the password is checked, so parallel guesses each cost an attempt.
        attempt = await guard.reserve(username, request.remote)
    except LoginLockedError:
        log.warning("console login refused: locked after repeated failures")
        return render("login.html", status=429, error="locked")
    counselors = request.app[counselors_key]
    try:
        counselor = await counselors.authenticate(username, password)
        if counselor.id is None:  # pragma: no cover - stored rows always have an id
            raise AuthenticationError("counselor without id")
        private_keys = await request.app[keyring_key].unwrap_for(counselor.id, password)
    except (AuthenticationError, KeyUnwrapError):
        log.info("console login failed")
        await guard.failed(attempt)
        return render("login.html", status=401, error="login_failed")
    try:
        secret = await counselors.open_totp_secret(counselor, password)
    except KeyUnwrapError:  # pragma: no cover - sealed under this very password
        log.error("console login: counselor %d's TOTP secret does not open", counselor.id)
        return render("login.html", status=500, error="login_failed")
    session = ConsoleSession(
        counselor_id=counselor.id,
        username=counselor.username,
        role=counselor.role,
        must_change_password=counselor.must_change_password,
        csrf_token=secrets.token_urlsafe(32),
        private_keys=private_keys,
        totp_secret=secret,
        needs_totp=secret is None and request.app[require_totp_key],
    )
    if secret is not None:
        # The password was right; the username's count stays until the code is right too, so
        # wrong codes keep counting toward the lock.
        await guard.password_passed(attempt)
        pending = await request.app[pending_key].create(session)
        log.info("console login for counselor %d waits for a TOTP code", counselor.id)
        response = web.HTTPSeeOther("/console/login/code")
        _set_cookie(request, response, pending, PENDING_COOKIE_NAME)
        raise response
    session.failed_sign_ins = await guard.succeeded(attempt)
    raise await _start_session(request, session)


async def _start_session(request: web.Request, session: ConsoleSession) -> web.HTTPException:
    """A new session id (the old one, if any, ends): a redirect carrying its cookie."""
    old = request.cookies.get(COOKIE_NAME)
    if old:
        await request.app[sessions_key].delete(old)
    cookie = await request.app[sessions_key].create(session)
    log.info("console login for counselor %d", session.counselor_id)
    if session.must_change_password:
        target = "/console/password"
    elif session.needs_totp:
        target = "/console/two-factor"
    else:
        target = "/console"
    response = web.HTTPSeeOther(target)
    _set_cookie(request, response, cookie)
    return response


async def _pending_sign_in(request: web.Request) -> ConsoleSession | None:
    return await request.app[pending_key].load(request.cookies.get(PENDING_COOKIE_NAME))


async def code_page(request: web.Request) -> web.Response:
    pending = await _pending_sign_in(request)
    if pending is None:
        return render("login.html", status=401, error="expired")
    return render("code.html", csrf=pending.csrf_token, error=None)


async def submit_code(request: web.Request) -> web.Response:
    """The second step of a sign-in: a TOTP code, good once, counted by the login guard."""
    pending = await _pending_sign_in(request)
    if pending is None:
        check_origin(request)
        return render("login.html", status=401, error="expired")
    form = await read_form(request, pending)
    cookie = request.cookies[PENDING_COOKIE_NAME]
    guard = request.app[login_guard_key]
    try:
        # Counted before the code is checked: 300 codes sent at once cost 300 attempts.
        attempt = await guard.reserve(pending.username, request.remote)
    except LoginLockedError:
        await request.app[pending_key].delete(cookie)
        log.warning("console login refused at the code: locked after repeated failures")
        return render("login.html", status=429, error="locked")
    if pending.totp_secret is None:  # pragma: no cover - only two-factor sign-ins wait here
        raise web.HTTPBadRequest(text=_("no code is expected"))
    step = totp.matching_step(pending.totp_secret, form.get("code", ""))
    if step is None or not await request.app[counselors_key].use_totp_step(
        pending.counselor_id, step
    ):
        log.info(
            "console login: wrong or replayed TOTP code for counselor %d", pending.counselor_id
        )
        await guard.failed(attempt)
        return render("code.html", status=401, csrf=pending.csrf_token, error="wrong_code")
    pending.failed_sign_ins = await guard.succeeded(attempt)
    await request.app[pending_key].delete(cookie)
    response = await _start_session(request, pending)
    response.del_cookie(PENDING_COOKIE_NAME, path="/")
    raise response


async def two_factor_page(request: web.Request) -> web.Response:
    """Enrolment: a new secret, shown as text, switched on only by a first valid code."""
    session = await _require(request)
    if session.totp_secret is None and session.totp_setup is None:
        session.totp_setup = totp.new_secret()
        await request.app[sessions_key].update(request.cookies[COOKIE_NAME], session)
    return _two_factor(request, session, None)


async def two_factor_qr(request: web.Request) -> web.Response:
    """The enrolment's otpauth:// URI as a QR code, drawn here (SVG, our own origin, never
    cached): a third-party QR service would learn the secret."""
    session = await _require(request)
    if session.totp_setup is None:
        raise web.HTTPNotFound(text=_("no enrolment is in progress"))
    uri = totp.provisioning_uri(session.totp_setup, session.username)
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=5, border=4, xmldecl=False)
    return web.Response(
        body=out.getvalue(),
        content_type="image/svg+xml",
        headers={"Cache-Control": "no-store"},
    )


def _two_factor(
    request: web.Request, session: ConsoleSession, error: str | None, status: int = 200
) -> web.Response:
    setup = session.totp_setup
    return render(
        "two_factor.html",
        status=status,
        session=session,
        error=error,
        required=request.app[require_totp_key],
        secret=None if setup is None else totp.to_base32(setup),
        uri=None if setup is None else totp.provisioning_uri(setup, session.username),
    )


async def _recheck_password(request: web.Request, session: ConsoleSession, password: str) -> bool:
    """The password again, for a change to the second factor; failures count as sign-in ones."""
    if not password:  # no guess was made: nothing to count or to hash
        return False
    guard = request.app[login_guard_key]
    try:
        attempt = await guard.reserve(session.username, request.remote)
    except LoginLockedError:
        return False
    try:
        await request.app[counselors_key].authenticate(session.username, password)
    except AuthenticationError:
        await guard.failed(attempt)
        return False
    await guard.succeeded(attempt)
    return True


async def enable_two_factor(request: web.Request) -> web.Response:
    session = await _require(request)
    form = await read_form(request, session)
    setup = session.totp_setup
    if session.totp_secret is not None or setup is None:
        raise web.HTTPSeeOther("/console/two-factor")
    password = form.get("password", "")
    if not await _recheck_password(request, session, password):
        return _two_factor(request, session, "password", 401)
    step = totp.matching_step(setup, form.get("code", ""))
    if step is None:
        return _two_factor(request, session, "code", 400)
    await request.app[counselors_key].enable_totp(session.counselor_id, password, setup, step)
    session.totp_secret, session.totp_setup, session.needs_totp = setup, None, False
    await request.app[sessions_key].update(request.cookies[COOKIE_NAME], session)
    log.info("counselor %d turned on two-factor sign-in", session.counselor_id)
    raise web.HTTPSeeOther("/console")


async def disable_two_factor(request: web.Request) -> web.Response:
    session = await _require(request)
    form = await read_form(request, session)
    if request.app[require_totp_key]:
        raise web.HTTPForbidden(text=_("An administrator requires two-factor sign-in."))
    if not await _recheck_password(request, session, form.get("password", "")):
        return _two_factor(request, session, "password", 401)
    await request.app[counselors_key].disable_totp(
        session.counselor_id, counselor_holder(session.counselor_id)
    )
    session.totp_secret = None
    await request.app[sessions_key].update(request.cookies[COOKIE_NAME], session)
    log.info("counselor %d turned off two-factor sign-in", session.counselor_id)
    raise web.HTTPSeeOther("/console/two-factor")


async def password_page(request: web.Request) -> web.Response:
    session = await _require(request)
    return render("password.html", session=session, error=None)


async def change_password(request: web.Request) -> web.Response:
    """A new password, only with the current one (a session left open on a shared computer
    must not be enough); every other session of the counselor ends (issue 18)."""
    session = await _require(request)
    form = await read_form(request, session)
    new, repeat = form.get("new_password", ""), form.get("repeat_password", "")
    found = password_policy.problem(new, session.username)
    error = None if found is None else found.value
    if error is None and new != repeat:
        error = "mismatch"
    if error is None and not await _recheck_password(
        request, session, form.get("current_password", "")
    ):
        error = "current"
    if error is not None:
        status = 401 if error == "current" else 400
        return render("password.html", status=status, session=session, error=error)
    wraps = await request.app[keyring_key].wraps_for_async(session.private_keys, new)
    await request.app[counselors_key].change_password(
        session.counselor_id, new, wraps, session.totp_secret
    )
    session.must_change_password = False
    session.csrf_token = secrets.token_urlsafe(32)
    # A password change starts a new session id, as a login does, and ends every other one.
    store = request.app[sessions_key]
    await store.delete(request.cookies[COOKIE_NAME])
    cookie = await store.create(session)
    ended = await store.end_others(session.counselor_id, keep=cookie)
    log.info(
        "counselor %d changed their password; %d other sessions ended", session.counselor_id, ended
    )
    response = web.HTTPSeeOther("/console")
    _set_cookie(request, response, cookie)
    raise response


async def logout(request: web.Request) -> web.Response:
    session = await _require(request)
    await read_form(request, session)
    await request.app[sessions_key].delete(request.cookies[COOKIE_NAME])
    response = web.HTTPSeeOther("/console/login")
    response.del_cookie(COOKIE_NAME, path="/")
    raise response


def add_routes(app: web.Application) -> None:
    routes = (
        ("GET", "/console/login", login_page, Access.PUBLIC),
        ("POST", "/console/login", login, Access.PUBLIC),
        # The code step reads its own short-lived pending sign-in, never a session.
        ("GET", "/console/login/code", code_page, Access.PUBLIC),
        ("POST", "/console/login/code", submit_code, Access.PUBLIC),
        ("GET", "/console/two-factor", two_factor_page, Access.PASSWORD_CHANGE),
        ("POST", "/console/two-factor", enable_two_factor, Access.PASSWORD_CHANGE),
        ("GET", "/console/two-factor/qr.svg", two_factor_qr, Access.PASSWORD_CHANGE),
        ("POST", "/console/two-factor/disable", disable_two_factor, Access.COUNSELOR),
        ("GET", "/console/password", password_page, Access.PASSWORD_CHANGE),
        ("POST", "/console/password", change_password, Access.PASSWORD_CHANGE),
        ("POST", "/console/logout", logout, Access.PASSWORD_CHANGE),
    )
    for method, path, handler, access in routes:
        app.router.add_route(method, path, guard(access, handler))
