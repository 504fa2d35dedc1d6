"""The archive: cases found by routing facts through the console, on both pairs, from reports
made through the web chat; opening a result is audited as any case view."""

from __future__ import annotations

import re
from datetime import timedelta

from backend.audit import AuditAction
from backend.case_archive import CaseArchive, Search
from backend.case_statistics import centre_today
from backend.models import Role
from backend.web import engine_key
from tests.conftest import RunningHotline
from tests.live_chat_support import add_counselor, sign_in
from tests.test_console import report
from tests.test_console_queue import audit_trail
from tests.test_statistics import open_cases


def _found(page: str) -> list[str]:
    table = (
        page.split('id="archive"', 1)[1].split("</table>", 1)[0] if 'id="archive"' in page else ""
    )
    return re.findall(r'data-case="([0-9a-f]+)"', table)


async def test_the_archive_finds_cases_by_routing_facts(hotline: RunningHotline) -> None:
    for n in range(3):
        await report(hotline, f"deepfake report {n}", category="deepfake")
    for n in range(2):
        await report(hotline, f"filming report {n}", category="filming")
    minji_id = await add_counselor(hotline, "minji")
    await add_counselor(hotline, "boss", Role.SUPERVISOR)
    minji = await sign_in(hotline, "minji")
    cookie = {"Cookie": minji.api_headers()["Cookie"]}
    client = hotline.client
    cases = await open_cases(hotline, cookie["Cookie"], 5)
    filming = [c["id"] for c in cases if c["category"] == "filming"]
    taken, closed = (
        filming[0],
        cases[0]["id"] if cases[0]["category"] != "filming" else cases[1]["id"],
    )
    for case_id in (taken, closed):
        claimed = await client.post(f"/api/cases/{case_id}/claim", headers=minji.api_headers())
        assert claimed.status == 200
    shut = await client.post(
        f"/api/cases/{closed}/close", json={"outcome": "referred"}, headers=minji.api_headers()
    )
    assert shut.status == 200, await shut.text()

    async def search(query: str) -> list[str]:
        response = await client.get(f"/console/archive?{query}", headers=cookie)
        assert response.status == 200, await response.text()
        return _found(await response.text())

    assert len(await search("")) == 5
    assert await search("status=closed") == [closed]
    assert sorted(await search("category=filming")) == sorted(filming)
    assert sorted(await search(f"counselor={minji_id}")) == sorted([taken, closed])
    assert await search(f"counselor={minji_id}&status=claimed") == [taken]
    today = centre_today()
    assert len(await search(f"from={today}&until={today}")) == 5
    assert await search(f"from={today + timedelta(days=1)}") == []
    assert await search(f"until={today - timedelta(days=1)}") == []
    priority = cases[0]["priority"]
    assert len(await search(f"priority={priority}")) == sum(
        1 for c in cases if c["priority"] == priority
    )
    bad = await client.get("/console/archive?status=lost", headers=cookie)
    assert bad.status == 400

    # A page at a time, newest first, each case once.
    archive = CaseArchive(client.app[engine_key], page_size=2)
    pages = [await archive.search(Search(page=n)) for n in (1, 2, 3)]
    assert [p.pages for p in pages] == [3, 3, 3] and [len(p.cases) for p in pages] == [2, 2, 1]
    seen = [c.id for p in pages for c in p.cases]
    assert len(set(seen)) == 5
    received = [c.received_at for p in pages for c in p.cases]
    assert received == sorted(received, reverse=True)

    # Opening a found case is the case page: audited as any case view.
    opened = await client.get(f"/console/cases/{closed}", headers=cookie)
    assert opened.status == 200
    assert (f"counselor:{minji_id}", AuditAction.UNSEAL.value, "") in await audit_trail(
        hotline, closed
    )
