"""Console sessions end (issue 18): an absolute lifetime however busy the console is, and a
password change that needs the current password, refuses guessable ones and ends every other
session of the counselor."""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import csrf_of, login

NEW = "a long new passphrase"


async def test_a_polling_console_still_ends_at_the_absolute_lifetime(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    env = {"HOTLINE_CONSOLE_SESSION_MAX_S": "2"}
    async with start_hotline(pair, tmp_path, env) as hotline:
        assert (await login(hotline, hotline.first_password)).status == 303
        statuses = []
        for _ in range(40):  # a console open in a tab polls every few seconds
            response = await hotline.client.get("/console/password", allow_redirects=False)
            statuses.append(response.status)
            if response.status != 200:
                break
            await asyncio.sleep(0.25)
        assert statuses[0] == 200
        assert statuses[-1] == 303, "however often it polls, the session ends"
        assert response.headers["Location"] == "/console/login"
        assert [key async for key in redis.scan_iter("hotline:console:session:*")] == []


async def _change(
    hotline: RunningHotline, cookie: str, current: str, new: str, repeat: str | None = None
) -> tuple[int, str, str | None]:
    headers = {"Cookie": f"hotline_console={cookie}"}
    page = await hotline.client.get("/console/password", headers=headers)
    form = {
        "csrf": csrf_of(await page.text()),
        "current_password": current,
        "new_password": new,
        "repeat_password": new if repeat is None else repeat,
    }
    response = await hotline.client.post(
        "/console/password", data=form, headers=headers, allow_redirects=False
    )
    changed = response.cookies.get("hotline_console")
    hotline.client.session.cookie_jar.clear()
    return response.status, await response.text(), None if changed is None else changed.value


async def _signed_in(hotline: RunningHotline, password: str) -> str:
    hotline.client.session.cookie_jar.clear()
    response = await login(hotline, password)
    assert response.status == 303, await response.text()
    cookie = response.cookies["hotline_console"].value
    hotline.client.session.cookie_jar.clear()
    return cookie


async def test_a_password_change_needs_the_current_one_and_ends_other_sessions(
    hotline: RunningHotline,
) -> None:
    first = await _signed_in(hotline, hotline.first_password)
    other = await _signed_in(hotline, hotline.first_password)
    status, body, _ = await _change(hotline, first, "not the current password", NEW)
    assert status == 401 and "The current password is wrong" in body
    status, body, _ = await _change(hotline, first, "", NEW)
    assert status == 401
    status, _, cookie = await _change(hotline, first, hotline.first_password, NEW)
    assert status == 303 and cookie is not None
    ended = await hotline.client.get(
        "/console/password", headers={"Cookie": f"hotline_console={other}"}, allow_redirects=False
    )
    assert ended.headers["Location"] == "/console/login", "the other session ended"
    kept = await hotline.client.get("/api/cases", headers={"Cookie": f"hotline_console={cookie}"})
    assert kept.status == 200, "the session that changed it goes on"


async def test_guessable_passwords_are_refused(hotline: RunningHotline) -> None:
    cookie = await _signed_in(hotline, hotline.first_password)
    refused = {
        "aaaaaaaaaaaa": "Use more different characters",
        "abababababab": "Use more different characters",
        "qwertyuiop123": "list of common passwords",
        "Password2024!!": "list of common passwords",
        "my admin passphrase": "must not contain your username",
        "short": "at least 12 characters",
    }
    for password, message in refused.items():
        status, body, changed = await _change(hotline, cookie, hotline.first_password, password)
        assert (status, changed) == (400, None), password
        assert message in body, password
    status, _, _ = await _change(hotline, cookie, hotline.first_password, NEW)
    assert status == 303
