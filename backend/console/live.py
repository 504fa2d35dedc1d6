"""The console side of the live chat: a WebSocket per open case page, and JSON actions.

- `GET /console/cases/{case_id}/live` (WebSocket): the case's transcript, history first, then
  new entries from this process's `TranscriptHub`, each line opened with the counselor's own
  keys. `?after=<entry id>` resumes after the last entry the page has, so a page that lost its
  connection neither misses nor repeats an entry. The upgrade must come from our own origin: a
  browser sends the session cookie on a WebSocket opened by any site's page (cross-site
  WebSocket hijacking), and only the Origin header tells them apart. The counselor must hold the
  case; supervisors and administrators may watch any.
- `POST /api/cases/{case_id}/chat/start|end|lines` (JSON, the session's CSRF token in
  `X-CSRF-Token`): start the chat (the case becomes active and the victim is told a counselor
  joined), end it, send a line.
- `GET /api/canned-responses?language=`: the canned responses, the victim's language first.

The socket sends one JSON object per message:
  {"type": "line", "id": <entry id>, "line_id", "sender": "victim"|"counselor", "text", "at"}
  {"type": "event", "id", "kind": "joined"|"delivered"|"held"|"failed"|"ended"|"triage",
   "by", "ref", "at"}
  {"type": "unreadable", "id"}  (a line this counselor's keys cannot open)
  {"type": "caught_up"}  (the history is sent; what follows is live)
Close codes: 4403 signed out or the case is no longer theirs (do not reconnect); 4409 the page
fell behind (reconnect); 1001 the server is stopping (reconnect).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import weakref
from collections.abc import AsyncIterator, Mapping, Sequence
from importlib import resources
from typing import cast

from aiohttp import WSCloseCode, web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.exceptions import RedisError

from backend import transcript_archive
from backend.audit import AuditAction
from backend.cases import CaseStore
from backend.console.access import (
    ROLE_RANK,
    Access,
    Handler,
    current_session,
    guard,
    sessions_key,
)
from backend.console.answers import open_case_body
from backend.console.canned_responses import CannedResponse, in_order_for, load, shipped
from backend.console.forms import check_json_post, check_upgrade_origin, read_json, refusal
from backend.console.hub import Subscription, TranscriptHub, stream_id
from backend.console.i18n import gettext as _
from backend.console.published_bundle import ConsoleBundle, bundle_key
from backend.console.sessions import COOKIE_NAME, ConsoleSession
from backend.core import redis_keys
from backend.core.errors import CaseNotFoundError, CaseTransitionError, SealingError
from backend.core.live_chat import (
    EventKind,
    LiveChat,
    OutboxKind,
    Sender,
    new_line,
    reply_key_of,
    transcript_entry,
)
from backend.flows.resources import Directory
from backend.flows.triage import Triage
from backend.keyring import KeyRing
from backend.models import Case, CaseStatus, Role
from backend.web import engine_key, redis_key

log = logging.getLogger(__name__)

hub_key = web.AppKey("console_transcript_hub", TranscriptHub)
_cases_key = web.AppKey("console_live_cases", CaseStore)
_keyring_key = web.AppKey("console_live_keyring", KeyRing)
_chat_key = web.AppKey("console_live_chat", LiveChat)
# The flows' risk triage, read again on each victim line of a live chat: the counselor's page
# raises an alert on a self-harm flag (static/alerts.js). Only the flag names travel.
_triage_key = web.AppKey("console_live_triage", Triage)
_sockets_key: web.AppKey[weakref.WeakSet[web.WebSocketResponse]] = web.AppKey(
    "console_live_sockets"
)

HEARTBEAT_S = 30.0
# How often an open socket checks that its session still exists and the case is still theirs.
RECHECK_S = 30.0
CLOSE_NOT_ALLOWED = 4403
CLOSE_FELL_BEHIND = 4409
_ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


def _may_hold(session: ConsoleSession, case: Case) -> bool:
    if ROLE_RANK.get(session.role, 0) >= ROLE_RANK[Role.SUPERVISOR.value]:
        return True
    return case.claimed_by is not None and case.claimed_by == session.counselor_id


async def _held_case(request: web.Request, session: ConsoleSession) -> Case:
    case = await request.app[_cases_key].get(request.match_info["case_id"])
    if not _may_hold(session, case):
        raise refusal(request, web.HTTPForbidden, _("this case is not yours: claim it first"))
    return case


def _answers(case: Case, private_keys: Mapping[str, X25519PrivateKey]) -> Mapping[str, object]:
    """The opened answers, with those of a request for a counselor that joined the case (which
    carry the reply key when the case began as a report: issue 18)."""
    try:
        body = open_case_body(case, private_keys)
    except CaseNotFoundError:
        return {}
    answers = body.get("answers") if body is not None else None
    return answers if isinstance(answers, dict) else {}


def _message(
    case_id: str,
    entry_id: str,
    fields: dict[bytes, bytes],
    private_keys: Mapping[str, X25519PrivateKey],
    triage: Triage,
) -> str:
    try:
        entry = transcript_entry(case_id, entry_id, fields, private_keys)
    except SealingError:
        log.warning("case %s: transcript entry %s does not open", case_id, entry_id)
        return json.dumps({"type": "unreadable", "id": entry_id})
    if entry.line is not None:
        line = entry.line
        data: dict[str, object] = {
            "type": "line",
            "id": entry_id,
            "line_id": line.id,
            "sender": line.sender.value,
            "text": line.text,
            "at": line.at,
        }
        if line.sender is Sender.VICTIM:
            data["flags"] = sorted({rule.flag for rule in triage.scan(line.text)})
    else:
        assert entry.event is not None  # noqa: S101 - a transcript entry is a line or an event
        event = entry.event
        data = {
            "type": "event",
            "id": entry_id,
            "kind": event.kind.value,
            "by": event.by.value,
            "ref": event.ref,
            "at": event.at,
        }
    return json.dumps(data, ensure_ascii=False)


async def _still_allowed(request: web.Request, case_id: str) -> bool:
    session = await request.app[sessions_key].load(request.cookies.get(COOKIE_NAME), touch=False)
    if session is None:
        return False
    try:
        case = await request.app[_cases_key].get(case_id)
    except CaseNotFoundError:
        return False
    return _may_hold(session, case)


async def _recheck(request: web.Request, ws: web.WebSocketResponse, case_id: str) -> None:
    # Beside the stream, not in it: a timer per delivered entry would cost every line latency.
    while not ws.closed:
        await asyncio.sleep(RECHECK_S)
        if not await _still_allowed(request, case_id):
            await ws.close(code=CLOSE_NOT_ALLOWED, message=b"signed out or case moved")
            return


async def _read_until_closed(ws: web.WebSocketResponse, subscription: Subscription) -> None:
    # The page sends nothing; reading is what answers pings and notices the page going away.
    try:
        async for _message_from_page in ws:
            pass
    finally:
        subscription.end()


async def live_socket(request: web.Request) -> web.StreamResponse:
    """The case's transcript over a WebSocket: history after `?after=`, then live entries."""
    session = current_session(request)
    check_upgrade_origin(request)
    after = request.query.get("after", "0-0")
    if not _ENTRY_ID.fullmatch(after):
        raise web.HTTPBadRequest(text=_("after: not a transcript entry id"))
    case = await _held_case(request, session)
    ws = web.WebSocketResponse(heartbeat=HEARTBEAT_S)
    if not ws.can_prepare(request).ok:
        raise web.HTTPBadRequest(text=_("a WebSocket upgrade is expected here"))
    await ws.prepare(request)
    request.app[_sockets_key].add(ws)
    hub = request.app[hub_key]
    subscription = await hub.subscribe(case.id)
    reader = asyncio.create_task(_read_until_closed(ws, subscription))
    watchdog = asyncio.create_task(_recheck(request, ws, case.id))
    try:
        await _stream(
            request, ws, case_id=case.id, after=after, subscription=subscription, session=session
        )
    except (RedisError, OSError) as exc:
        # ConnectionResetError (the page went away mid-send) lands here too; the page, if it is
        # still there, reconnects after the last entry it got.
        log.info("live chat socket of case %s ended: %s", case.id, type(exc).__name__)
        await ws.close(code=WSCloseCode.TRY_AGAIN_LATER)
    finally:
        hub.unsubscribe(subscription)
        reader.cancel()
        watchdog.cancel()
        await ws.close()
    return ws


