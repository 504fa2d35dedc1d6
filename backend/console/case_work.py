"""The case view's work: notes, referrals, replies for a returning victim, closing with an
outcome, and takedown requests, as pages and as a JSON API.

Every action is served twice: a form post under `/console` (CSRF token in the form, then a
redirect) and a JSON post under `/api` (CSRF token in the `X-CSRF-Token` header, JSON answer).
Both check the request's origin. What the case page shows of this comes from `view_context`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from backend.audit import AuditAction
from backend.case_work import CONSENT_METHODS, CaseKey, CaseWork, case_key
from backend.console import app_keys, forms
from backend.console.access import Access, current_session, guard, holder_rule
from backend.console.answers import open_case_body
from backend.console.forms import is_api, json_error, read_form, read_json, refusal
from backend.console.i18n import N_
from backend.console.i18n import gettext as _
from backend.console.published_bundle import bundle_key
from backend.console.sessions import ConsoleSession
from backend.core import replies, waiting_line
from backend.core.errors import (
    CaseNotFoundError,
    CaseTransitionError,
    CaseWorkError,
    OutcomeRequiredError,
    SealingError,
)
from backend.core.evidence_records import records_of
from backend.core.live_chat import EventKind, LiveChat, OutboxKind, Sender
from backend.models import Case, CaseStatus, Outcome, TakedownRequest, TakedownStatus
from backend.takedown import (
    ANSWERS,
    CONTENT_TYPES,
    FIELDS,
    LANGUAGES,
    REQUESTER_ROLES,
    Draft,
    TakedownStore,
    draft_fields,
    missing,
    render,
)
from backend.web import engine_key, redis_key

log = logging.getLogger(__name__)

work_key = web.AppKey("console_case_work", CaseWork)
takedowns_key = web.AppKey("console_takedowns", TakedownStore)


@dataclass(frozen=True)
class FollowUp:
    id: str
    received_at: datetime
    status: str
    answers: dict[str, Any] | None


async def _input(request: web.Request, session: ConsoleSession) -> dict[str, str]:
    """The action's fields, after the CSRF and origin checks of its kind (form or JSON)."""
    if not is_api(request):
        return await read_form(request, session)
    body = await read_json(request, session)
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in body.items()}


def _done(request: web.Request, location: str, **answer: Any) -> web.StreamResponse:
    if is_api(request):
        return web.json_response({"ok": True, **answer})
    raise web.HTTPSeeOther(location)


async def _case(request: web.Request, case_id: str | None = None) -> Case:
    return await request.app[app_keys.cases_key].get(case_id or request.match_info["case_id"])


def _key(request: web.Request, session: ConsoleSession, case: Case) -> CaseKey:
    try:
        return case_key(case, session.private_keys)
    except (SealingError, CaseNotFoundError):
        raise refusal(
            request, web.HTTPForbidden, _("this case cannot be opened with your keys")
        ) from None


def _date(text: str) -> datetime | None:
    """A re-check date from a form ("2026-05-01" or a full ISO time); None for none."""
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CaseWorkError(N_("next_check_at must be a date like 2026-05-01")) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def open_body(case: Case, session: ConsoleSession) -> dict[str, Any] | None:
    """The case's report body opened in memory: answers (with a request for a counselor that
    joined the case), evidence records, sealed files."""
    try:
        return open_case_body(case, session.private_keys)
    except CaseNotFoundError:
        return None


def _open_answers(case: Case, session: ConsoleSession) -> dict[str, Any] | None:
    body = open_body(case, session)
    found = body.get("answers") if body is not None else None
    return found if isinstance(found, dict) else None


async def view_context(
    request: web.Request, session: ConsoleSession, case: Case, answers: dict[str, Any] | None
) -> dict[str, Any]:
    """What `_case_work.html` shows on the case page: opened in memory, for this request only."""
    return {"work": await _work(request, session, case, answers)}


