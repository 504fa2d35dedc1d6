"""The caseload cap: a counselor holding the most cases one may hold is refused another claim,
with a message that says what to do, until they close or hand one over."""

from __future__ import annotations

from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console.app_keys import cases_key
from tests.conftest import Pair, start_hotline
from tests.live_chat_support import add_counselor, origin_of, sign_in
from tests.test_console import report
from tests.test_statistics import open_cases


async def test_a_claim_beyond_the_cap_is_refused(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {"HOTLINE_CASELOAD_CAP": "2"}) as hotline:
        for n in range(3):
            await report(hotline, f"report {n}")
        await add_counselor(hotline, "minji")
        minji = await sign_in(hotline, "minji")
        client = hotline.client
        first, second, third = (
            c["id"] for c in await open_cases(hotline, minji.headers("")["Cookie"], 3)
        )
        for case_id in (first, second):
            claimed = await client.post(f"/api/cases/{case_id}/claim", headers=minji.api_headers())
            assert claimed.status == 200
        refused = await client.post(f"/api/cases/{third}/claim", headers=minji.api_headers())
        assert refused.status == 409
        assert "You already hold 2 cases" in (await refused.json())["error"]
        form = await client.post(
            f"/console/cases/{third}/claim",
            data={"csrf": minji.csrf},
            headers=minji.headers(origin_of(hotline))
            | {"Cookie": f"{minji.headers('')['Cookie']}; hotline_console_lang=ko"},
            allow_redirects=False,
        )
        assert form.status == 409 and "이미 사건 2건을 맡고 있습니다" in await form.text()
        assert (await client.app[cases_key].get(third)).status == "queued"

        closed = await client.post(
            f"/api/cases/{first}/close", json={"outcome": "referred"}, headers=minji.api_headers()
        )
        assert closed.status == 200
        again = await client.post(f"/api/cases/{third}/claim", headers=minji.api_headers())
        assert again.status == 200, "room again after closing one"
