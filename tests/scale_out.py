"""A scaled-out centre as real processes, and victims reporting to it (issue 14).

Two `hotline backend` and three `hotline bot` processes share one database and one Redis; the
bots take Telegram's webhook and the web chat behind `RoundRobinProxy` (the load balancer, in
the test); Telegram is `tests/fake_telegram.py` over real HTTP, which records every message
sent and when. `Load` runs reports through both doors, each turn's reply checked against the
flow's texts, and keeps what each victim was told (its receipt code). Used by
tests/test_scale_out.py (a short run in CI) and by `HOTLINE_SCALE_OUT_REPORTS=1000` for the
issue's full thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import bootstrap
from backend.cases import envelope_of
from backend.core.sealing import open_envelope
from backend.keyring import KeyRing
from backend.models import Case
from tests.conftest import (
    ENGLISH_CONSOLE_ENV,
    FAST_KDF,
    FAST_KDF_ENV,
    FIRST_START_ENV,
    first_start_secret,
)
from tests.fake_telegram import ApiCall, FakeTelegram, JSONDict
from tests.telegram_support import HAPPY_PATH, TOKEN, WEBHOOK_SECRET, matches

HOTLINE = str(Path(sys.executable).parent / "hotline")
# What the bots tell Telegram (a webhook URL must be https); the fake POSTs to the proxy instead,
# as a TLS-terminating load balancer at that name would pass it on.
PUBLIC_WEBHOOK_URL = "https://hotline.test/telegram/hook"
READY_WITHIN_S = 60.0
TURN_WITHIN_S = 120.0
MARKER = "scale-out report"
RECEIPT_CODE = re.compile(r"\b[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}\b")
# Far above what the load sends from 127.0.0.1 (every victim comes through the proxy).
LIMITS_ENV = {
    "HOTLINE_LIMIT_PER_SENDER": "100000/minute",
    "HOTLINE_LIMIT_PER_ADDRESS": "1000000/minute",
    "HOTLINE_LIMIT_NEW_CONVERSATIONS_PER_ADDRESS": "1000000/minute",
}
# The report flow's shortest path to a receipt, on the web chat (the same as Telegram's).
WEB_PATH: list[tuple[dict[str, str], list[str]]] = [
    ({"text": "/start"}, ["safety.welcome", "report.consent"]),
    ({"button": "agree"}, ["report.category"]),
    ({"button": "deepfake"}, ["report.age"]),
    ({"button": "18_plus"}, ["report.details"]),
    ({"text": "{marker}"}, ["report.when"]),
    ({"button": "send_now"}, ["report.received", "feedback.question"]),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}


@dataclass
class Worker:
    """One `hotline backend` or `hotline bot` process, on a port and node name it keeps across
    restarts (a restarted backend drains its own pending entries at once)."""

    role: str
    name: str
    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = self.env | {"HOTLINE_HTTP_PORT": str(self.port), "HOTLINE_NODE_NAME": self.name}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen([HOTLINE, self.role], env=env, stdout=log, stderr=log)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """After `terminate`: until the process ended (killed if it takes over 30 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    async def ready(self, http: aiohttp.ClientSession) -> None:
        """Until `/readyz` answers 200; fails at once if the process ended."""
        deadline = time.monotonic() + READY_WITHIN_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(self.base + "/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.name} never ready:\n{self.log.read_text()[-3000:]}")


class RoundRobinProxy:
    """The load balancer in front of the bot workers: each request to the next worker; a worker
    that refuses the connection (dead, restarting) is skipped, as nginx's `proxy_next_upstream
    error` does; one that fails mid-request is a 502 (the client sends it again)."""

    def __init__(self, upstreams: list[str]) -> None:
        self._next = itertools.cycle(upstreams)
        self._count = len(upstreams)
        self.port = free_port()
        self.refused = 0  # connections a dead worker refused
        self.broken = 0  # requests a worker died in
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=90)
        )
        app = web.Application(client_max_size=2**22)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._http is not None
        body = await request.read()
        passed = ("Content-Type", "X-Telegram-Bot-Api-Secret-Token", "Accept-Language")
        headers = {name: request.headers[name] for name in passed if name in request.headers}
        for _ in range(self._count):
            upstream = next(self._next)
            try:
                async with self._http.request(
                    request.method, upstream + request.path_qs, data=body, headers=headers
                ) as response:
                    payload = await response.read()
                    kept = ("Content-Type", "Retry-After")
                    back = {k: response.headers[k] for k in kept if k in response.headers}
                    return web.Response(status=response.status, body=payload, headers=back)
            except aiohttp.ClientConnectorError:
                self.refused += 1
            except (aiohttp.ClientError, TimeoutError):
                self.broken += 1
                return web.Response(status=502)
        return web.Response(status=502)