async def _work(
    request: web.Request, session: ConsoleSession, case: Case, answers: dict[str, Any] | None
) -> dict[str, Any] | None:
    try:
        key = case_key(case, session.private_keys)
    except (SealingError, CaseNotFoundError):
        return None
    app = request.app
    work, cases = app[work_key], app[app_keys.cases_key]
    actor = f"counselor:{session.counselor_id}"
    follow_ups = []
    for later in await work.follow_ups(case.id):
        opened = _open_answers(later, session)
        if opened is not None:
            await cases.record(actor, AuditAction.UNSEAL, later.id)
        follow_ups.append(FollowUp(later.id, later.received_at, later.status, opened))
    # Replies belong to the case the victim's receipt names: a follow-up's go to the original.
    reply_case = case
    if case.follows:
        try:
            reply_case = await cases.get(case.follows)
        except CaseNotFoundError:
            reply_case = case
    reply_key = key if reply_case.id == case.id else _try_key(reply_case, session)
    can_reply = await replies.reply_key(app[redis_key], reply_case.id) is not None
    takedowns = app[takedowns_key]
    return {
        "evidence": [r.as_dict() for r in records_of(open_body(case, session) or {})],
        "notes": await work.notes(key),
        "referrals": await work.referrals(key),
        "replies": [] if reply_key is None else await work.replies(reply_key),
        "reply_case": reply_case.id,
        "can_reply": can_reply,
        "history": await work.history(case.id),
        "follows": case.follows,
        "follow_ups": follow_ups,
        "takedowns": await takedowns.for_case(case.id),
        "services": [(r.id, r.name.get("en") or r.id) for r in app[bundle_key].services.resources],
        "consent_methods": CONSENT_METHODS,
        "outcomes": [o.value for o in Outcome],
        "languages": LANGUAGES,
    }


def _try_key(case: Case, session: ConsoleSession) -> CaseKey | None:
    try:
        return case_key(case, session.private_keys)
    except (SealingError, CaseNotFoundError):
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, TakedownRequest):
        return _takedown_summary(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "__dataclass_fields__"):
        return _plain(asdict(value))
    return value


def _takedown_summary(row: TakedownRequest) -> dict[str, Any]:
    return {
        "id": row.id,
        "language": row.language,
        "status": row.status,
        "created_by": row.created_by,
        "approved_by": row.approved_by,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
        "next_check_at": row.next_check_at.isoformat() if row.next_check_at else None,
    }


async def api_case_work(request: web.Request) -> web.Response:
    """The case opened: report answers, evidence, notes, referrals, replies, history, takedowns."""
    session = current_session(request)
    case = await _case(request)
    answers = _open_answers(case, session)
    if answers is None:
        raise json_error(web.HTTPForbidden, _("this case cannot be opened with your keys"))
    await request.app[app_keys.cases_key].record(
        f"counselor:{session.counselor_id}", AuditAction.UNSEAL, case.id
    )
    work = await _work(request, session, case, answers)
    return web.json_response(
        {
            "id": case.id,
            "status": case.status,
            "outcome": case.outcome,
            "category": case.category,
            "priority": case.priority,
            "language": case.language,
            "channel": case.channel,
            "answers": answers,
            "csrf_token": session.csrf_token,
            **_plain(work or {}),
        }
    )


async def add_note(request: web.Request) -> web.StreamResponse:
    """Add a counselor's note to a case, sealed under the case's key."""
    session = current_session(request)
    data = await _input(request, session)
    case = await _case(request)
    note_id = await request.app[work_key].add_note(
        _key(request, session, case), session.counselor_id, data.get("text", "")
    )
    return _done(request, f"/console/cases/{case.id}#notes", id=note_id)


async def add_referral(request: web.Request) -> web.StreamResponse:
    """Record a referral to a service and the victim's consent to it."""
    session = current_session(request)
    data = await _input(request, session)
    case = await _case(request)
    consent = data.get("consent", "")
    if consent not in ("yes", "no", "true", "false"):
        raise refusal(request, web.HTTPBadRequest, _("consent must be yes or no"))
    services = frozenset(r.id for r in request.app[bundle_key].services.resources)
    referral_id = await request.app[work_key].add_referral(
        _key(request, session, case),
        session.counselor_id,
        service_id=data.get("service", ""),
        services=services,
        consent=consent in ("yes", "true"),
        consent_method=data.get("consent_method", ""),
        detail=data.get("detail", ""),
    )
    return _done(request, f"/console/cases/{case.id}#referrals", id=referral_id)


async def add_reply(request: web.Request) -> web.StreamResponse:
    """Write a reply the victim reads when they come back with their receipt."""
    session = current_session(request)
    data = await _input(request, session)
    case = await _case(request)
    # A follow-up's reply goes to the case the receipt names: that is where the bot looks.
    target = await _case(request, case.follows) if case.follows else case
    redis: Redis = request.app[redis_key]
    victim_key = await replies.reply_key(redis, target.id)
    if victim_key is None:
        raise refusal(
            request,
            web.HTTPConflict,
            _("this victim has no receipt code: a reply could not reach them"),
        )
    sealed = await request.app[work_key].add_reply(
        _key(request, session, target), session.counselor_id, data.get("text", ""), victim_key
    )
    await replies.deliver(redis, target.id, sealed)
    log.info("counselor %d replied on case %s", session.counselor_id, target.id)
    return _done(request, f"/console/cases/{case.id}#replies", case=target.id)


