"""The queue and who works on what: claims, releases, transfers, shifts, the supervisors' view.

The queue page polls `/api/queue` (plain JavaScript from our own origin, `static/queue.js`) and
ticks waiting times and SLA timers in the browser between polls. Every list shows routing facts
only (priority, category, language, channel, times), never anything a victim wrote.

A claim is one conditional UPDATE (`CaseStore.transition`): of two counselors clicking at once,
one wins and the other is told that another counselor took the case. A claimed handoff leaves
the Redis queue victims are told their place in; its score is kept while it is claimed, so a
release puts it back where it was (same priority, same arrival time).

Counselors work on their own cases: a counselor releases or transfers only a case they hold;
a supervisor (or an administrator) may move anyone's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from backend.audit import AuditAction
from backend.cases import CaseSummary
from backend.console import app_keys, away, caseload
from backend.console.access import ROLE_RANK, Access, current_session, guard
from backend.console.forms import check_json_post, json_error, read_form, render
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.core import redis_keys, waiting_line
from backend.core.errors import CaseNotFoundError, CaseTransitionError
from backend.core.settings import SlaPolicy
from backend.core.shifts import ShiftBoard
from backend.models import CaseStatus, Role
from backend.web import redis_key

log = logging.getLogger(__name__)

sla_key = web.AppKey("console_sla", SlaPolicy)
shifts_key = web.AppKey("console_shifts", ShiftBoard)
# How often the open queue page asks for the queue again.
QUEUE_POLL_S = 5
CLAIM_LOST = "another counselor took this case"
ALREADY_YOURS = "you already hold this case"


def _actor(session: ConsoleSession) -> str:
    return f"counselor:{session.counselor_id}"


def _supervises(session: ConsoleSession) -> bool:
    return ROLE_RANK.get(session.role, 0) >= ROLE_RANK[Role.SUPERVISOR.value]


def _holder(session: ConsoleSession) -> int | None:
    """The holder a change must match: the counselor themself, or anyone for a supervisor."""
    return None if _supervises(session) else session.counselor_id


def _aware(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time stored here is UTC.
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def sla_state(waiting_s: int, target_s: int, warning_s: int) -> str:
    """The SLA timer's state: "missed" past the target, "due" past the warning, else "ok"."""
    if waiting_s >= target_s:
        return "missed"
    if waiting_s >= warning_s:
        return "due"
    return "ok"


def _waiting(case: CaseSummary, now: datetime, sla: SlaPolicy) -> dict[str, Any]:
    waiting_s = max(0, int((now - _aware(case.received_at)).total_seconds()))
    target_s, warning_s = sla.target_s(case.priority), sla.warning_s(case.priority)
    return {
        "id": case.id,
        "priority": case.priority,
        "category": case.category,
        "language": case.language,
        "channel": case.channel,
        # The victim blocked the bot: a counselor's cue that replies will not reach them.
        "unreachable": case.victim_unreachable_at is not None,
        "received_at": _aware(case.received_at).isoformat(),
        "waiting_s": waiting_s,
        "sla_s": target_s,
        "warning_s": warning_s,
        "sla": sla_state(waiting_s, target_s, warning_s),
    }


def _held(case: CaseSummary, now: datetime) -> dict[str, Any]:
    since = _aware(case.status_changed_at or case.received_at)
    return {
        "id": case.id,
        "status": case.status,
        "priority": case.priority,
        "category": case.category,
        "claimed_by": case.claimed_by,
        "since": since.isoformat(),
        "held_s": max(0, int((now - since).total_seconds())),
    }


async def _queue(request: web.Request) -> list[dict[str, Any]]:
    now = datetime.now(UTC)
    sla = request.app[sla_key]
    return [_waiting(c, now, sla) for c in await request.app[app_keys.cases_key].list_waiting()]


# -- pages and JSON to read -------------------------------------------------------------------


async def queue_page(request: web.Request) -> web.Response:
    session = current_session(request)
    shifts = request.app[shifts_key]
    mine = await request.app[app_keys.cases_key].list_held(session.counselor_id)
    now = datetime.now(UTC)
    return render(
        "queue.html",
        session=session,
        waiting=await _queue(request),
        mine=[_held(c, now) for c in mine],
        on_shift=await shifts.is_on(session.counselor_id),
        on_shift_count=await shifts.count(),
        away=await away.is_away(request, session.counselor_id),
        supervises=_supervises(session),
        dead_letters=await request.app[app_keys.dead_letters_key](),
        poll_s=QUEUE_POLL_S,
        heartbeat_s=redis_keys.SHIFT_HEARTBEAT_S,
    )


