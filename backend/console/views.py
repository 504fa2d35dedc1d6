"""Console pages: the case view and the console's routes (sign-in: sign_in.py; app state:
app_keys.py). Every state change checks the session's CSRF token and the request's origin."""

from __future__ import annotations

import logging
from importlib import resources

from aiohttp import web

from backend.audit import AuditAction
from backend.cases import CaseStore
from backend.console import (
    access,
    accounts,
    alerts,
    archive,
    away,
    blocks,
    case_work,
    caseload,
    dashboard,
    erasure,
    evidence,
    i18n,
    language,
    live,
    openapi,
    queue,
    receipt_lookup,
    sign_in,
    studio,
    takedown_tracking,
)
from backend.console.access import (
    Access,
    current_session,
    default_language_key,
    guard,
    sessions_key,
)
from backend.console.answers import open_case_body, readable
from backend.console.app_keys import (
    DeadLetterCount,
    cases_key,
    counselors_key,
    dead_letters_key,
    keyring_key,
    login_guard_key,
    pending_key,
    require_totp_key,
    time_zone_key,
)
from backend.console.canned_responses import load, shipped
from backend.console.forms import read_form, render
from backend.console.i18n import gettext as _
from backend.console.published_bundle import ConsoleBundle, bundle_key
from backend.console.sessions import (
    ConsoleSession,
    ConsoleSessionStore,
)
from backend.core import waiting_line
from backend.core.errors import (
    CaseNotFoundError,
    CaseTransitionError,
    OutcomeRequiredError,
)
from backend.core.evidence_records import VIEWABLE_MIME
from backend.core.settings import SlaPolicy
from backend.counselors import CounselorStore
from backend.flows.resources import Directory
from backend.flows.triage import Triage
from backend.keyring import KeyRing
from backend.login_guard import LoginGuard
from backend.models import CaseStatus
from backend.receipts import ReceiptBook
from backend.web import redis_key

log = logging.getLogger(__name__)

# What the status form may set; claims, releases and transfers have their own routes
# (backend/console/queue.py), purging is retention's or the victim's.
_SETTABLE = {CaseStatus.ACTIVE, CaseStatus.CLOSED}


async def _require(request: web.Request) -> ConsoleSession:
    """The signed-in counselor; `guard` has checked the session and role before the handler."""
    return current_session(request)


async def case_view(request: web.Request) -> web.Response:
    session = await _require(request)
    case = await request.app[cases_key].get(request.match_info["case_id"])
    answers: dict[str, str] | None = None
    try:
        body = open_case_body(case, session.private_keys)
    except CaseNotFoundError:
        body = None
    if body is not None:
        found = body.get("answers", {})
        answers = found if isinstance(found, dict) else {}
    if answers is not None:
        await request.app[cases_key].record(
            f"counselor:{session.counselor_id}", AuditAction.UNSEAL, case.id
        )
    log.info("counselor %d opened case %s", session.counselor_id, case.id)
    work = await case_work.view_context(request, session, case, answers)
    return render(
        "case.html",
        session=session,
        case=case,
        answers=answers,
        readable_answers=readable(answers or {}),
        time_zone=request.app[time_zone_key],
        # Screenshots of these types are previewed, blurred behind a content warning.
        viewable_mime=VIEWABLE_MIME,
        **work,
    )


async def case_status(request: web.Request) -> web.Response:
    """Start or close a case; the store enforces the status machine, and a counselor may move
    only a case they hold (or a waiting one); a supervisor any."""
    session = await _require(request)
    form = await read_form(request, session)
    case_id = request.match_info["case_id"]
    try:
        target = CaseStatus(form.get("to", ""))
    except ValueError:
        raise web.HTTPBadRequest(text=_("unknown status")) from None
    if target not in _SETTABLE:
        raise web.HTTPBadRequest(text=_("this status cannot be set from the console"))
    try:
        await request.app[cases_key].transition(
            case_id,
            target,
            f"counselor:{session.counselor_id}",
            holder=access.holder_rule(session),
        )
    except OutcomeRequiredError:
        raise web.HTTPBadRequest(
            text=_("close a case with an outcome (the closing form)")
        ) from None
    except CaseTransitionError:
        raise web.HTTPConflict(
            text=_("the case's status changed meanwhile (or does not allow this); reload the page")
        ) from None
    if target is CaseStatus.CLOSED:
        await waiting_line.forget(request.app[redis_key], case_id)
    raise web.HTTPSeeOther(f"/console/cases/{case_id}")


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
    bundle: ConsoleBundle | None = None,
    flows_publish_approval: bool = False,
    time_zone: str = "Asia/Seoul",
    default_language: str = i18n.DEFAULT_LANGUAGE,
    triage: Triage | None = None,
    caseload_cap: int = caseload.DEFAULT_CAP,
) -> None:
    """`bundle`: the published flows' resources and canned responses, followed; without it,
    `services` and the shipped canned responses, fixed."""
    app[bundle_key] = bundle or ConsoleBundle(services or Directory(), load(shipped()))
    app[cases_key] = cases
    app[default_language_key] = default_language
    app[caseload.caseload_cap_key] = caseload_cap
    app[dead_letters_key] = dead_letters
    app[counselors_key] = counselors
    app[keyring_key] = keyring
    app[sessions_key] = sessions
    app[login_guard_key] = login_guard
    app[pending_key] = pending_sign_ins
    app[require_totp_key] = require_totp
    app[time_zone_key] = time_zone
    routes = (
        ("GET", "/console/cases/{case_id}", case_view, Access.COUNSELOR),
        ("POST", "/console/cases/{case_id}/status", case_status, Access.COUNSELOR),
        ("GET", "/console/static/console.css", stylesheet, Access.PUBLIC),
        ("GET", "/api/cases", api_cases, Access.COUNSELOR),
    )
    for method, path, handler, rule in routes:
        app.router.add_route(method, path, guard(rule, handler))
    sign_in.add_routes(app)
    language.add_routes(app)
    queue.add_routes(app, sla=sla)
    dashboard.add_routes(app, sla)
    archive.add_routes(app)
    takedown_tracking.add_routes(app)
    alerts.add_routes(app)
    away.add_routes(app)
    case_work.add_routes(app)
    evidence.add_routes(app)
    erasure.add_routes(app)
    live.add_routes(app, cases=cases, keyring=keyring, triage=triage)
    receipt_lookup.add_routes(app, receipts)
    accounts.add_routes(app)
    studio.add_routes(app, approval=flows_publish_approval)
    blocks.add_routes(app)
    openapi.add_routes(app)
