"""Console sign-in resists guessing: growing delays, then a lock that even the right password
does not open."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.settings import LoginPolicy
from backend.login_guard import MAX_DELAY_S, LoginGuard, LoginLockedError
from tests.conftest import Pair, start_hotline


async def test_delays_grow_and_the_limit_locks(redis: Redis) -> None:
    guard = LoginGuard(redis, LoginPolicy(max_failures=3, lock_s=60, delay_ms=1))
    delays = [await guard.failed("Admin") for _ in range(2)]
    assert delays == [0.001, 0.002]
    await guard.check("admin")  # not locked yet; usernames compare case-insensitively
    await guard.failed("admin ")
    with pytest.raises(LoginLockedError):
        await guard.check("ADMIN")
    await guard.check("someone-else")
    assert await redis.ttl(next(iter([k async for k in redis.scan_iter("*login-lock*")]))) > 0


async def test_success_resets_the_count(redis: Redis) -> None:
    guard = LoginGuard(redis, LoginPolicy(max_failures=2, lock_s=60, delay_ms=0))
    await guard.failed("admin")
    await guard.succeeded("admin")
    await guard.failed("admin")
    await guard.check("admin")


def test_the_delay_is_capped() -> None:
    guard = LoginGuard(None, LoginPolicy(delay_ms=250))  # type: ignore[arg-type]  # delay_s reads no Redis
    assert guard.delay_s(1) == 0.25
    assert guard.delay_s(3) == 1.0
    assert guard.delay_s(40) == MAX_DELAY_S


async def test_a_locked_username_refuses_even_the_right_password(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {"HOTLINE_LOGIN_MAX_FAILURES": "3"}) as hotline:
        for _ in range(3):
            wrong = await hotline.client.post(
                "/console/login", data={"username": "admin", "password": "guess"}
            )
            assert wrong.status == 401
        right = await hotline.client.post(
            "/console/login",
            data={"username": "admin", "password": hotline.first_password},
            allow_redirects=False,
        )
        assert right.status == 429
        assert "Too many failed sign-ins" in await right.text()
        assert "hotline_console" not in right.cookies
