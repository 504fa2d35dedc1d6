"""A case's evidence in the console: kept screenshots shown to the case's counselor, and the
evidence manifest for police or a platform (issue 12, point 3).

A screenshot is opened in memory from the report's sealed body (it was sealed to the centre key
at upload, and sealed again inside the report) and served inline, never cached, with an unseal
audit link. The case page previews it blurred behind a content warning, for the counselor's
sake (issue 16): `static/evidence.js` takes the blur off when she chooses, by click or key, and
puts it back as she likes; loading the blurred preview is the view the audit link records.
Only the counselor holding the case (or a supervisor) may open it: a screenshot of
a threat can show the victim herself.

The manifest lists the case's evidence records and every audit link about the case (seq, time,
actor, action, detail and the link's hash). Its SHA-256 over a canonical encoding goes into
the export's own audit link, so the manifest is bound into the hash-chained log: whoever
receives it checks the digest against that link, and `hotline audit verify` checks the chain.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.audit import AuditAction
from backend.console import app_keys
from backend.console.access import ROLE_RANK, Access, current_session, guard
from backend.console.case_work import open_body
from backend.console.forms import refusal
from backend.console.i18n import gettext as _
from backend.console.sessions import ConsoleSession
from backend.core.errors import CaseNotFoundError, SealingError
from backend.core.evidence_records import VIEWABLE_MIME, manifest, records_of, sealed_file
from backend.core.sealing import Envelope, open_envelope
from backend.models import AuditEntry, Case, Role
from backend.web import engine_key

log = logging.getLogger(__name__)

EXPORT_DETAIL_PREFIX = "evidence manifest sha256="


async def _own_case(request: web.Request, session: ConsoleSession) -> Case:
    """The case, if this counselor holds it (or is a supervisor); refused otherwise."""
    try:
        case = await request.app[app_keys.cases_key].get(request.match_info["case_id"])
    except CaseNotFoundError:
        raise refusal(request, web.HTTPNotFound, _("no such case")) from None
    supervisor = ROLE_RANK.get(session.role, 0) >= ROLE_RANK[Role.SUPERVISOR.value]
    if not supervisor and case.claimed_by != session.counselor_id:
        raise refusal(request, web.HTTPForbidden, _("this case is not yours: claim it first"))
    return case


async def screenshot(request: web.Request) -> web.Response:
    """A kept screenshot of the case, shown inline; audited as an unseal."""
    session = current_session(request)
    case = await _own_case(request, session)
    try:
        index = int(request.match_info["index"])
    except ValueError:
        raise refusal(request, web.HTTPNotFound, _("no such file")) from None
    body = open_body(case, session)
    if body is None:
        raise refusal(request, web.HTTPForbidden, _("this case cannot be opened with your keys"))
    record = next((r for r in records_of(body) if r.sealed_index == index), None)
    sealed = sealed_file(body, index)
    if record is None or sealed is None:
        raise refusal(request, web.HTTPNotFound, _("no such file"))
    try:
        envelope = Envelope.from_bytes(sealed)
        key = session.private_keys.get(envelope.header.key_id)
        if key is None:
            raise SealingError("no key for this file")
        data = open_envelope(envelope, key)
    except SealingError:
        raise refusal(request, web.HTTPForbidden, _("this file cannot be opened")) from None
    await request.app[app_keys.cases_key].record(
        f"counselor:{session.counselor_id}", AuditAction.UNSEAL, case.id, f"evidence:{index}"
    )
    content_type = record.mime_type if record.mime_type in VIEWABLE_MIME else ""
    disposition = "inline" if content_type else "attachment"
    return web.Response(
        body=data,
        content_type=content_type or "application/octet-stream",
        headers={
            "Content-Disposition": f'{disposition}; filename="evidence-{index}"',
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )


async def _links(engine: AsyncEngine, case_id: str) -> list[dict[str, Any]]:
    query = select(AuditEntry).where(col(AuditEntry.subject) == case_id)
    async with AsyncSession(engine) as session:
        rows = (await session.exec(query.order_by(col(AuditEntry.seq)))).all()
    return [
        {
            "seq": r.seq,
            "at": r.at,
            "actor": r.actor,
            "action": r.action,
            "detail": r.detail,
            "hash": r.hash,
        }
        for r in rows
    ]


async def export(request: web.Request) -> web.Response:
    """The case's evidence manifest (records and audit links), bound into the audit log by its
    SHA-256 in the export's own link; audited as an export."""
    session = current_session(request)
    case = await _own_case(request, session)
    body = open_body(case, session)
    if body is None:
        raise refusal(request, web.HTTPForbidden, _("this case cannot be opened with your keys"))
    engine = request.app[engine_key]
    document, digest = manifest(
        case.id, records_of(body), await _links(engine, case.id), datetime.now(UTC)
    )
    await request.app[app_keys.cases_key].record(
        f"counselor:{session.counselor_id}",
        AuditAction.EXPORT,
        case.id,
        EXPORT_DETAIL_PREFIX + digest,
    )
    # The link that carries the digest: the receiver finds it by this hash in the chain.
    detail = EXPORT_DETAIL_PREFIX + digest
    link = [x for x in await _links(engine, case.id) if x["detail"] == detail][-1]
    log.info("counselor %d exported the evidence of case %s", session.counselor_id, case.id)
    answer = {"manifest": document, "sha256": digest, "audit_link": link}
    return web.Response(
        text=json.dumps(answer, ensure_ascii=False, indent=1),
        content_type="application/json",
        headers={
            "Content-Disposition": f'attachment; filename="evidence-{case.id}.json"',
            "Cache-Control": "no-store",
        },
    )


async def evidence_script(_request: web.Request) -> web.Response:
    body = (resources.files("backend.console") / "static" / "evidence.js").read_bytes()
    return web.Response(body=body, content_type="text/javascript", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/static/evidence.js", guard(Access.PUBLIC, evidence_script))
    app.router.add_get(
        "/console/cases/{case_id}/evidence/{index}", guard(Access.COUNSELOR, screenshot)
    )
    app.router.add_get("/api/cases/{case_id}/evidence/export", guard(Access.COUNSELOR, export))
