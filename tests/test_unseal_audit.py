"""Every unseal is audited (issue 12, point 4): the router's every GET route, as a page and as a
WebSocket, is called on a case whose sealed parts carry a marker; each answer that shows the
marker must have written an unseal (or export) link on that case. A new route that opens sealed
data cannot forget its link: it is found from the router, not from a list in this test.

The case is made the way a victim makes it: a web chat report, a request for a counselor and a
text typed while waiting, then a counselor's note and takedown draft through the console API.
"""

from __future__ import annotations

import re
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.audit import AuditAction
from tests.conftest import RunningHotline
from tests.live_chat_support import origin_of
from tests.test_case_work import post
from tests.test_console import chat, report, sign_in_and_change_password, wait_for_cases

pytestmark = pytest.mark.crypto

MARKER = "unseal-marker-5c1e"
# Routes known to open sealed data today, so the enumeration below cannot pass empty-handed.
KNOWN = {
    "/console/cases/{case_id}",
    "/api/cases/{case_id}/work",
    "/console/takedowns/{takedown_id}",
    "/api/takedowns/{takedown_id}",
    "/console/cases/{case_id}/live",
}
OPENING = {AuditAction.UNSEAL.value, AuditAction.EXPORT.value}


async def _last_seq(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = (await conn.execute(text("SELECT max(seq) FROM audit_log"))).scalar()
    return int(found or 0)


async def _links_after(engine: AsyncEngine, seq: int) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT action, subject FROM audit_log WHERE seq > :seq"), {"seq": seq}
        )
        return [(str(a), str(s)) for a, s in rows.all()]


async def _websocket_text(hotline: RunningHotline, path: str) -> str | None:
    """What a WebSocket on `path` sends up to its catch-up mark; None where none is served."""
    try:
        ws = await hotline.client.ws_connect(path, headers={"Origin": origin_of(hotline)})
    except aiohttp.WSServerHandshakeError:
        return None
    said: list[str] = []
    async with ws:
        while True:
            message = await ws.receive(timeout=10)
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            said.append(message.data)
            if '"caught_up"' in message.data:
                break
    return "\n".join(said)


async def test_every_route_that_shows_sealed_data_writes_an_audit_link(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await report(hotline, f"the details {MARKER} report")
    await chat(hotline, text="/human")  # joins the report's case (issue 18): one case
    saved = await chat(hotline, text=f"while waiting {MARKER} text")
    assert saved["relay"] is True, saved
    await sign_in_and_change_password(hotline, "a long new passphrase")
    cases = await wait_for_cases(hotline, 1)
    case_ids = {c["id"] for c in cases}
    work = await (await hotline.client.get(f"/api/cases/{cases[0]['id']}/work")).json()
    csrf = work["csrf_token"]
    takedowns: dict[str, str] = {}
    for case_id in case_ids:
        status, _ = await post(hotline, f"/api/cases/{case_id}/claim", csrf, {})
        assert status == 200
        status, _ = await post(
            hotline, f"/api/cases/{case_id}/notes", csrf, {"text": f"note {MARKER}"}
        )
        assert status == 200
        status, made = await post(
            hotline, f"/api/cases/{case_id}/takedowns", csrf, {"language": "en"}
        )
        assert status == 200, made
        takedowns[case_id] = made["id"]
        status, _ = await post(
            hotline,
            f"/api/takedowns/{made['id']}/edit",
            csrf,
            {"description": f"described {MARKER}"},
        )
        assert status == 200

    showing: set[str] = set()
    for route in hotline.client.app.router.routes():
        resource = route.resource
        if route.method != "GET" or resource is None:
            continue
        pattern = resource.canonical
        for case_id in case_ids:
            values: dict[str, Any] = {
                "case_id": case_id,
                "takedown_id": takedowns[case_id],
                "name": "no-such-file",
                "index": "0",
            }
            names = re.findall(r"{(\w+)}", pattern)
            if any(name not in values for name in names):
                pytest.fail(f"{pattern}: the test does not know what to put for {names}")
            path = pattern.format(**values)
            for as_websocket in (False, True):
                before = await _last_seq(engine)
                if as_websocket:
                    said = await _websocket_text(hotline, path) or ""
                else:
                    response = await hotline.client.get(path, allow_redirects=False)
                    said = await response.text()
                if MARKER not in said:
                    continue
                showing.add(pattern)
                links = await _links_after(engine, before)
                opened = {subject for action, subject in links if action in OPENING}
                assert opened & case_ids, f"GET {path} showed sealed data without an audit link"
    assert showing >= KNOWN, KNOWN - showing
