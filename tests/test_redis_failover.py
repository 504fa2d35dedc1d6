"""Redis failover under load: no report a victim was told was received is lost (issue 14).

The test starts its own Redis primary, a replica and three sentinels from the machine's
`redis-server` (free ports, a temporary directory, every process killed at the end), runs a
node (backend and bot) that reaches Redis through the sentinels, has victims send reports
through the real web chat, and SIGKILLs the primary mid-load. The sentinels promote the
replica; the node's clients follow; victims whose turn failed meanwhile send the same message
again, as they are asked to. Afterwards every report a victim saw confirmed is in the database
exactly once, and reports confirmed after the failover show the workers carried on.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import secrets
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import database
from backend.cases import envelope_of
from backend.core.sealing import open_envelope
from backend.core.settings import Settings
from backend.keyring import KeyRing
from backend.models import Case
from bot.cli.node import BACKEND, BOT, Node
from tests.conftest import (
    FAST_KDF,
    FAST_KDF_ENV,
    FIRST_START_ENV,
    ROOMY_LIMITS_ENV,
    first_start_secret,
)

pytestmark = pytest.mark.faults

SERVICE = "hotline"
VICTIMS = 6
BEFORE_KILL = 8  # confirmed reports before the primary is killed
AFTER_KILL = 8  # and after the failover, to show the workers carry on
LOAD_TIMEOUT_S = 90
UNAVAILABLE = "Something went wrong on our side"
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


async def _until(check: Callable[[], Awaitable[bool]], timeout_s: float, failure: str) -> None:
    for _ in range(int(timeout_s / 0.2)):
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError(failure)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ReplicatedRedis:
    """A primary, a replica and three sentinels, each a `redis-server` process of the test."""

    workdir: Path
    primary_port: int = field(default_factory=_free_port)
    replica_port: int = field(default_factory=_free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [_free_port() for _ in range(3)])
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _start(self, name: str, *args: str) -> None:
        directory = self.workdir / name
        directory.mkdir()
        with (self.workdir / f"{name}.log").open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [REDIS_SERVER, *args], cwd=directory, stdout=log, stderr=log
            )

    def start(self) -> None:
        durable = ["--save", "", "--appendonly", "yes", "--appendfsync", "always"]
        base = ["--bind", "127.0.0.1", "--dir", "."]
        self._start("primary", "--port", str(self.primary_port), *base, *durable)
        self._start(
            "replica",
            "--port",
            str(self.replica_port),
            *base,
            *durable,
            "--replicaof",
            "127.0.0.1",
            str(self.primary_port),
        )
        for n, port in enumerate(self.sentinel_ports):
            config = self.workdir / f"sentinel{n}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} 1000\n"
                f"sentinel failover-timeout {SERVICE} 10000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._start(f"sentinel{n}", str(config), "--sentinel")

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)

    @property
    def sentinels(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    async def ready(self) -> None:
        """Until the replica follows the primary and each sentinel knows both and the others."""
        await _until(self._ready, 30, "the replica and sentinels never came up")

    async def _ready(self) -> bool:
        try:
            async with Redis(port=self.replica_port) as replica:
                link = (await replica.info("replication")).get("master_link_status")
            if link != "up":
                return False
            for port in self.sentinel_ports:
                async with Redis(port=port) as sentinel:
                    state = cast(dict[str, Any], await sentinel.sentinel_master(SERVICE))
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
        except (RedisError, OSError, KeyError):
            return False  # not up yet
        return True

    async def replica_promoted(self) -> bool:
        async with Redis(port=self.sentinel_ports[0]) as sentinel:
            found = cast(
                tuple[str, int] | None, await sentinel.sentinel_get_master_addr_by_name(SERVICE)
            )
        return found is not None and int(found[1]) == self.replica_port


@contextlib.contextmanager
def replicated_redis(workdir: Path) -> Iterator[ReplicatedRedis]:
    workdir.mkdir(parents=True)
    cluster = ReplicatedRedis(workdir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@dataclass
class Load:
    client: TestClient[web.Request, web.Application]
    confirmed: list[str] = field(default_factory=list)
    failed_turns: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def turn(self, token: str, **turn: str) -> dict[str, Any]:
        """One turn, sent again while the answer is "something went wrong", as asked."""
        while True:
            body = await self.once(token, **turn)
            if body is not None:
                return body
            self.failed_turns += 1
            await asyncio.sleep(0.2)

    async def once(self, token: str, **turn: str) -> dict[str, Any] | None:
        """One turn's answer; None for "something went wrong, send it again"."""
        try:
            response = await self.client.post(
                "/chat/api/turn", json={"token": token, "language": "en", **turn}
            )
            body: dict[str, Any] = await response.json()
        except (OSError, ValueError):
            return None
        return body if response.status == 200 and UNAVAILABLE not in json.dumps(body) else None

    async def until_send(self, token: str, marker: str) -> None:
        """A report to the point where only "send" is left."""
        await self.turn(token, text="/start")
        await self.turn(token, button="agree")
        await self.turn(token, button="deepfake")
        await self.turn(token, button="18_plus")
        await self.turn(token, text=marker)

    async def victim(self, n: int) -> None:
        round_ = 0
        while not self.stop.is_set():
            token = secrets.token_urlsafe(32)
            marker = f"failover report {n}-{round_}"
            await self.until_send(token, marker)
            done = await self.turn(token, button="send_now")
            assert "received safely" in done["messages"][0]["text"], done
            self.confirmed.append(marker)
            round_ += 1

    async def until_confirmed(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.confirmed) >= count

        await _until(enough, LOAD_TIMEOUT_S, f"fewer than {count} reports confirmed")