async def close_case(request: web.Request) -> web.StreamResponse:
    """Close a case with one of the fixed outcomes (required)."""
    session = current_session(request)
    data = await _input(request, session)
    case_id = request.match_info["case_id"]
    try:
        outcome = Outcome(data.get("outcome", ""))
        await request.app[app_keys.cases_key].transition(
            case_id,
            CaseStatus.CLOSED,
            f"counselor:{session.counselor_id}",
            counselor_id=session.counselor_id,
            holder=holder_rule(session),
            outcome=outcome,
        )
    except (ValueError, OutcomeRequiredError):
        raise refusal(
            request,
            web.HTTPBadRequest,
            _("choose an outcome: %(outcomes)s")
            % {"outcomes": ", ".join(o.value for o in Outcome)},
        ) from None
    except CaseTransitionError:
        raise refusal(
            request, web.HTTPConflict, _("the case cannot be closed now; reload")
        ) from None
    redis = request.app[redis_key]
    await waiting_line.forget(redis, case_id)
    # A chat still on ends with the case: the victim is told, and stops writing into a void.
    chat = LiveChat(redis)
    presence = await chat.presence(case_id)
    if presence is not None and presence.kind is EventKind.JOINED:
        await chat.notify_victim(case_id, OutboxKind.ENDED, Sender.COUNSELOR)
    return _done(request, f"/console/cases/{case_id}", outcome=outcome.value)


async def create_takedown(request: web.Request) -> web.StreamResponse:
    """Draft a takedown request from the case's facts, in one of the four languages."""
    session = current_session(request)
    data = await _input(request, session)
    case = await _case(request)
    key = _key(request, session, case)
    body = open_body(case, session) or {}
    answers = body.get("answers") if isinstance(body.get("answers"), dict) else {}
    request_id = await request.app[takedowns_key].create(
        key,
        session.counselor_id,
        data.get("language", ""),
        draft_fields(answers or {}, records_of(body)),
    )
    return _done(request, f"/console/takedowns/{request_id}", id=request_id)


async def _takedown(request: web.Request) -> tuple[ConsoleSession, Case, CaseKey, Draft]:
    session = current_session(request)
    try:
        row = await request.app[takedowns_key].get(request.match_info["takedown_id"])
    except CaseWorkError:
        raise refusal(request, web.HTTPNotFound, _("no such takedown request")) from None
    case = await _case(request, row.case_id)
    key = _key(request, session, case)
    return session, case, key, TakedownStore.open(key, row)


async def _reviewer(request: web.Request, row: TakedownRequest) -> str:
    if row.approved_by is None:
        return ""
    counselor = await request.app[app_keys.counselors_key].get(row.approved_by)
    return counselor.username if counselor is not None else f"#{row.approved_by}"


async def _audit_takedown_unseal(
    request: web.Request, session: ConsoleSession, draft: Draft
) -> None:
    """Showing a takedown request opens its sealed fields: an unseal like the case page's."""
    await request.app[app_keys.cases_key].record(
        f"counselor:{session.counselor_id}",
        AuditAction.UNSEAL,
        draft.row.case_id,
        f"takedown:{draft.row.id}",
    )


async def takedown_page(request: web.Request) -> web.Response:
    session, case, _, draft = await _takedown(request)
    await _audit_takedown_unseal(request, session, draft)
    return forms.render(
        "takedown.html",
        session=session,
        case=case,
        draft=draft,
        text=render(draft, await _reviewer(request, draft.row)),
        fields=FIELDS,
        missing=missing(draft.fields),
        roles=REQUESTER_ROLES,
        content_types=CONTENT_TYPES,
        answers=[a.value for a in ANSWERS],
        today=datetime.now(UTC).date().isoformat(),
        error=None,
    )


async def api_takedown(request: web.Request) -> web.Response:
    """A takedown request: its fields, its tracking and its text as it would be sent."""
    session, _, _, draft = await _takedown(request)
    await _audit_takedown_unseal(request, session, draft)
    return web.json_response(
        {
            **_takedown_summary(draft.row),
            "case_id": draft.row.case_id,
            "fields": draft.fields,
            "missing": missing(draft.fields),
            "answer": draft.answer,
            "text": render(draft, await _reviewer(request, draft.row)),
        }
    )


TakedownStep = Callable[
    [web.Request, ConsoleSession, CaseKey, Draft, dict[str, str]], Awaitable[None]
]