async def _stream(
    request: web.Request,
    ws: web.WebSocketResponse,
    *,
    case_id: str,
    after: str,
    subscription: Subscription,
    session: ConsoleSession,
) -> None:
    # Subscribed before the history is read: see `TranscriptHub` for why nothing falls between.
    if after == "0-0":
        await request.app[_cases_key].record(
            f"counselor:{session.counselor_id}", AuditAction.UNSEAL, case_id, "live chat"
        )
    low = "-" if after == "0-0" else f"({after}"
    buffered = cast(
        list[tuple[bytes, dict[bytes, bytes]]],
        await request.app[redis_key].xrange(redis_keys.case_transcript_stream(case_id), min=low),
    )
    # The history is in SQL (the Redis buffer is trimmed and expires); the newest entries may
    # not be archived yet, so both, by stream id, each once.
    history = dict(await transcript_archive.archived(request.app[engine_key], case_id, after))
    history.update((raw_id.decode(), fields) for raw_id, fields in buffered)
    sent = after
    triage = request.app[_triage_key]
    for entry_id in sorted(history, key=stream_id):
        await ws.send_str(
            _message(case_id, entry_id, history[entry_id], session.private_keys, triage)
        )
        sent = entry_id
    await ws.send_str(json.dumps({"type": "caught_up"}))
    log.info("counselor %d watches the live chat of case %s", session.counselor_id, case_id)
    while (item := await subscription.queue.get()) is not None:
        entry_id, fields = item
        if stream_id(entry_id) <= stream_id(sent):
            continue
        await ws.send_str(_message(case_id, entry_id, fields, session.private_keys, triage))
        sent = entry_id
    if not ws.closed:
        await ws.close(
            code=CLOSE_FELL_BEHIND if subscription.overflowed else WSCloseCode.GOING_AWAY
        )


