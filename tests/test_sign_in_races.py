"""Sign-in under parallel guessing (issue 18): every attempt is counted before its password or
code is checked, so N guesses sent at once cost N attempts and the lock holds."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import ClientResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import csrf_of, login, sign_in_and_change_password
from tests.test_console_totp import PASSWORD, code, enrol, sign_out

LIMIT = 5


async def test_parallel_password_guesses_cannot_pass_the_lock(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    env = {"HOTLINE_LOGIN_MAX_FAILURES": str(LIMIT)}
    async with start_hotline(pair, tmp_path, env) as hotline:
        guesses = [f"wrong guess number {n}" for n in range(39)] + [hotline.first_password]
        responses = await asyncio.gather(
            *(
                hotline.client.post(
                    "/console/login",
                    data={"username": "admin", "password": guess},
                    allow_redirects=False,
                )
                for guess in guesses
            )
        )
        statuses = [response.status for response in responses]
        checked = statuses.count(401) + statuses.count(303)
        # The right password gives its attempt back, so one more guess may have been checked.
        assert statuses.count(401) <= LIMIT, statuses
        assert checked <= LIMIT + 1, statuses
        assert statuses.count(429) == len(guesses) - checked, statuses
        hotline.client.session.cookie_jar.clear()
        after = await login(hotline, hotline.first_password)
        if statuses.count(401) == LIMIT:
            assert after.status == 429, "the limit is reached: the right password is refused too"
            assert "hotline_console" not in after.cookies
        else:
            # The right password came in among the first checked (the order of parallel
            # requests is the server's) and gave its attempt back: the limit is not reached,
            # and it signs in.
            assert 303 in statuses and after.status == 303, statuses


async def test_300_parallel_totp_codes_are_bounded_and_never_a_server_error(
    hotline: RunningHotline,
) -> None:
    await sign_in_and_change_password(hotline, PASSWORD)
    secret = await enrol(hotline, probe=False)
    await sign_out(hotline)
    assert (await login(hotline, PASSWORD)).headers["Location"] == "/console/login/code"
    page = await (await hotline.client.get("/console/login/code")).text()
    csrf = csrf_of(page)
    right = code(secret)
    wrong = [f"{n:06d}" for n in range(301) if f"{n:06d}" != right][:300]

    async def send(value: str) -> ClientResponse:
        response = await hotline.client.post(
            "/console/login/code", data={"csrf": csrf, "code": value}, allow_redirects=False
        )
        await response.read()
        return response

    responses = await asyncio.gather(*(send(value) for value in wrong))
    statuses = [response.status for response in responses]
    assert not [status for status in statuses if status >= 500], statuses
    bodies = [await response.text() for response in responses]
    checked = sum("That code is wrong" in body for body in bodies)
    # The password's own attempt was given back; each code costs one. Past the limit the
    # waiting sign-in is dropped: the codes after that find none ("expired").
    assert checked <= LIMIT, checked
    assert statuses.count(429) >= 1, statuses
    expired = sum("The sign-in has expired" in body for body in bodies)
    assert checked + statuses.count(429) + expired == len(wrong), statuses
    answered = await hotline.client.post(
        "/console/login/code", data={"csrf": csrf, "code": right}, allow_redirects=False
    )
    assert answered.status in {401, 429}, "no right code opens a locked sign-in"
    assert "hotline_console" not in answered.cookies
