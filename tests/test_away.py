"""Away: a counselor on shift who steps away still counts as on shift for victims and keeps
their cases, but a colleague cannot transfer a new case to them until they are back."""

from __future__ import annotations

from backend.models import Role
from tests.conftest import RunningHotline
from tests.live_chat_support import SignedIn, add_counselor, origin_of, sign_in
from tests.test_console import report
from tests.test_statistics import open_cases


async def test_an_away_counselor_takes_no_new_case(hotline: RunningHotline) -> None:
    client = hotline.client
    origin = origin_of(hotline)
    minji_id = await add_counselor(hotline, "minji")
    await add_counselor(hotline, "jisu")
    minji, jisu = await sign_in(hotline, "minji"), await sign_in(hotline, "jisu")

    async def form(who: SignedIn, path: str, **data: str) -> int:
        response = await client.post(
            path,
            data={"csrf": who.csrf, **data},
            headers=who.headers(origin),
            allow_redirects=False,
        )
        return response.status

    for who in (minji, jisu):
        assert await form(who, "/console/shift", on="1") == 303
    assert await form(minji, "/console/away", away="1") == 303
    page = await (
        await client.get("/console", headers={"Cookie": minji.headers("")["Cookie"]})
    ).text()
    assert "You are away: colleagues cannot hand you new cases." in page
    await add_counselor(hotline, "boss", Role.SUPERVISOR)
    boss = await sign_in(hotline, "boss")
    load = await (await client.get("/api/supervision", headers=boss.api_headers())).json()
    by_name = {c["username"]: c for c in load["counselors"]}
    assert by_name["minji"]["away"] and not by_name["jisu"]["away"]
    queue = await (await client.get("/api/queue", headers=jisu.api_headers())).json()
    assert queue["counselors_on_shift"] == 2, "away is still on shift for victims"

    await report(hotline, "a report to hand over")
    (case,) = await open_cases(hotline, jisu.headers("")["Cookie"], 1)
    assert (
        await client.post(f"/api/cases/{case['id']}/claim", headers=jisu.api_headers())
    ).status == 200
    listing = await (
        await client.get(
            f"/console/cases/{case['id']}/transfer", headers={"Cookie": jisu.headers("")["Cookie"]}
        )
    ).text()
    assert "minji (counselor, on shift, away)" in listing
    refused = await client.post(
        f"/api/cases/{case['id']}/transfer", json={"to": minji_id}, headers=jisu.api_headers()
    )
    assert refused.status == 409
    assert "minji is away" in (await refused.json())["error"]

    assert await form(minji, "/console/away", away="0") == 303
    handed = await client.post(
        f"/api/cases/{case['id']}/transfer", json={"to": minji_id}, headers=jisu.api_headers()
    )
    assert handed.status == 200, await handed.text()
