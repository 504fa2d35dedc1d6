"""Sign-in throttling by client address first, by username second (issue 13): one address
cannot lock a counselor out, many addresses can only for a while and an administrator lifts it
(`hotline counselor unlock`), and the counselor is told how many sign-ins failed."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import pytest
from aiohttp import ClientResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit
from backend.models import AuditEntry
from bot import cli
from tests.conftest import FAST_KDF_ENV, Pair, RunningHotline, start_hotline

ADDRESS_LIMIT = 3
USERNAME_LIMIT = 6


async def _sign_in(hotline: RunningHotline, password: str, address: str) -> ClientResponse:
    """From `address`, as the trusted proxy in front of the console reports it."""
    hotline.client.session.cookie_jar.clear()
    return await hotline.client.post(
        "/console/login",
        data={"username": "admin", "password": password},
        headers={"X-Forwarded-For": address},
        allow_redirects=False,
    )


async def _banner(hotline: RunningHotline, signed_in: ClientResponse) -> str:
    cookie = {"Cookie": f"hotline_console={signed_in.cookies['hotline_console'].value}"}
    hotline.client.session.cookie_jar.clear()
    return await (await hotline.client.get("/console/password", headers=cookie)).text()


async def test_address_first_username_second_and_an_administrator_unlocks(
    pair: Pair,
    tmp_path: Path,
    *,
    redis: Redis,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        "HOTLINE_TRUSTED_PROXIES": "127.0.0.1",
        "HOTLINE_LOGIN_MAX_FAILURES": str(ADDRESS_LIMIT),
        "HOTLINE_LOGIN_USERNAME_MAX_FAILURES": str(USERNAME_LIMIT),
    }
    async with start_hotline(pair, tmp_path, env) as hotline:
        right = hotline.first_password
        for _ in range(ADDRESS_LIMIT):
            assert (await _sign_in(hotline, "a wrong guess", "198.51.100.1")).status == 401
        assert (await _sign_in(hotline, right, "198.51.100.1")).status == 429
        # The guesser's address is throttled; the counselor, elsewhere, is not locked out.
        signed_in = await _sign_in(hotline, right, "203.0.113.9")
        assert signed_in.status == 303
        assert "3 failed sign-in(s) for your username" in await _banner(hotline, signed_in)
        keys = [key async for key in redis.scan_iter("hotline:console:login-*")]
        assert not [key for key in keys if b"198.51.100" in key or b"203.0.113" in key]

        # Guessing from many addresses meets the username's own, higher limit.
        for n in range(USERNAME_LIMIT):
            assert (await _sign_in(hotline, "a wrong guess", f"192.0.2.{n}")).status == 401
        assert (await _sign_in(hotline, right, "203.0.113.9")).status == 429

        for name, value in {
            **FAST_KDF_ENV,
            **env,
            "HOTLINE_DATA_DIR": str(tmp_path / "data"),
            "HOTLINE_DATABASE_URL": pair.database_url,
            "HOTLINE_REDIS_URL": pair.redis_url,
        }.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setattr(sys, "stdin", io.StringIO(right + "\n"))
        argv = ["counselor", "unlock", "admin", "--admin", "admin"]
        assert await asyncio.to_thread(cli.main, argv) == 0, capsys.readouterr()
        assert "may sign in again" in capsys.readouterr().out

        signed_in = await _sign_in(hotline, right, "203.0.113.9")
        assert signed_in.status == 303
        assert f"{USERNAME_LIMIT} failed sign-in(s)" in await _banner(hotline, signed_in)
        again = await _sign_in(hotline, right, "203.0.113.9")
        assert "failed sign-in(s)" not in await _banner(hotline, again), "told once"
    async with AsyncSession(engine) as session:
        actions = (await session.exec(select(AuditEntry.action))).all()
    assert audit.AuditAction.LOGIN_UNLOCK.value in actions
