"""Console pages. Every state change checks the session's CSRF token and the request's origin."""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web
from redis.asyncio import Redis

from backend import streams, totp
from backend.audit import AuditAction
from backend.cases import CaseStore, envelope_of
from backend.console import case_work, evidence, live, openapi, queue, receipt_lookup
from backend.console.access import ROLE_RANK, Access, current_session, guard, sessions_key
from backend.console.forms import check_origin, read_form, render
from backend.console.sessions import (
    COOKIE_NAME,
    PENDING_COOKIE_NAME,
    ConsoleSession,
    ConsoleSessionStore,
)
from backend.counselors import CounselorStore
from backend.errors import (
    AuthenticationError,
    CaseNotFoundError,
    CaseTransitionError,
    KeyUnwrapError,
    OutcomeRequiredError,
    SealingError,
)
from backend.flows.resources import Directory
from backend.keyring import KeyRing, counselor_holder
from backend.login_guard import LoginGuard, LoginLockedError
from backend.models import CaseStatus, Role
from backend.passwords import MIN_PASSWORD_LENGTH
from backend.receipts import ReceiptBook
from backend.sealing import open_envelope
from backend.settings import SlaPolicy
from backend.web import redis_key

log = logging.getLogger(__name__)

cases_key = web.AppKey("console_cases", CaseStore)
counselors_key = web.AppKey("console_counselors", CounselorStore)
keyring_key = web.AppKey("console_keyring", KeyRing)
login_guard_key = web.AppKey("console_login_guard", LoginGuard)
pending_key = web.AppKey("console_pending_sign_ins", ConsoleSessionStore)
require_totp_key = web.AppKey("console_require_totp", bool)
DeadLetterCount = Callable[[], Awaitable[int]]
dead_letters_key: web.AppKey[DeadLetterCount] = web.AppKey("console_dead_letters")
# What the status form may set; claims, releases and transfers have their own routes
# (backend/console/queue.py), purging is retention's or the victim's.
_SETTABLE = {CaseStatus.ACTIVE, CaseStatus.CLOSED}


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
    guard = request.app[login_guard_key]
    try:
        await guard.check(username)
    except LoginLockedError:
        log.warning("console login refused: locked after repeated failures")
        return render("login.html", status=429, error="locked")
    try:
        counselor = await request.app[counselors_key].authenticate(username, password)
        if counselor.id is None:  # pragma: no cover - stored rows always have an id
            raise AuthenticationError("counselor without id")
        private_keys = await request.app[keyring_key].unwrap_for(counselor.id, password)
    except (AuthenticationError, KeyUnwrapError):
        log.info("console login failed")
        await guard.failed(username)
        return render("login.html", status=401, error="login_failed")
    try:
        secret = (
            None
            if counselor.totp_secret is None
            else totp.open_secret(counselor.totp_secret, counselor.id, password)
        )
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
        # The password was right; the failure count stays until the code is right too, so
        # wrong codes keep counting toward the lock.
        pending = await request.app[pending_key].create(session)
        log.info("console login for counselor %d waits for a TOTP code", counselor.id)
        response = web.HTTPSeeOther("/console/login/code")
        _set_cookie(request, response, pending, PENDING_COOKIE_NAME)
        raise response
    await guard.succeeded(username)
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
        await guard.check(pending.username)
    except LoginLockedError:
        await request.app[pending_key].delete(cookie)
        log.warning("console login refused at the code: locked after repeated failures")
        return render("login.html", status=429, error="locked")
    if pending.totp_secret is None:  # pragma: no cover - only two-factor sign-ins wait here
        raise web.HTTPBadRequest(text="no code is expected")
    step = totp.matching_step(pending.totp_secret, form.get("code", ""))
    if step is None or not await request.app[counselors_key].use_totp_step(
        pending.counselor_id, step
    ):
        log.info(
            "console login: wrong or replayed TOTP code for counselor %d", pending.counselor_id
        )
        await guard.failed(pending.username)
        return render("code.html", status=401, csrf=pending.csrf_token, error="wrong_code")
    await guard.succeeded(pending.username)
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
    guard = request.app[login_guard_key]
    try:
        await guard.check(session.username)
        await request.app[counselors_key].authenticate(session.username, password)
    except (LoginLockedError, AuthenticationError):
        await guard.failed(session.username)
        return False
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
        raise web.HTTPForbidden(text="An administrator requires two-factor sign-in.")
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
    session = await _require(request)
    form = await read_form(request, session)
    new, repeat = form.get("new_password", ""), form.get("repeat_password", "")
    error = None
    if len(new) < MIN_PASSWORD_LENGTH:
        error = "too_short"
    elif new != repeat:
        error = "mismatch"
    if error is not None:
        return render("password.html", status=400, session=session, error=error)
    wraps = request.app[keyring_key].wraps_for(session.private_keys, new)
    await request.app[counselors_key].change_password(
        session.counselor_id, new, wraps, session.totp_secret
    )
    session.must_change_password = False
    session.csrf_token = secrets.token_urlsafe(32)
    # A password change starts a new session id, as a login does.
    store = request.app[sessions_key]
    await store.delete(request.cookies[COOKIE_NAME])
    cookie = await store.create(session)
    log.info("counselor %d changed their password", session.counselor_id)
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