async def api_queue(request: web.Request) -> web.Response:
    """The waiting cases, most urgent first, then longest waiting: routing facts and SLA state."""
    session = current_session(request)
    shifts = request.app[shifts_key]
    return web.json_response(
        {
            "now": datetime.now(UTC).isoformat(),
            "on_shift": await shifts.is_on(session.counselor_id),
            "counselors_on_shift": await shifts.count(),
            "cases": await _queue(request),
        }
    )


async def _load(request: web.Request) -> dict[str, Any]:
    now = datetime.now(UTC)
    roster = await request.app[app_keys.counselors_key].roster()
    on_shift = await request.app[shifts_key].on_shift()
    stepped_away = await away.away_ids(request)
    held: dict[int | None, list[dict[str, Any]]] = {}
    for case in await request.app[app_keys.cases_key].list_held():
        held.setdefault(case.claimed_by, []).append(_held(case, now))
    waiting = await _queue(request)
    by_priority: dict[str, dict[str, int]] = {}
    for item in waiting:
        entry = by_priority.setdefault(
            str(item["priority"]), {"waiting": 0, "longest_wait_s": 0, "sla_missed": 0}
        )
        entry["waiting"] += 1
        entry["longest_wait_s"] = max(entry["longest_wait_s"], item["waiting_s"])
        entry["sla_missed"] += item["sla"] == "missed"
    counselors = [
        {
            "id": c.id,
            "username": c.username,
            "role": c.role,
            "on_shift": c.id in on_shift,
            "away": c.id in on_shift and c.id in stepped_away,
            "claimed": sum(1 for x in held.get(c.id, []) if x["status"] == "claimed"),
            "active": sum(1 for x in held.get(c.id, []) if x["status"] == "active"),
            "cases": held.get(c.id, []),
        }
        for c in roster
    ]
    erase = await request.app[app_keys.cases_key].erase_requests()
    return {
        "now": now.isoformat(),
        "counselors": counselors,
        # Cases a victim asked to erase: a supervisor shreds each, or holds it with a reason.
        "erase_requests": [
            {
                "id": c.id,
                "status": c.status,
                "requested_at": c.erase_requested_at.isoformat() if c.erase_requested_at else "",
                "legal_hold": c.legal_hold_reason,
            }
            for c in erase
        ],
        "queue": {
            "waiting": len(waiting),
            "longest_wait_s": max((c["waiting_s"] for c in waiting), default=0),
            "by_priority": by_priority,
            "cases": waiting,
        },
    }


async def supervision_page(request: web.Request) -> web.Response:
    return render("supervision.html", session=current_session(request), **await _load(request))


async def api_supervision(request: web.Request) -> web.Response:
    """Every counselor's load (claimed and active cases, on shift or not) and the queue's waits."""
    return web.json_response(await _load(request))


async def queue_script(_request: web.Request) -> web.Response:
    body = (resources.files("backend.console") / "static" / "queue.js").read_bytes()
    return web.Response(body=body, content_type="text/javascript", charset="utf-8")


# -- changes ----------------------------------------------------------------------------------


async def _api_checked(request: web.Request) -> ConsoleSession:
    """A JSON state change: our origin, and the session's CSRF token in a header (script on
    another site can neither read the token nor set the header without our CORS consent)."""
    session = current_session(request)
    check_json_post(request, session)
    return session


async def _claim(request: web.Request, session: ConsoleSession, case_id: str) -> None:
    await caseload.check_room(request, session)
    await request.app[app_keys.cases_key].transition(
        case_id, CaseStatus.CLAIMED, _actor(session), counselor_id=session.counselor_id
    )
    await waiting_line.claim(request.app[redis_key], case_id)
    log.info("counselor %d claimed case %s", session.counselor_id, case_id)


