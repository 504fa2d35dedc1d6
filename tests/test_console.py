"""The skeleton path in one process: web chat → sealed report → stream → intake → console."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp import ClientResponse
from redis.asyncio import Redis

from backend.core import redis_keys as streams
from backend.core.shifts import ShiftBoard
from tests.conftest import RunningHotline

TOKEN = "t" * 43


async def chat(hotline: RunningHotline, **turn: str) -> dict[str, Any]:
    response = await hotline.client.post("/chat/api/turn", json={"token": TOKEN, **turn})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def report(hotline: RunningHotline, details: str, category: str = "deepfake") -> None:
    await chat(hotline, text="/start", language="en")
    await chat(hotline, button="agree")
    await chat(hotline, button=category)
    await chat(hotline, button="18_plus")
    await chat(hotline, text=details)
    done = await chat(hotline, button="send_now")
    assert "received safely" in done["messages"][0]["text"]


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match is not None, page
    return match.group(1)


async def login(hotline: RunningHotline, password: str) -> ClientResponse:
    return await hotline.client.post(
        "/console/login",
        data={"username": "admin", "password": password},
        allow_redirects=False,
    )


async def sign_in_and_change_password(hotline: RunningHotline, new_password: str) -> str:
    response = await login(hotline, hotline.first_password)
    assert response.status == 303
    assert response.headers["Location"] == "/console/password"
    page = await (await hotline.client.get("/console/password")).text()
    response = await hotline.client.post(
        "/console/password",
        data={
            "csrf": csrf_of(page),
            "current_password": hotline.first_password,
            "new_password": new_password,
            "repeat_password": new_password,
        },
        allow_redirects=False,
    )
    assert response.status == 303, await response.text()
    assert response.headers["Location"] == "/console"
    return new_password


async def wait_for_cases(hotline: RunningHotline, count: int) -> list[dict[str, Any]]:
    for _ in range(250):
        response = await hotline.client.get("/api/cases")
        cases: list[dict[str, Any]] = (await response.json())["cases"]
        if len(cases) >= count:
            return cases
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} cases, have {len(cases)}")


async def test_report_reaches_the_console_and_opens_unsealed(hotline: RunningHotline) -> None:
    await report(hotline, "Someone posted <script>alert(1)</script> a fake video of me")
    await sign_in_and_change_password(hotline, "a long new passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    assert (case["category"], case["channel"], case["language"]) == ("deepfake", "web", "en")
    listing = await (await hotline.client.get("/console")).text()
    assert case["id"][:8] in listing
    assert "fake video" not in listing, "the list shows routing facts only"
    page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
    assert "a fake video of me" in page
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_first_login_must_change_the_one_time_password(hotline: RunningHotline) -> None:
    response = await hotline.client.get("/console", allow_redirects=False)
    assert response.headers["Location"] == "/console/login"
    assert (await login(hotline, "wrong password")).status == 401
    await login(hotline, hotline.first_password)
    for path in ("/console", "/console/cases/anything"):
        response = await hotline.client.get(path, allow_redirects=False)
        assert response.status == 303
        assert response.headers["Location"] == "/console/password"
    assert (await hotline.client.get("/api/cases")).status == 401
    page = await (await hotline.client.get("/console/password")).text()
    short = await hotline.client.post(
        "/console/password",
        data={
            "csrf": csrf_of(page),
            "current_password": hotline.first_password,
            "new_password": "short",
            "repeat_password": "short",
        },
    )
    assert short.status == 400
    new = await sign_in_and_change_password(hotline, "another long passphrase")
    hotline.client.session.cookie_jar.clear()
    assert (await login(hotline, hotline.first_password)).status == 401
    response = await login(hotline, new)
    assert response.headers["Location"] == "/console"


async def test_the_new_password_still_opens_sealed_cases(hotline: RunningHotline) -> None:
    await sign_in_and_change_password(hotline, "rewrapped passphrase")
    hotline.client.session.cookie_jar.clear()
    await login(hotline, "rewrapped passphrase")
    await report(hotline, "marker-after-rewrap")
    (case,) = await wait_for_cases(hotline, 1)
    page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
    assert "marker-after-rewrap" in page


async def test_state_changes_need_the_csrf_token_and_our_origin(hotline: RunningHotline) -> None:
    await login(hotline, hotline.first_password)
    page = await (await hotline.client.get("/console/password")).text()
    form = {"new_password": "a long new passphrase", "repeat_password": "a long new passphrase"}
    no_token = await hotline.client.post("/console/password", data=form)
    assert no_token.status == 403
    cross_site = await hotline.client.post(
        "/console/password",
        data={"csrf": csrf_of(page), **form},
        headers={"Origin": "https://evil.example"},
    )
    assert cross_site.status == 403
    null_origin = await hotline.client.post(
        "/console/password",
        data={"csrf": csrf_of(page), **form},
        headers={"Origin": "null", "Sec-Fetch-Site": "cross-site"},
    )
    assert null_origin.status == 403
    still = await hotline.client.get("/console", allow_redirects=False)
    assert still.headers["Location"] == "/console/password", "nothing changed"


async def test_session_cookie_flags_and_security_headers(hotline: RunningHotline) -> None:
    response = await login(hotline, hotline.first_password)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    for path in ("/console/login", "/console/password", "/chat", "/healthz"):
        headers = (await hotline.client.get(path)).headers
        csp = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"


async def test_login_rotates_the_session(hotline: RunningHotline) -> None:
    first = (await login(hotline, hotline.first_password)).cookies["hotline_console"].value
    second = (await login(hotline, hotline.first_password)).cookies["hotline_console"].value
    assert first != second
    hotline.client.session.cookie_jar.clear()
    response = await hotline.client.get(
        "/console/password", headers={"Cookie": f"hotline_console={first}"}, allow_redirects=False
    )
    assert response.headers["Location"] == "/console/login", "the old session is gone"


async def test_healthz(hotline: RunningHotline) -> None:
    response = await hotline.client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_a_claimed_handoff_leaves_the_queue_victims_are_told_about(
    hotline: RunningHotline, redis: Redis
) -> None:
    await ShiftBoard(redis).start(1)
    await chat(hotline, text="/start", language="en")
    waiting = await chat(hotline, text="/human")
    assert "number 1 in the queue" in waiting["messages"][0]["text"]
    assert await redis.zcard(streams.HANDOFF_QUEUE) == 1
    await sign_in_and_change_password(hotline, "a long new passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
    claimed = await hotline.client.post(
        f"/console/cases/{case['id']}/claim",
        data={"csrf": csrf_of(page)},
        allow_redirects=False,
    )
    assert claimed.status == 303
    assert await redis.zcard(streams.HANDOFF_QUEUE) == 0, "a taken case no longer waits"