class RecordingTelegram(FakeTelegram):
    """The fake Bot API, indexed by chat for the victims, and delivering webhooks through the
    proxy: the bots register the public https URL, which the load balancer stands for."""

    def __init__(self, token: str) -> None:
        super().__init__(token, max_hold_s=0.3)
        self.sends: dict[int, list[ApiCall]] = defaultdict(list)
        self.proxy_base = ""

    async def _record(self, call: ApiCall) -> None:
        if call.method == "sendMessage" and call.result is not None:
            self.sends[int(call.params["chat_id"])].append(call)
        await super()._record(call)

    async def _set_webhook(self, params: dict[str, str]) -> bool:
        done = await super()._set_webhook(params)
        assert params["url"] == PUBLIC_WEBHOOK_URL, params["url"]
        self.webhook_url = self.proxy_base + urlsplit(params["url"]).path
        return done

    def sent_at(self) -> list[float]:
        """When each message was sent (the server's answer), in order."""
        return sorted(call.at for calls in self.sends.values() for call in calls)


def most_in_window(times: list[float], window_s: float) -> int:
    """The most sends in any window of `window_s` seconds (times sorted)."""
    most, start = 0, 0
    for end, at in enumerate(times):
        while at - times[start] >= window_s:
            start += 1
        most = max(most, end - start + 1)
    return most


@dataclass
class Centre:
    """The deployment: backends, bots, the proxy and the fake Bot API, on one database/Redis."""

    workdir: Path
    database_url: str
    redis_url: str
    telegram: RecordingTelegram
    backends: list[Worker] = field(default_factory=list)
    bots: list[Worker] = field(default_factory=list)
    proxy: RoundRobinProxy | None = None
    recovery_key: str = ""
    receipt_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    bot_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def _env(self, name: str) -> dict[str, str]:
        data_dir = self.workdir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        return (
            _clean_environment()
            | FAST_KDF_ENV
            | ENGLISH_CONSOLE_ENV
            | LIMITS_ENV
            | {
                "HOTLINE_DATA_DIR": str(data_dir),
                "HOTLINE_REDIS_URL": self.redis_url,
                "HOTLINE_RECEIPT_SECRET": self.receipt_secret,
                "HOTLINE_HTTP_HOST": "127.0.0.1",
            }
        )

    async def start(self, http: aiohttp.ClientSession, backends: int, bots: int) -> None:
        # Every backend at once on the empty database: one makes the centre under its lock.
        for n in range(backends):
            env = self._env(f"backend-{n}") | FIRST_START_ENV
            env["HOTLINE_DATABASE_URL"] = self.database_url
            self.backends.append(Worker("backend", f"backend-{n}", env, self.workdir / f"b{n}.log"))
        for worker in self.backends:
            worker.start()
        await asyncio.gather(*(worker.ready(http) for worker in self.backends))
        printed = [w.log.read_text() for w in self.backends if "recovery key" in w.log.read_text()]
        assert len(printed) == 1, "one backend made the centre"
        self.recovery_key = first_start_secret(printed[0], "recovery key")
        first_dir = self.workdir / "backend-0"
        public_key = bootstrap.read_public_key(first_dir)
        salt = bootstrap.read_receipt_salt(first_dir)
        assert public_key is not None and salt is not None
        self.proxy = RoundRobinProxy([])
        for n in range(bots):
            env = self._env(f"bot-{n}") | {
                "HOTLINE_BOT_SECRET": self.bot_secret,
                "HOTLINE_CENTER_PUBLIC_KEY": public_key,
                "HOTLINE_RECEIPT_SALT": salt,
                "HOTLINE_TELEGRAM_TOKEN": self.telegram.token,
                "HOTLINE_TELEGRAM_BASE_URL": self.telegram.base_url,
                "HOTLINE_TELEGRAM_WEBHOOK_URL": PUBLIC_WEBHOOK_URL,
                "HOTLINE_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                # A dead worker's stepped turns are sent by another this soon (its leases).
                "HOTLINE_TELEGRAM_OUTGOING_LEASE_S": "3",
            }
            self.bots.append(Worker("bot", f"bot-{n}", env, self.workdir / f"w{n}.log"))
        self.proxy = RoundRobinProxy([bot.base for bot in self.bots])
        self.telegram.proxy_base = self.proxy.base
        await self.proxy.start()
        for worker in self.bots:
            worker.start()
        await asyncio.gather(*(worker.ready(http) for worker in self.bots))

    async def stop(self) -> None:
        workers = [*self.bots, *self.backends]
        for worker in workers:  # all at once: each takes a moment to stop cleanly
            worker.terminate()
        for worker in workers:
            worker.stop()
        if self.proxy is not None:
            await self.proxy.stop()

    async def stored_markers(self, engine: AsyncEngine) -> dict[str, list[str]]:
        """Each report's marker, opened with the recovery key: the case ids that hold it."""
        centre = await KeyRing(engine, FAST_KDF).unwrap_with_recovery(self.recovery_key)
        async with AsyncSession(engine) as session:
            cases = (await session.exec(select(Case))).all()
        found: dict[str, list[str]] = defaultdict(list)
        for case in cases:
            envelope = envelope_of(case)
            body = json.loads(open_envelope(envelope, centre[envelope.header.key_id]))
            found[str(body["answers"].get("details", ""))].append(case.id)
        return found