async def _already_yours(request: web.Request, session: ConsoleSession, case_id: str) -> bool:
    """A refused claim of a case this counselor holds (a second click, another tab): say so,
    rather than that someone else took it (issue 18)."""
    try:
        case = await request.app[app_keys.cases_key].get(case_id)
    except CaseNotFoundError:
        return False
    held = {CaseStatus.CLAIMED.value, CaseStatus.ACTIVE.value}
    return case.claimed_by == session.counselor_id and case.status in held


async def _release(request: web.Request, session: ConsoleSession, case_id: str) -> None:
    await request.app[app_keys.cases_key].release(case_id, _actor(session), holder=_holder(session))
    await waiting_line.release(request.app[redis_key], case_id)
    log.info("counselor %d released case %s", session.counselor_id, case_id)


async def _transfer(request: web.Request, session: ConsoleSession, case_id: str, to: str) -> int:
    """Transfer to the counselor with id `to`; the id, or HTTP 400 for no such colleague."""
    roster = {c.id: c for c in await request.app[app_keys.counselors_key].roster()}
    try:
        target = roster[int(to)]
    except (KeyError, ValueError):
        raise web.HTTPBadRequest(text=_("choose a colleague from the list")) from None
    await away.check_available(request, target.id, target.username)
    await request.app[app_keys.cases_key].transfer(
        case_id, target.id, _actor(session), holder=_holder(session)
    )
    log.info("counselor %d transferred case %s to %d", session.counselor_id, case_id, target.id)
    return target.id


