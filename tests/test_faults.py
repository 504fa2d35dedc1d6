"""Fault injection with real processes: over 1,000 reports, none lost and none stored twice.

The intake runs as a real `hotline backend` process. Faults: SIGKILL of that process while it
consumes, SIGKILL and restart of a Redis server with its append-only file, and a database that
refuses connections for a while (PostgreSQL behind a TCP proxy that we close and reopen; SQLite
held under an exclusive lock past the busy timeout). The producer behaves like a bot: it
retries an XADD that failed, and sometimes sends a report twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.sealing import RoutingHeader, seal
from backend.embedded_redis import EmbeddedRedis
from tests.conftest import FAST_KDF_ENV, FIRST_START_ENV, Pair

pytestmark = pytest.mark.faults

HOTLINE = str(Path(sys.executable).parent / "hotline")
REPORTS = 1000
DUPLICATE_EVERY = 20  # the bot re-sends every 20th report (a retried turn)
SETTLE_S = 40.0


def _sealed_reports() -> list[tuple[str, bytes]]:
    public = keys.generate_private_key().public_key()
    reports = []
    for n in range(REPORTS):
        header = RoutingHeader(f"case-{n:05d}", n % 3, "ko", "web", "filming", "kid", "t")
        reports.append((f"key-{n:05d}", seal(b'{"answers": {}}', header, public).to_bytes()))
    return reports


class Producer:
    """Sends every report (some twice), retrying whatever Redis did not take."""

    def __init__(self, redis: Redis, reports: list[tuple[str, bytes]]) -> None:
        self.redis = redis
        self.reports = reports
        self.sent = 0

    async def run(self, per_batch: int = 50, pause_s: float = 0.05) -> None:
        for start in range(0, len(self.reports), per_batch):
            batch = self.reports[start : start + per_batch]
            batch += [r for i, r in enumerate(batch, start) if i % DUPLICATE_EVERY == 0]
            while True:
                try:
                    async with self.redis.pipeline(transaction=False) as pipe:
                        for key, envelope in batch:
                            pipe.xadd(
                                streams.REPORTS_STREAM,
                                {
                                    streams.FIELD_IDEMPOTENCY_KEY: key,
                                    streams.FIELD_ENVELOPE: envelope,
                                },
                            )
                        await pipe.execute()
                    break
                except (RedisConnectionError, RedisTimeoutError, OSError):
                    await asyncio.sleep(0.05)  # resent whole: some may now be there twice
            self.sent = start + len(batch)
            await asyncio.sleep(pause_s)


class Backend:
    """One `hotline backend` process: the intake under test."""

    def __init__(self, tmp_path: Path, database_url: str, redis_url: str) -> None:
        self.env = {
            **os.environ,
            "HOTLINE_DATA_DIR": str(tmp_path / "data"),
            "HOTLINE_DATABASE_URL": database_url,
            "HOTLINE_REDIS_URL": redis_url,
            "HOTLINE_HTTP_PORT": "0",
            "HOTLINE_NODE_NAME": "fault-node",  # a restart drains its own pending entries
            **FAST_KDF_ENV,
            **FIRST_START_ENV,
        }
        self.log_path = tmp_path / "backend.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [HOTLINE, "backend"], env=self.env, stdout=log, stderr=log
            )

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        log = self.log_path.read_text()
        assert "Traceback" not in log, log


@contextlib.asynccontextmanager
async def running(backend: Backend) -> AsyncIterator[Backend]:
    backend.start()
    try:
        yield backend
    finally:
        await asyncio.to_thread(backend.stop)


async def _wait_for(condition: Callable[[], Awaitable[bool]], timeout_s: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def _all_stored_once(store: CaseStore, redis: Redis) -> None:
    async def settled() -> bool:
        if await store.count() < REPORTS:
            return False
        try:
            pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
            return bool(pending["pending"] == 0 and await redis.xlen(streams.REPORTS_STREAM) == 0)
        except (RedisConnectionError, OSError):
            return False

    await _wait_for(settled)
    assert await store.count() == REPORTS, "a report was stored twice or one too many"
    ids = {c.id for c in await store.list_open()}
    assert ids == {f"case-{n:05d}" for n in range(REPORTS)}, "a report was lost"
    assert await redis.xlen(streams.DEAD_LETTER_STREAM) == 0


async def test_sigkill_of_the_intake_mid_batch(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    store = CaseStore(engine)
    producer = Producer(redis, _sealed_reports())
    backend = Backend(tmp_path, pair.database_url, pair.redis_url)
    sending = asyncio.create_task(producer.run(per_batch=25))
    unacknowledged = 0
    for attempt in range(1, 6):  # until a kill lands with a batch read but not acknowledged

        async def more_stored(at_least: int = min(150 * attempt, REPORTS - 100)) -> bool:
            return await store.count() >= at_least

        async with running(backend):
            await _wait_for(more_stored)
            backend.kill()  # while reports keep arriving and a batch is in flight
        pending = await redis.xpending(streams.REPORTS_STREAM, streams.INTAKE_GROUP)
        unacknowledged = pending["pending"]
        if unacknowledged:
            break
    assert unacknowledged > 0, "no kill landed in the middle of a batch"
    assert await store.count() < REPORTS, "the kill came too late to test anything"
    async with running(backend):
        await sending
        await _all_stored_once(store, redis)


async def test_redis_restart_with_append_only_file(
    pair: Pair, tmp_path: Path, engine: AsyncEngine
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    await server.start()
    redis = Redis.from_url(server.url)
    try:
        store = CaseStore(engine)
        producer = Producer(redis, _sealed_reports())
        backend = Backend(tmp_path, pair.database_url, server.url)
        async with running(backend):
            sending = asyncio.create_task(producer.run())

            async def intake_busy() -> bool:
                return await store.count() >= 150

            await _wait_for(intake_busy)
            os.kill(int(server.pid_path.read_text()), signal.SIGKILL)
            await server.stop()  # reaps the killed child
            await asyncio.sleep(0.5)  # the bot and the intake both see Redis gone
            await server.start()  # same directory: the append-only file is replayed
            await sending
            await _all_stored_once(store, redis)
        assert "unreachable; retrying" in backend.log_path.read_text(), "Redis never went away"
    finally:
        await redis.aclose()
        await server.stop()


class TcpProxy:
    """Between hotline and PostgreSQL: closing it refuses new connections and cuts live ones."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def _hold_sqlite_lock(path: str, seconds: float, locked: threading.Event) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN EXCLUSIVE")
        locked.set()
        time.sleep(seconds)
        conn.execute("COMMIT")
    finally:
        conn.close()