@contextlib.asynccontextmanager
async def running_centre(
    workdir: Path, database_url: str, redis_url: str, *, backends: int = 2, bots: int = 3
) -> AsyncIterator[tuple[Centre, aiohttp.ClientSession]]:
    telegram = RecordingTelegram(TOKEN)
    await telegram.start()
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
        ) as http:
            centre = Centre(workdir, database_url, redis_url, telegram)
            try:
                await centre.start(http, backends, bots)
                yield centre, http
            finally:
                await centre.stop()
    finally:
        await telegram.stop()


@dataclass
class Load:
    """Victims reporting through both doors; what each was told."""

    centre: Centre
    http: aiohttp.ClientSession
    # marker -> receipt code, for every report the victim saw confirmed.
    confirmed: dict[str, str] = field(default_factory=dict)
    web_retries: int = 0  # web chat turns sent again (502, 503, a lost connection)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def web_turn(self, token: str, body: dict[str, str]) -> dict[str, Any]:
        """One turn, sent again with the same turn id until answered, as the page does."""
        assert self.centre.proxy is not None
        payload = {"token": token, "language": "en", "turn": secrets.token_urlsafe(16), **body}
        deadline = time.monotonic() + TURN_WITHIN_S
        while time.monotonic() < deadline:
            try:
                async with self.http.post(
                    self.centre.proxy.base + "/chat/api/turn", json=payload
                ) as response:
                    if response.status == 200:
                        answer: dict[str, Any] = await response.json()
                        return answer
                    assert response.status in (502, 503), (response.status, await response.text())
            except aiohttp.ClientError:
                pass
            self.web_retries += 1
            await asyncio.sleep(0.2)
        raise AssertionError(f"a web chat turn got no answer within {TURN_WITHIN_S} s")

    async def web_report(self) -> None:
        marker = f"{MARKER} web {next(self._numbers)}"
        token = secrets.token_urlsafe(32)
        answer: dict[str, Any] = {}
        for body, keys in WEB_PATH:
            sent = {k: v.replace("{marker}", marker) for k, v in body.items()}
            answer = await self.web_turn(token, sent)
            said = [m["text"] for m in answer["messages"]]
            assert len(said) == len(keys), (sent, said)
            assert all(matches(t, k) for t, k in zip(said, keys, strict=True)), (sent, said)
        receipt = answer["messages"][0].get("receipt")
        assert isinstance(receipt, str) and RECEIPT_CODE.fullmatch(receipt), answer
        self.confirmed[marker] = receipt

    async def _replies(
        self, chat_id: int, start: int, keys: list[str]
    ) -> tuple[int, list[ApiCall]]:
        """Until the chat's messages after `start` hold `keys` in order (a message sent twice,
        after a redelivered update, is passed over); the new start and the messages."""
        deadline = time.monotonic() + TURN_WITHIN_S
        while time.monotonic() < deadline:
            sends = self.centre.telegram.sends[chat_id]
            found: list[ApiCall] = []
            at = start
            while at < len(sends) and len(found) < len(keys):
                if matches(sends[at].params["text"], keys[len(found)]):
                    found.append(sends[at])
                at += 1
            if len(found) == len(keys):
                return at, found
            await asyncio.sleep(0.05)
        said = [c.params["text"][:40] for c in self.centre.telegram.sends[chat_id][start:]]
        raise AssertionError(f"no {keys} within {TURN_WITHIN_S} s; the chat got {said}")

    async def telegram_report(self) -> None:
        number = next(self._numbers)
        marker = f"{MARKER} telegram {number}"
        telegram = self.centre.telegram
        user = telegram.user(10_000_000 + number, "Victim", "en")
        chat = telegram.private_chat(user)
        start = 0
        said: list[ApiCall] = []
        for action, value, keys in HAPPY_PATH:
            if action == "say":
                await telegram.send_text(user, chat, value if value == "/start" else marker)
            else:
                assert said and value in said[-1].callback_data()
                message: JSONDict = said[-1].result
                await telegram.press(user, message, value)
            start, said = await self._replies(chat["id"], start, keys)
        received = said[0].params["text"]
        code = RECEIPT_CODE.search(received)
        assert code is not None, received
        self.confirmed[marker] = code.group(0)

    async def lane(self, door: str, reports: int) -> None:
        for _ in range(reports):
            await (self.web_report() if door == "web" else self.telegram_report())


def split(total: int, lanes: int) -> list[int]:
    """`total` reports over `lanes` lanes, as even as it goes."""
    return [total // lanes + (1 if n < total % lanes else 0) for n in range(lanes)]