async def claim_form(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    case_id = request.match_info["case_id"]
    try:
        await _claim(request, session, case_id)
    except CaseTransitionError:
        yours = await _already_yours(request, session, case_id)
        return render("claim_lost.html", status=409, session=session, case_id=case_id, yours=yours)
    raise web.HTTPSeeOther(f"/console/cases/{case_id}")


async def release_form(request: web.Request) -> web.Response:
    session = current_session(request)
    await read_form(request, session)
    case_id = request.match_info["case_id"]
    try:
        await _release(request, session, case_id)
    except CaseTransitionError:
        raise web.HTTPConflict(
            text=_("Only a claimed case you hold can go back to the queue; reload the page.")
        ) from None
    raise web.HTTPSeeOther("/console")


async def transfer_page(request: web.Request) -> web.Response:
    session = current_session(request)
    case_id = request.match_info["case_id"]
    case = await request.app[app_keys.cases_key].get(case_id)
    roster = await request.app[app_keys.counselors_key].roster()
    on_shift = await request.app[shifts_key].on_shift()
    stepped_away = await away.away_ids(request)
    colleagues = [
        {
            "id": c.id,
            "username": c.username,
            "role": c.role,
            "on_shift": c.id in on_shift,
            "away": c.id in stepped_away,
        }
        for c in roster
        if c.id != case.claimed_by
    ]
    return render("transfer.html", session=session, case=case, colleagues=colleagues, error=None)


async def transfer_form(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    case_id = request.match_info["case_id"]
    try:
        await _transfer(request, session, case_id, form.get("to", ""))
    except CaseTransitionError:
        raise web.HTTPConflict(
            text=_("This case is not yours to transfer, or it changed hands; reload the page.")
        ) from None
    raise web.HTTPSeeOther("/console")


async def api_claim(request: web.Request) -> web.Response:
    """Claim a waiting case: 200 for the one counselor who gets it, 409 for everyone else."""
    session = await _api_checked(request)
    case_id = request.match_info["case_id"]
    try:
        await _claim(request, session, case_id)
    except CaseTransitionError:
        yours = await _already_yours(request, session, case_id)
        raise json_error(web.HTTPConflict, ALREADY_YOURS if yours else CLAIM_LOST) from None
    return web.json_response(
        {"id": case_id, "status": "claimed", "claimed_by": session.counselor_id}
    )


async def api_release(request: web.Request) -> web.Response:
    """Put a claimed case back in the queue, in its old place; 409 if it is not yours to release."""
    session = await _api_checked(request)
    case_id = request.match_info["case_id"]
    try:
        await _release(request, session, case_id)
    except CaseTransitionError:
        raise json_error(
            web.HTTPConflict, _("only a claimed case you hold can be released")
        ) from None
    return web.json_response({"id": case_id, "status": "queued"})


async def api_transfer(request: web.Request) -> web.Response:
    """Give a claimed or active case to a colleague or a supervisor: body {"to": counselor id}."""
    session = await _api_checked(request)
    case_id = request.match_info["case_id"]
    try:
        body = await request.json()
        to = str(body["to"]) if isinstance(body, dict) else ""
    except (ValueError, KeyError, RecursionError):
        to = ""
    try:
        target = await _transfer(request, session, case_id, to)
    except web.HTTPBadRequest:
        raise json_error(web.HTTPBadRequest, _("choose a colleague by their id")) from None
    except CaseTransitionError:
        raise json_error(
            web.HTTPConflict, _("this case is not yours to transfer, or it changed hands")
        ) from None
    return web.json_response({"id": case_id, "claimed_by": target})


async def _set_shift(request: web.Request, session: ConsoleSession, on: bool) -> bool:
    shifts, cases = request.app[shifts_key], request.app[app_keys.cases_key]
    subject = _actor(session)
    if on and await shifts.start(session.counselor_id):
        await cases.record(subject, AuditAction.SHIFT_START, subject)
        log.info("counselor %d went on shift", session.counselor_id)
    elif not on and await shifts.end(session.counselor_id):
        await cases.record(subject, AuditAction.SHIFT_END, subject)
        log.info("counselor %d went off shift", session.counselor_id)
    return on


async def shift_form(request: web.Request) -> web.Response:
    session = current_session(request)
    form = await read_form(request, session)
    await _set_shift(request, session, form.get("on") == "1")
    raise web.HTTPSeeOther("/console")


async def api_shift(request: web.Request) -> web.Response:
    """Go on shift (body {"on": true}) or off shift ({"on": false}); audited."""
    session = await _api_checked(request)
    try:
        body = await request.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("on"), bool):
        raise json_error(web.HTTPBadRequest, 'send {"on": true} or {"on": false}')
    return web.json_response({"on_shift": await _set_shift(request, session, body["on"])})


async def api_shift_heartbeat(request: web.Request) -> web.Response:
    """The console is open: keep this counselor's shift alive; says if it had lapsed."""
    session = await _api_checked(request)
    state = await request.app[shifts_key].refresh(session.counselor_id)
    if state == "lapsed":
        subject = _actor(session)
        await request.app[app_keys.cases_key].record(
            subject, AuditAction.SHIFT_END, subject, "lapsed: the console stopped refreshing"
        )
        log.info("counselor %d's shift had lapsed", session.counselor_id)
    return web.json_response({"on_shift": state == "on", "lapsed": state == "lapsed"})


def add_routes(app: web.Application, *, sla: SlaPolicy) -> None:
    app[sla_key] = sla
    app[shifts_key] = ShiftBoard(app[redis_key])
    routes: Sequence[tuple[str, str, Any, Access]] = (
        ("GET", "/console", queue_page, Access.COUNSELOR),
        ("GET", "/console/static/queue.js", queue_script, Access.PUBLIC),
        ("POST", "/console/cases/{case_id}/claim", claim_form, Access.COUNSELOR),
        ("POST", "/console/cases/{case_id}/release", release_form, Access.COUNSELOR),
        ("GET", "/console/cases/{case_id}/transfer", transfer_page, Access.COUNSELOR),
        ("POST", "/console/cases/{case_id}/transfer", transfer_form, Access.COUNSELOR),
        ("POST", "/console/shift", shift_form, Access.COUNSELOR),
        ("GET", "/console/supervision", supervision_page, Access.SUPERVISOR),
        ("GET", "/api/queue", api_queue, Access.COUNSELOR),
        ("POST", "/api/cases/{case_id}/claim", api_claim, Access.COUNSELOR),
        ("POST", "/api/cases/{case_id}/release", api_release, Access.COUNSELOR),
        ("POST", "/api/cases/{case_id}/transfer", api_transfer, Access.COUNSELOR),
        ("POST", "/api/shift", api_shift, Access.COUNSELOR),
        ("POST", "/api/shift/heartbeat", api_shift_heartbeat, Access.COUNSELOR),
        ("GET", "/api/supervision", api_supervision, Access.SUPERVISOR),
    )
    for method, path, handler, access in routes:
        app.router.add_route(method, path, guard(access, handler))