async def case_view(request: web.Request) -> web.Response:
    session = await _require(request)
    try:
        case = await request.app[cases_key].get(request.match_info["case_id"])
    except CaseNotFoundError:
        raise web.HTTPNotFound(text="no such case") from None
    private_key = session.private_keys.get(case.key_id)
    answers: dict[str, str] | None = None
    if private_key is not None:
        try:
            body = json.loads(open_envelope(envelope_of(case), private_key))
            answers = body.get("answers", {})
        except (SealingError, CaseNotFoundError, ValueError):
            answers = None
    if answers is not None:
        await request.app[cases_key].record(
            f"counselor:{session.counselor_id}", AuditAction.UNSEAL, case.id
        )
    log.info("counselor %d opened case %s", session.counselor_id, case.id)
    work = await case_work.view_context(request, session, case, answers)
    return render("case.html", session=session, case=case, answers=answers, **work)


async def case_status(request: web.Request) -> web.Response:
    """Start or close a case; the store enforces the status machine, and a counselor may move
    only a case they hold (or a waiting one); a supervisor any."""
    session = await _require(request)
    form = await read_form(request, session)
    case_id = request.match_info["case_id"]
    try:
        target = CaseStatus(form.get("to", ""))
    except ValueError:
        raise web.HTTPBadRequest(text="unknown status") from None
    if target not in _SETTABLE:
        raise web.HTTPBadRequest(text="this status cannot be set from the console")
    try:
        await request.app[cases_key].transition(
            case_id,
            target,
            f"counselor:{session.counselor_id}",
            holder=holder_rule(session),
        )
    except CaseNotFoundError:
        raise web.HTTPNotFound(text="no such case") from None
    except OutcomeRequiredError:
        raise web.HTTPBadRequest(text="close a case with an outcome (the closing form)") from None
    except CaseTransitionError:
        raise web.HTTPConflict(
            text="the case's status changed meanwhile (or does not allow this); reload the page"
        ) from None
    if target is CaseStatus.CLOSED:
        await forget_queue_place(request.app[redis_key], case_id)
    raise web.HTTPSeeOther(f"/console/cases/{case_id}")


def holder_rule(session: ConsoleSession) -> int | None:
    """Whose cases this session may move: its own (or waiting ones), or any for a supervisor."""
    if ROLE_RANK.get(session.role, 0) >= ROLE_RANK[Role.SUPERVISOR]:
        return None
    return session.counselor_id


async def forget_queue_place(redis: Redis, case_id: str) -> None:
    """A closed case no longer waits: out of the positions the bot tells victims, and no
    release of a later claim may put it back in an old place."""
    await redis.zrem(streams.HANDOFF_QUEUE, case_id)
    await redis.delete(streams.handoff_taken_key(case_id))


async def api_cases(request: web.Request) -> web.Response:
    """The open cases, most urgent first: routing facts only, nothing a victim said."""
    cases = await request.app[cases_key].list_open()
    return web.json_response(
        {
            "cases": [
                {
                    "id": c.id,
                    "status": c.status,
                    "priority": c.priority,
                    "category": c.category,
                    "language": c.language,
                    "channel": c.channel,
                    "received_at": c.received_at.isoformat(),
                    "victim_unreachable_at": (
                        c.victim_unreachable_at.isoformat() if c.victim_unreachable_at else None
                    ),
                }
                for c in cases
            ]
        }
    )


async def stylesheet(_request: web.Request) -> web.Response:
    body = (resources.files("backend.console") / "static" / "console.css").read_bytes()
    return web.Response(body=body, content_type="text/css", charset="utf-8")


def add_routes(
    app: web.Application,
    *,
    cases: CaseStore,
    counselors: CounselorStore,
    keyring: KeyRing,
    sessions: ConsoleSessionStore,
    login_guard: LoginGuard,
    dead_letters: DeadLetterCount,
    pending_sign_ins: ConsoleSessionStore,
    require_totp: bool,
    sla: SlaPolicy,
    receipts: ReceiptBook,
    services: Directory | None = None,
) -> None:
    app[cases_key] = cases
    app[dead_letters_key] = dead_letters
    app[counselors_key] = counselors
    app[keyring_key] = keyring
    app[sessions_key] = sessions
    app[login_guard_key] = login_guard
    app[pending_key] = pending_sign_ins
    app[require_totp_key] = require_totp
    routes = (
        ("GET", "/console/login", login_page, Access.PUBLIC),
        ("POST", "/console/login", login, Access.PUBLIC),
        # The code step reads its own short-lived pending sign-in, never a session.
        ("GET", "/console/login/code", code_page, Access.PUBLIC),
        ("POST", "/console/login/code", submit_code, Access.PUBLIC),
        ("GET", "/console/two-factor", two_factor_page, Access.PASSWORD_CHANGE),
        ("POST", "/console/two-factor", enable_two_factor, Access.PASSWORD_CHANGE),
        ("POST", "/console/two-factor/disable", disable_two_factor, Access.COUNSELOR),
        ("GET", "/console/password", password_page, Access.PASSWORD_CHANGE),
        ("POST", "/console/password", change_password, Access.PASSWORD_CHANGE),
        ("POST", "/console/logout", logout, Access.PASSWORD_CHANGE),
        ("GET", "/console/cases/{case_id}", case_view, Access.COUNSELOR),
        ("POST", "/console/cases/{case_id}/status", case_status, Access.COUNSELOR),
        ("GET", "/console/static/console.css", stylesheet, Access.PUBLIC),
        ("GET", "/api/cases", api_cases, Access.COUNSELOR),
    )
    for method, path, handler, access in routes:
        app.router.add_route(method, path, guard(access, handler))
    queue.add_routes(app, sla=sla)
    case_work.add_routes(app, services or Directory())
    evidence.add_routes(app)
    live.add_routes(app, cases=cases, keyring=keyring)
    receipt_lookup.add_routes(app, receipts)
    openapi.add_routes(app)