@contextlib.asynccontextmanager
async def node(settings: Settings) -> AsyncIterator[tuple[TestClient[Any, Any], str]]:
    out = io.StringIO()
    async with Node(settings, frozenset({BACKEND, BOT}), out) as running:
        app = await running.build()
        async with TestClient(TestServer(app)) as client:
            yield client, first_start_secret(out.getvalue(), "recovery key")


async def _stored_markers(settings: Settings, recovery_key: str) -> list[str]:
    engine = database.create_engine(settings.database_url)
    try:
        centre = await KeyRing(engine, FAST_KDF).unwrap_with_recovery(recovery_key)
        async with AsyncSession(engine) as session:
            cases = (await session.exec(select(Case))).all()
        markers: list[str] = []
        for case in cases:
            envelope = envelope_of(case)
            answers = json.loads(open_envelope(envelope, centre[envelope.header.key_id]))
            markers.extend(
                v for v in answers["answers"].values() if str(v).startswith("failover report")
            )
        return markers
    finally:
        await engine.dispose()


# Five redis-server processes, a failover (about 3 s of sentinel agreement) and the load around it.
@pytest.mark.timeout(240)
async def test_a_failover_mid_load_loses_no_confirmed_report(tmp_path: Path) -> None:
    with replicated_redis(tmp_path / "redis") as cluster:
        await cluster.ready()
        settings = Settings.from_env(
            {
                "HOTLINE_DATA_DIR": str(tmp_path / "data"),
                "HOTLINE_REDIS_SENTINELS": cluster.sentinels,
                "HOTLINE_REDIS_SENTINEL_SERVICE": SERVICE,
                **FAST_KDF_ENV,
                **FIRST_START_ENV,
                **ROOMY_LIMITS_ENV,
            }
        )
        async with node(settings) as (client, recovery_key):
            load = Load(client)
            # A replica that does not follow (stopped): "received" is not said, since a
            # failover now would promote a replica without the report.
            token = secrets.token_urlsafe(32)
            await load.until_send(token, "failover report lagging")
            cluster.processes["replica"].send_signal(signal.SIGSTOP)
            try:
                assert await load.once(token, button="send_now") is None
            finally:
                cluster.processes["replica"].send_signal(signal.SIGCONT)
            done = await load.turn(token, button="send_now")
            assert "received safely" in done["messages"][0]["text"]
            load.confirmed.append("failover report lagging")

            victims = [asyncio.create_task(load.victim(n)) for n in range(VICTIMS)]
            try:
                await load.until_confirmed(BEFORE_KILL)
                cluster.kill("primary")
                killed_at = len(load.confirmed)
                await _until(cluster.replica_promoted, 30, "the sentinels promoted no replica")
                await load.until_confirmed(killed_at + AFTER_KILL)
            finally:
                load.stop.set()
                await asyncio.gather(*victims, return_exceptions=True)
            assert load.failed_turns > 0, "the failover was felt: some turns were sent again"
            confirmed = list(load.confirmed)

            # Intake, on the promoted replica, stores what is still waiting.
            async def all_stored() -> bool:
                return set(confirmed) <= set(await _stored_markers(settings, recovery_key))

            await _until(all_stored, 30, "a confirmed report never reached the database")
        stored = await _stored_markers(settings, recovery_key)
    for marker in confirmed:
        assert stored.count(marker) == 1, marker
    assert len(stored) == len(set(stored)), "no report stored twice"
