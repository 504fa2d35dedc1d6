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


async def test_delays_grow_and_the_address_limit_locks(redis: Redis) -> None:
    guard = LoginGuard(redis, LoginPolicy(max_failures=3, lock_s=60, delay_ms=1))
    delays = [await guard.failed(await guard.reserve("Admin", "192.0.2.1")) for _ in range(2)]
    assert delays == [0.001, 0.002]
    await guard.failed(await guard.reserve("admin ", "192.0.2.1"))
    with pytest.raises(LoginLockedError):
        await guard.reserve("someone-else", "192.0.2.1")
    await guard.reserve("ADMIN", "192.0.2.2")  # another address is not locked
    names = [key async for key in redis.scan_iter("*login-address:*")]
    assert names and all(b"192.0.2" not in name for name in names), "addresses only as HMACs"
    assert all([await redis.ttl(name) > 0 for name in names])


async def test_the_username_lock_needs_many_addresses_and_an_administrator_lifts_it(
    redis: Redis,
) -> None:
    policy = LoginPolicy(max_failures=2, lock_s=60, delay_ms=0, username_max_failures=5)
    guard = LoginGuard(redis, policy)
    for n in range(5):
        await guard.failed(await guard.reserve("kim", f"192.0.2.{n}"))
    with pytest.raises(LoginLockedError):
        await guard.reserve("KIM", "198.51.100.7")
    assert await redis.ttl(next(iter([k async for k in redis.scan_iter("*login-failures*")]))) > 0
    assert await guard.unlock("kim")
    attempt = await guard.reserve("kim", "198.51.100.7")
    assert await guard.succeeded(attempt) == 5, "the failures since the last good sign-in"
    assert await guard.succeeded(await guard.reserve("kim", "198.51.100.7")) == 0


async def test_success_gives_its_attempt_back(redis: Redis) -> None:
    guard = LoginGuard(redis, LoginPolicy(max_failures=2, lock_s=60, delay_ms=0))
    await guard.failed(await guard.reserve("admin", "192.0.2.1"))
    for _ in range(3):
        await guard.succeeded(await guard.reserve("admin", "192.0.2.1"))
    await guard.failed(await guard.reserve("admin", "192.0.2.1"))
    with pytest.raises(LoginLockedError):
        await guard.reserve("admin", "192.0.2.1")


async def test_the_delay_is_capped(redis: Redis) -> None:
    guard = LoginGuard(redis, LoginPolicy(delay_ms=250))
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