async def send_line(request: web.Request) -> web.Response:
    """Send a line to the victim of a live chat: body {"text": ...}; its transcript entry id."""
    session = current_session(request)
    body = await read_json(request, session)
    text = body.get("text")
    if not isinstance(text, str):
        raise refusal(request, web.HTTPBadRequest, _("text: a string is expected"))
    try:
        line = new_line(Sender.COUNSELOR, text)
    except ValueError as exc:
        raise refusal(
            request, web.HTTPBadRequest, _("text: %(reason)s") % {"reason": exc}
        ) from None
    case = await _held_case(request, session)
    reply_key = reply_key_of(_answers(case, session.private_keys))
    if reply_key is None:
        raise refusal(
            request,
            web.HTTPConflict,
            _("this case carries no reply key: the victim's app cannot receive messages"),
        )
    chat = request.app[_chat_key]
    presence = await chat.presence(case.id)
    if case.status != CaseStatus.ACTIVE.value or presence is None:
        raise refusal(request, web.HTTPConflict, _("start the chat first"))
    if presence.kind is not EventKind.JOINED:
        who = _("the victim left") if presence.by is Sender.VICTIM else _("you ended it")
        raise refusal(request, web.HTTPConflict, _("the chat is over (%(who)s)") % {"who": who})
    centre = await request.app[_keyring_key].active()
    if centre is None:  # pragma: no cover - the node does not start without a centre key
        raise refusal(request, web.HTTPServiceUnavailable, _("no centre key"))
    entry_id = await chat.from_counselor(case.id, line, centre.public_key, reply_key)
    log.info("counselor %d sent a line in case %s", session.counselor_id, case.id)
    return web.json_response({"entry_id": entry_id, "line_id": line.id})