async def test_database_refusing_connections_for_a_while(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    store = CaseStore(engine)
    producer = Producer(redis, _sealed_reports())
    url = make_url(pair.database_url)
    proxy: TcpProxy | None = None
    database_url = pair.database_url
    if url.get_backend_name() == "postgresql":
        proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        await proxy.open()
        database_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    backend = Backend(tmp_path, database_url, pair.redis_url)
    async with running(backend):
        sending = asyncio.create_task(producer.run())

        async def some_stored() -> bool:
            return await store.count() >= 150

        await _wait_for(some_stored)
        if proxy is not None:
            await proxy.close()
            await asyncio.sleep(3.0)
            await proxy.open()  # same port
        else:
            # Longer than the 5 s busy timeout: the intake's writes fail, not just wait.
            locked = threading.Event()
            holder = threading.Thread(
                target=_hold_sqlite_lock, args=(url.database, 6.5, locked), daemon=True
            )
            holder.start()
            await asyncio.to_thread(locked.wait, 5)
            before = await store.count()
            await asyncio.sleep(1.0)
            assert await store.count() == before, "the database was not refusing"
            await asyncio.to_thread(holder.join)
        await sending
        await _all_stored_once(store, redis)
    if proxy is not None:
        await proxy.close()
    assert "unreachable; retrying" in backend.log_path.read_text(), "the database never refused"
