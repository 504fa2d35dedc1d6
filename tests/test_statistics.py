"""The supervisors' statistics, on both backend pairs, from reports made through the web chat and
claims made through the console: counts from SQL, and every count under 5 shown as "<5" in the
page, the chart and the CSV."""

from __future__ import annotations

import asyncio
import csv
import io
import re
from typing import Any

from backend.case_statistics import centre_today
from backend.models import Role
from tests.conftest import RunningHotline
from tests.live_chat_support import add_counselor, sign_in
from tests.test_console import report


async def open_cases(hotline: RunningHotline, cookie: str, count: int) -> list[dict[str, Any]]:
    for _ in range(250):
        response = await hotline.client.get("/api/cases", headers={"Cookie": cookie})
        cases: list[dict[str, Any]] = (await response.json())["cases"]
        if len(cases) >= count:
            return cases
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} cases, have {len(cases)}")


def _row(page: str, table_id: str, first_cell: str) -> list[str]:
    table = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.DOTALL):
        cells = [c.strip() for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.DOTALL)]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in {table_id}")


async def test_counts_under_five_are_shown_as_under_five(hotline: RunningHotline) -> None:
    await add_counselor(hotline, "supervisor", Role.SUPERVISOR)
    await add_counselor(hotline, "counselor")
    supervisor = await sign_in(hotline, "supervisor")
    headers = {"Cookie": supervisor.api_headers()["Cookie"]}
    client = hotline.client
    today = centre_today().isoformat()
    query = f"from={today}&to={today}&by=category"

    for n in range(2):
        await report(hotline, f"filming report {n}", category="filming")
    await open_cases(hotline, headers["Cookie"], 2)
    # A day with fewer than 5 cases is a hollow bar drawn at 5, labelled "<5".
    month = await (await client.get(f"/console/statistics?to={today}", headers=headers)).text()
    chart = month.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert chart.count('class="bar small"') == 1
    assert f"{today}: &lt;5</title>" in chart and ": 2<" not in chart

    for n in range(6):
        await report(hotline, f"deepfake report {n}", category="deepfake")
    cases = await open_cases(hotline, headers["Cookie"], 8)
    for case in cases[:2]:
        claimed = await client.post(
            f"/api/cases/{case['id']}/claim", headers=supervisor.api_headers()
        )
        assert claimed.status == 200, await claimed.text()

    page = await (await client.get(f"/console/statistics?{query}", headers=headers)).text()
    header = _row(page, "per-day-table", "Day")
    counts = dict(zip(header, _row(page, "per-day-table", today), strict=True))
    assert counts == {"Day": today, "deepfake": "6", "filming": "&lt;5", "Total": "8"}
    assert f"{today}: 8</title>" in page and 'class="bar small"' not in page
    # Two cases taken by a counselor: too few to show, or to average.
    priority = str(cases[0]["priority"])
    assert _row(page, "response-table", priority)[1:4] == ["&lt;5", "\u2013", "&lt;5"]
    assert "Received outside 09:00\u201318:00" in page

    exported = await client.get(f"/console/statistics.csv?{query}", headers=headers)
    assert exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(await exported.text())))
    assert rows == [["day", "deepfake", "filming", "total"], [today, "6", "<5", "8"]]
    by_channel = await client.get(
        f"/console/statistics.csv?from={today}&to={today}&by=channel", headers=headers
    )
    assert list(csv.reader(io.StringIO(await by_channel.text()))) == [
        ["day", "web", "total"],
        [today, "8", "8"],
    ]

    korean = await client.get(
        f"/console/statistics?{query}",
        headers={"Cookie": f"{headers['Cookie']}; hotline_console_lang=ko"},
    )
    assert "일별 사건 수" in await korean.text()

    counselor = await sign_in(hotline, "counselor")
    refused = await client.get(
        "/console/statistics", headers={"Cookie": counselor.api_headers()["Cookie"]}
    )
    assert refused.status == 403
    bad = await client.get("/console/statistics?from=2026-13-01", headers=headers)
    assert bad.status == 400