async def start_chat(request: web.Request) -> web.Response:
    """Start the live chat: the case becomes active and the victim is told a counselor joined."""
    session = current_session(request)
    check_json_post(request, session)
    case = await _held_case(request, session)
    if case.status == CaseStatus.CLAIMED.value:
        try:
            await request.app[_cases_key].transition(
                case.id,
                CaseStatus.ACTIVE,
                f"counselor:{session.counselor_id}",
                counselor_id=session.counselor_id,
            )
        except CaseTransitionError:
            raise refusal(
                request, web.HTTPConflict, _("the case's status changed meanwhile; reload the page")
            ) from None
    elif case.status != CaseStatus.ACTIVE.value:
        raise refusal(request, web.HTTPConflict, _("claim the case first"))
    chat = request.app[_chat_key]
    presence = await chat.presence(case.id)
    if presence is not None and presence.kind is EventKind.ENDED and presence.by is Sender.VICTIM:
        # They left, maybe with a quick exit because someone was watching: do not call them back.
        raise refusal(request, web.HTTPConflict, _("the victim left this chat"))
    if presence is None or presence.kind is not EventKind.JOINED:
        await chat.notify_victim(case.id, OutboxKind.JOINED, Sender.COUNSELOR)
        log.info("counselor %d started the live chat of case %s", session.counselor_id, case.id)
    return web.json_response({"status": CaseStatus.ACTIVE.value, "chat": "on"})


async def end_chat(request: web.Request) -> web.Response:
    """End the live chat: the victim is told, and what they write goes back to the bot's flow."""
    session = current_session(request)
    check_json_post(request, session)
    case = await _held_case(request, session)
    chat = request.app[_chat_key]
    presence = await chat.presence(case.id)
    if presence is None or presence.kind is not EventKind.JOINED:
        raise refusal(request, web.HTTPConflict, _("the chat is not on"))
    await chat.notify_victim(case.id, OutboxKind.ENDED, Sender.COUNSELOR)
    log.info("counselor %d ended the live chat of case %s", session.counselor_id, case.id)
    return web.json_response({"chat": "ended"})


async def canned_responses(request: web.Request) -> web.Response:
    """The canned responses for the live chat, the victim's language (`?language=`) first."""
    language = request.query.get("language", "")
    responses: tuple[CannedResponse, ...] = request.app[bundle_key].canned
    ordered = in_order_for(responses, language)
    return web.json_response(
        {
            "responses": [
                {"id": r.id, "language": r.language, "title": r.title, "text": r.text}
                for r in ordered
            ]
        }
    )


def _static(name: str, content_type: str) -> Handler:
    async def serve(_request: web.Request) -> web.Response:
        body = (resources.files("backend.console") / "static" / name).read_bytes()
        return web.Response(body=body, content_type=content_type, charset="utf-8")

    return serve


async def close_sockets(app: web.Application) -> None:
    # on_shutdown runs before aiohttp waits for handlers: an open socket would hold it up.
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[_sockets_key]
    for ws in list(sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")


async def _run_hub(app: web.Application) -> AsyncIterator[None]:
    hub = app[hub_key]
    await hub.start()
    yield
    await hub.stop()


def add_routes(
    app: web.Application,
    *,
    cases: CaseStore,
    keyring: KeyRing,
    canned: Sequence[CannedResponse] | None = None,
    triage: Triage | None = None,
) -> None:
    redis = app[redis_key]
    app[_triage_key] = triage or Triage()
    app[hub_key] = TranscriptHub(redis)
    app[_cases_key] = cases
    app[_keyring_key] = keyring
    app[_chat_key] = LiveChat(redis)
    if bundle_key not in app:  # the console sets it from the published flows
        app[bundle_key] = ConsoleBundle(
            Directory(), tuple(load(shipped()) if canned is None else canned)
        )
    app[_sockets_key] = weakref.WeakSet()
    app.cleanup_ctx.append(_run_hub)
    app.on_shutdown.append(close_sockets)
    routes = (
        ("GET", "/console/cases/{case_id}/live", live_socket, Access.COUNSELOR),
        (
            "GET",
            "/console/static/live_chat.js",
            _static("live_chat.js", "text/javascript"),
            Access.PUBLIC,
        ),
        (
            "GET",
            "/console/static/live_chat.css",
            _static("live_chat.css", "text/css"),
            Access.PUBLIC,
        ),
        ("POST", "/api/cases/{case_id}/chat/start", start_chat, Access.COUNSELOR),
        ("POST", "/api/cases/{case_id}/chat/end", end_chat, Access.COUNSELOR),
        ("POST", "/api/cases/{case_id}/chat/lines", send_line, Access.COUNSELOR),
        ("GET", "/api/canned-responses", canned_responses, Access.COUNSELOR),
    )
    for method, path, handler, access in routes:
        app.router.add_route(method, path, guard(access, handler))