def _takedown_action(
    step: TakedownStep, doc: str
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        session = current_session(request)
        data = await _input(request, session)
        _, _, key, draft = await _takedown(request)
        await step(request, session, key, draft, data)
        row = await request.app[takedowns_key].get(draft.row.id)
        return _done(request, f"/console/takedowns/{row.id}", status=row.status)

    handler.__doc__ = doc
    handler.__name__ = step.__name__
    return handler


async def _edit(
    request: web.Request, session: ConsoleSession, key: CaseKey, draft: Draft, data: dict[str, str]
) -> None:
    fields = {name: data.get(name, draft.fields.get(name, "")) for name in FIELDS}
    await request.app[takedowns_key].edit(key, draft.row, session.counselor_id, fields)


async def _submit(
    request: web.Request, session: ConsoleSession, _key: CaseKey, draft: Draft, _d: dict[str, str]
) -> None:
    await request.app[takedowns_key].submit(draft, session.counselor_id)


async def _approve(
    request: web.Request, session: ConsoleSession, _key: CaseKey, draft: Draft, _d: dict[str, str]
) -> None:
    await request.app[takedowns_key].approve(draft.row, session.counselor_id, session.role)
    log.info("counselor %d approved takedown %s", session.counselor_id, draft.row.id)


async def _send_back(
    request: web.Request, session: ConsoleSession, _key: CaseKey, draft: Draft, _d: dict[str, str]
) -> None:
    await request.app[takedowns_key].send_back(draft.row, session.counselor_id)


async def _sent(
    request: web.Request, session: ConsoleSession, _key: CaseKey, draft: Draft, data: dict[str, str]
) -> None:
    await request.app[takedowns_key].mark_sent(
        draft.row, session.counselor_id, _date(data.get("next_check_at", ""))
    )
    log.info("counselor %d marked takedown %s sent", session.counselor_id, draft.row.id)


async def _answer(
    request: web.Request, session: ConsoleSession, key: CaseKey, draft: Draft, data: dict[str, str]
) -> None:
    try:
        to = TakedownStatus(data.get("status", ""))
    except ValueError:
        raise CaseWorkError(N_("status must be answered, removed or refused")) from None
    await request.app[takedowns_key].record_answer(
        key,
        draft.row,
        session.counselor_id,
        to=to,
        answer=data.get("answer", ""),
        next_check_at=_date(data.get("next_check_at", "")),
    )


async def _withdraw(
    request: web.Request, session: ConsoleSession, _key: CaseKey, draft: Draft, _d: dict[str, str]
) -> None:
    await request.app[takedowns_key].withdraw(draft.row, session.counselor_id)


def add_routes(app: web.Application) -> None:
    """The resource directory comes from `published_bundle.bundle_key`, set before."""
    app[work_key] = CaseWork(app[engine_key])
    app[takedowns_key] = TakedownStore(app[engine_key])
    edit = _takedown_action(_edit, "Change a takedown request's fields; any approval is undone.")
    submit = _takedown_action(_submit, "Ask a supervisor to approve a takedown request.")
    approve = _takedown_action(
        _approve, "Approve a takedown request (a supervisor, not its author)."
    )
    send_back = _takedown_action(_send_back, "Send a takedown request back to its author.")
    sent = _takedown_action(_sent, "Mark an approved takedown request as sent by a person.")
    answer = _takedown_action(_answer, "Record the platform's answer and the next re-check.")
    withdraw = _takedown_action(_withdraw, "Withdraw a takedown request not yet sent.")
    twins: tuple[
        tuple[str, Callable[[web.Request], Awaitable[web.StreamResponse]], Access], ...
    ] = (
        ("/cases/{case_id}/notes", add_note, Access.COUNSELOR),
        ("/cases/{case_id}/referrals", add_referral, Access.COUNSELOR),
        ("/cases/{case_id}/replies", add_reply, Access.COUNSELOR),
        ("/cases/{case_id}/close", close_case, Access.COUNSELOR),
        ("/cases/{case_id}/takedowns", create_takedown, Access.COUNSELOR),
        ("/takedowns/{takedown_id}/edit", edit, Access.COUNSELOR),
        ("/takedowns/{takedown_id}/submit", submit, Access.COUNSELOR),
        ("/takedowns/{takedown_id}/approve", approve, Access.SUPERVISOR),
        ("/takedowns/{takedown_id}/return", send_back, Access.SUPERVISOR),
        ("/takedowns/{takedown_id}/sent", sent, Access.COUNSELOR),
        ("/takedowns/{takedown_id}/answer", answer, Access.COUNSELOR),
        ("/takedowns/{takedown_id}/withdraw", withdraw, Access.COUNSELOR),
    )
    for path, handler, access in twins:
        app.router.add_post("/console" + path, guard(access, handler))
        app.router.add_post("/api" + path, guard(access, handler))
    app.router.add_get("/console/takedowns/{takedown_id}", guard(Access.COUNSELOR, takedown_page))
    app.router.add_get("/api/takedowns/{takedown_id}", guard(Access.COUNSELOR, api_takedown))
    app.router.add_get("/api/cases/{case_id}/work", guard(Access.COUNSELOR, api_case_work))
