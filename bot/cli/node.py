"""The composition root: wires the backend and the bot into one running process.

It lives in `bot` because only `bot` may import both packages. `hotline up` runs both roles on
the embedded default; `hotline backend` and `hotline bot` run one each for scale-out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TextIO

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import bootstrap, database
from backend.cases import CaseStore
from backend.console import views as console
from backend.console.sessions import ConsoleSessionStore
from backend.core import keys
from backend.core.errors import FlowError, SettingsError
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import Settings
from backend.core.shifts import ShiftBoard
from backend.counselors import CounselorStore
from backend.embedded_redis import EmbeddedRedis
from backend.flows.registry import FlowRegistry
from backend.flows.resources import Directory
from backend.flows.triage import Triage
from backend.intake import Intake, dead_letter_count
from backend.keyring import KeyRing
from backend.login_guard import LoginGuard
from backend.receipts import ReceiptBook
from backend.retention import RetentionJob
from backend.web import make_app
from bot import kakao as kakao_channel
from bot import webchat
from bot.channel import Delivery
from bot.cli.root_secret import load_root_secret
from bot.kakao import KakaoDoor
from bot.live import VictimSide
from bot.relay import RelayWorker
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram import door as telegram_channel
from bot.telegram.door import TelegramConfig, TelegramDoor
from bot.turn_replay import TurnReplay

log = logging.getLogger(__name__)

BACKEND = "backend"
BOT = "bot"


def bind_listener(settings: Settings) -> socket.socket:
    """Take the HTTP port before anything else starts, so a taken port is one clear line."""
    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.http_host, settings.http_port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"HOTLINE_HTTP_PORT: cannot listen on {settings.http_host}:{settings.http_port} "
            f"({exc.strerror})"
        ) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


@dataclass
class Node:
    settings: Settings
    roles: frozenset[str]
    out: TextIO = field(default=sys.stdout)
    _stack: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def build(self) -> web.Application:
        """Start every dependency and return the HTTP app; `async with` the node to stop them."""
        redis = await self._redis()
        engine = await self._engine() if BACKEND in self.roles else None
        app = make_app(redis, engine, trusted_proxies=self.settings.trusted_proxies)
        published: tuple[X25519PublicKey, bytes] | None = None
        if engine is not None:
            published = await self._backend(app, redis, engine)
        if BOT in self.roles:
            await self._bot(app, redis, published)
        return app

    async def run(self, listener: socket.socket, stop: asyncio.Event) -> None:
        async with self:
            app = await self.build()
            runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await runner.setup()
            self._stack.push_async_callback(runner.cleanup)
            await web.SockSite(runner, listener).start()
            self._announce(listener)
            await stop.wait()
            log.info("stopping")

    async def _redis(self) -> Redis:
        url = self.settings.redis_url
        if url is None:
            embedded = EmbeddedRedis(self.settings.data_dir / "redis")
            await embedded.start()
            self._stack.push_async_callback(embedded.stop)
            url = embedded.url
        redis = Redis.from_url(url, health_check_interval=30)
        self._stack.push_async_callback(redis.aclose)
        try:
            await redis.ping()
        except Exception as exc:
            raise SettingsError(f"HOTLINE_REDIS_URL: cannot reach Redis ({exc})") from None
        return redis

    async def _engine(self) -> AsyncEngine:
        engine = database.create_engine(self.settings.database_url)
        self._stack.push_async_callback(engine.dispose)
        try:
            await database.migrate(engine)
        except Exception as exc:
            reason = str(exc).splitlines()[0]
            raise SettingsError(
                f"HOTLINE_DATABASE_URL: cannot use the database ({reason})"
            ) from None
        return engine

    async def _backend(
        self, app: web.Application, redis: Redis, engine: AsyncEngine
    ) -> tuple[X25519PublicKey, bytes]:
        """Start the centre; what it publishes for the bot: the public key and receipt salt."""
        cases = CaseStore(engine)
        counselors = CounselorStore(engine, self.settings.kdf)
        keyring = KeyRing(engine, self.settings.kdf)
        first = await bootstrap.ensure_initialised(counselors, keyring, self.settings.data_dir)
        if first is not None:
            self._print_first_start(first)
        active = await keyring.active()
        if active is None:  # pragma: no cover - ensure_initialised made one
            raise SettingsError(
                "HOTLINE_DATABASE_URL: the database has counselors but no centre key"
            )
        console.add_routes(
            app,
            cases=cases,
            counselors=counselors,
            keyring=keyring,
            sessions=ConsoleSessionStore(redis),
            login_guard=LoginGuard(redis, self.settings.login),
            dead_letters=functools.partial(dead_letter_count, redis),
            pending_sign_ins=ConsoleSessionStore(redis, pending=True),
            require_totp=self.settings.login.require_totp,
            services=self._services(),
            sla=self.settings.sla,
            receipts=ReceiptBook(engine, self.settings.kdf),
            default_language=self.settings.console_language,
            triage=self._triage(),
            caseload_cap=self.settings.caseload_cap,
        )
        intake = Intake(redis, cases, f"{self.settings.node_name}-intake")
        task = asyncio.create_task(intake.run(), name="intake")
        self._stack.push_async_callback(_stop_intake, intake, task)
        retention = RetentionJob(cases, self.settings.retention, redis)
        purging = asyncio.create_task(retention.run(), name="retention")
        self._stack.push_async_callback(_stop_retention, retention, purging)
        salt = await ReceiptBook(engine, self.settings.kdf).salt()
        bootstrap.write_receipt_salt(self.settings.data_dir, salt)
        return active.public_key, salt

    def _triage(self) -> Triage:
        """The flows' risk triage, for the alerts of the console's live chat."""
        try:
            return Triage.load(self.settings.flows_dir / "triage.yaml")
        except FlowError as exc:
            raise SettingsError(f"HOTLINE_FLOWS_DIR: {exc}") from None

    def _services(self) -> Directory:
        """The resource directory referrals are recorded against (the flows' own)."""
        try:
            return Directory.load(self.settings.flows_dir / "resources.yaml")
        except FlowError as exc:
            raise SettingsError(f"HOTLINE_FLOWS_DIR: {exc}") from None

    async def _bot(
        self, app: web.Application, redis: Redis, published: tuple[X25519PublicKey, bytes] | None
    ) -> None:
        center_key, salt = published if published is not None else (None, None)
        if salt is None:
            salt = self._published_receipt_salt()
        if center_key is None:
            encoded = self.settings.center_public_key or bootstrap.read_public_key(
                self.settings.data_dir
            )
            if encoded is None:
                raise SettingsError(
                    "HOTLINE_CENTER_PUBLIC_KEY: not set, and no centre key in HOTLINE_DATA_DIR; "
                    "start the backend once first"
                )
            try:
                center_key = keys.decode_public_key(encoded)
            except ValueError:
                raise SettingsError("HOTLINE_CENTER_PUBLIC_KEY: not a valid public key") from None
        try:
            flows = FlowRegistry.load(self.settings.flows_dir)
        except FlowError as exc:
            raise SettingsError(f"HOTLINE_FLOWS_DIR: {exc}") from None
        root_secret = load_root_secret(self.settings)
        pseudonymizer = Pseudonymizer(root_secret)
        victims = VictimSide(
            redis,
            root_secret,
            self.settings.session_ttl_s,
            center_key,
            holding_channels={webchat.CHANNEL, kakao_channel.CHANNEL},
        )
        runtime = ConversationRuntime(
            redis,
            flows,
            SessionStore(redis, root_secret, self.settings.session_ttl_s),
            ReportSender(redis, center_key),
            receipts=ReceiptHasher(salt, self.settings.kdf),
            live=victims,
            shifts=ShiftBoard(redis),
        )
        replay = TurnReplay(redis, root_secret)
        webchat.add_routes(app, runtime, pseudonymizer, replay, victims.held)
        # Where the relay carries a counselor's words: doors that cannot push hold them.
        doors: dict[str, Delivery] = {
            webchat.CHANNEL: victims.held,
            kakao_channel.CHANNEL: victims.held,
        }
        if self.settings.kakao is not None:
            kakao = KakaoDoor(self.settings.kakao, runtime, pseudonymizer, replay, victims)
            kakao.add_routes(app)
            self._stack.push_async_callback(kakao.close)
        if self.settings.telegram_token is not None:
            door = TelegramDoor(
                TelegramConfig.from_settings(self.settings),
                runtime=runtime,
                pseudonymizer=pseudonymizer,
                redis=redis,
                root_secret=root_secret,
                session_ttl_s=self.settings.session_ttl_s,
            )
            if door.webhook_path is not None:
                # Telegram POSTs to the public URL's path; the reverse proxy forwards it here.
                app.router.add_post(door.webhook_path, door.handle_webhook)
            await door.start()
            self._stack.push_async_callback(door.stop)
            doors[telegram_channel.CHANNEL] = door
        # Started after the doors it delivers through, so it is stopped before them.
        relay = RelayWorker(redis, runtime, victims, doors, f"{self.settings.node_name}-relay")
        relaying = asyncio.create_task(relay.run(), name="relay")
        self._stack.push_async_callback(_stop_relay, relay, relaying)

    def _published_receipt_salt(self) -> bytes:
        encoded = self.settings.receipt_salt or bootstrap.read_receipt_salt(self.settings.data_dir)
        if encoded is None:
            raise SettingsError(
                "HOTLINE_RECEIPT_SALT: not set, and no receipt salt in HOTLINE_DATA_DIR; "
                "start the backend once first"
            )
        try:
            return bytes.fromhex(encoded)
        except ValueError:
            raise SettingsError("HOTLINE_RECEIPT_SALT: not hexadecimal") from None

    def _announce(self, listener: socket.socket) -> None:
        host, port = listener.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        base = f"http://{shown}:{port}"
        print(f"hotline is running on {base}", file=self.out)
        if BOT in self.roles:
            print(f"  victim web chat:   {base}/chat", file=self.out)
        if BACKEND in self.roles:
            print(f"  counselor console: {base}/console", file=self.out)
        print("Press Ctrl-C to stop.", file=self.out, flush=True)

    def _print_first_start(self, first: bootstrap.FirstStart) -> None:
        print(bootstrap.announcement(first), file=self.out, flush=True)


async def _stop_intake(intake: Intake, task: asyncio.Task[None]) -> None:
    intake.stop()
    await task


async def _stop_relay(relay: RelayWorker, task: asyncio.Task[None]) -> None:
    relay.stop()
    await task


async def _stop_retention(retention: RetentionJob, task: asyncio.Task[None]) -> None:
    retention.stop()
    await task


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        yield stop
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def serve(settings: Settings, roles: frozenset[str], out: TextIO = sys.stdout) -> None:
    listener = bind_listener(settings)
    async with stop_on_signals() as stop:
        await Node(settings, roles, out).run(listener, stop)
