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
from typing import Protocol, TextIO

from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import bootstrap, database, redis_pool
from backend.cases import CaseStore
from backend.centre_gauges import CentreGauges
from backend.console import canned_responses, published_bundle
from backend.console import views as console
from backend.console.published_bundle import ConsoleBundle
from backend.console.sessions import ConsoleSessionStore
from backend.core import keys
from backend.core.bundle_mirror import MirrorReader
from backend.core.errors import FlowError, SettingsError
from backend.core.metrics import Metrics, Refresher, metrics_app
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.receipt_secret import check_shared, load_receipt_secret
from backend.core.redis_keys import FLOWS_CHECK_S
from backend.core.settings import FIRST_START_AUTO, FIRST_START_PRINT, Settings
from backend.core.shifts import ShiftBoard
from backend.counselors import CounselorStore
from backend.data_dir_lock import DataDirLock
from backend.embedded_redis import EmbeddedRedis
from backend.flow_versions import FlowVersionStore
from backend.host_check import AllowedHosts
from backend.intake import Intake, dead_letter_count
from backend.kdf_slots import KdfSlots
from backend.keyring import KeyRing
from backend.login_guard import LoginGuard
from backend.published_flows import PublishedFlows, stop_listening
from backend.readiness import readiness_key
from backend.receipts import ReceiptBook
from backend.retention import RetentionJob
from backend.transcript_archive import TranscriptArchive
from backend.web import make_app
from bot import kakao as kakao_channel
from bot import webchat
from bot.channel import Delivery
from bot.cli.root_secret import load_root_secret
from bot.inbound_limits import LIMITS_POOL, InboundLimits
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
# How long to wait for a sentinel's answer before asking the next one.
SENTINEL_TIMEOUT_S = 2.0


class Stoppable(Protocol):
    """A loop the node runs in a task (a stream consumer, a periodic job): told to stop, it
    ends after its current step."""

    def stop(self) -> None: ...


def bind_listener(
    settings: Settings, port: int | None = None, name: str = "HOTLINE_HTTP_PORT"
) -> socket.socket:
    """Take the HTTP port (or `port`, named `name`) before anything else starts, so a taken
    port is one clear line."""
    port = settings.http_port if port is None else port
    family = socket.AF_INET6 if ":" in settings.http_host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.http_host, port))
    except OSError as exc:
        sock.close()
        raise SettingsError(
            f"{name}: cannot listen on {settings.http_host}:{port} ({exc.strerror})"
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
    # This node's instruments on a registry of its own (no process-wide default registry).
    metrics: Metrics = field(default_factory=Metrics)
    # What a scrape reads first: the centre's gauges, on a backend node.
    _refreshers: list[Refresher] = field(default_factory=list)
    # Where this node's Redis is (the embedded one's socket once started).
    _redis_url: str = ""
    # The stream consumers and jobs this node runs, each stopped by its own callback in turn.
    _stoppable: list[Stoppable] = field(default_factory=list)

    async def __aenter__(self) -> Node:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def build(self) -> web.Application:
        """Start every dependency and return the HTTP app; `async with` the node to stop them."""
        redis = await self._redis()
        await check_shared(redis, load_receipt_secret(self.settings))
        engine = await self._engine() if BACKEND in self.roles else None
        allowed = AllowedHosts.of(
            self.settings.http_host, self.settings.public_url, self.settings.telegram_webhook_url
        )
        app = make_app(
            redis, engine, trusted_proxies=self.settings.trusted_proxies, allowed_hosts=allowed
        )
        flows = await self._published_flows(redis, engine)
        published: tuple[X25519PublicKey, bytes] | None = None
        if engine is not None:
            published = await self._backend(app, redis, engine, flows)
        if BOT in self.roles:
            await self._bot(app, redis, published, flows)
        # Run first at shutdown (after the HTTP server, pushed later): every consumer is told
        # to stop at once, so their blocking reads (a second each) end together, not in turn.
        self._stack.callback(self._stop_all, list(self._stoppable))
        return app

    @staticmethod
    def _stop_all(stoppable: list[Stoppable]) -> None:
        for each in stoppable:
            each.stop()

    async def _published_flows(self, redis: Redis, engine: AsyncEngine | None) -> PublishedFlows:
        """The published flows, followed. A backend keeps them (SQL, the shipped directory as
        the first version) and mirrors them to Redis, which every role reads (issue 15)."""
        try:
            if engine is not None:
                store = FlowVersionStore(
                    engine, redis, approval=self.settings.flows_publish_approval
                )
                await store.seed(self.settings.flows_dir, canned_responses.shipped())
                await store.sync_mirror()
                mirroring = asyncio.create_task(_keep_mirrored(store), name="flows-mirror")
                self._stack.push_async_callback(_cancel, mirroring)
            flows = await PublishedFlows.open(MirrorReader(redis))
        except FlowError as exc:
            raise SettingsError(f"HOTLINE_FLOWS_DIR: {exc}") from None
        listening = asyncio.create_task(flows.listen(redis), name="flows")
        self._stack.push_async_callback(stop_listening, flows, listening)
        return flows

    def metrics_app(self) -> web.Application:
        """`/metrics` for Prometheus, served on `HOTLINE_METRICS_PORT` (after `build`)."""
        return metrics_app(self.metrics.registry, self._refreshers)

    async def run(
        self,
        listener: socket.socket,
        stop: asyncio.Event,
        metrics_listener: socket.socket | None = None,
    ) -> None:
        async with self:
            app = await self.build()
            await self._serve(app, listener)
            if metrics_listener is not None:
                await self._serve(self.metrics_app(), metrics_listener)
            self._announce(listener, metrics_listener)
            await stop.wait()
            log.info("stopping")

    async def _serve(self, app: web.Application, listener: socket.socket) -> None:
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        await web.SockSite(runner, listener).start()

    async def _redis(self) -> Redis:
        if self.settings.redis_sentinels:
            return await self._sentinel_redis()
        url = self.settings.redis_url
        if url is None:
            # Before the embedded Redis starts: a second process would stop the first's.
            lock = DataDirLock(self.settings.data_dir)
            lock.acquire()
            self._stack.callback(lock.release)
            embedded = EmbeddedRedis(self.settings.data_dir / "redis")
            await embedded.start()
            self._stack.push_async_callback(embedded.stop)
            url = embedded.url
        self._redis_url = url
        redis = redis_pool.connect(url, self.settings.redis_pool)
        self._stack.push_async_callback(redis.aclose)
        try:
            await redis.ping()
        except Exception as exc:
            raise SettingsError(f"HOTLINE_REDIS_URL: cannot reach Redis ({exc})") from None
        return redis

    async def _sentinel_redis(self) -> Redis:
        """The primary that the sentinels name, followed through failovers: redis-py's
        Sentinel pool asks them again whenever a connection to the primary fails."""
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            list(self.settings.redis_sentinels),
            sentinel_kwargs={"socket_timeout": SENTINEL_TIMEOUT_S},
        )
        redis: Redis = sentinel.master_for(
            self.settings.redis_sentinel_service, redis_class=Redis, health_check_interval=30
        )
        self._stack.push_async_callback(redis.aclose)
        try:
            await redis.ping()
        except Exception as exc:
            raise SettingsError(
                f"HOTLINE_REDIS_SENTINELS: no primary for {self.settings.redis_sentinel_service!r}"
                f" ({exc})"
            ) from None
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
        self, app: web.Application, redis: Redis, engine: AsyncEngine, flows: PublishedFlows
    ) -> tuple[X25519PublicKey, bytes]:
        """Start the centre; what it publishes for the bot: the public key and receipt salt."""
        cases = CaseStore(engine)
        slots = KdfSlots(self.settings.kdf_concurrency)
        counselors = CounselorStore(engine, self.settings.kdf, slots)
        keyring = KeyRing(engine, self.settings.kdf, slots)
        first = await bootstrap.ensure_initialised(
            engine, self.settings.kdf, self.settings.data_dir, create=self._may_print_secrets()
        )
        if first is not None:
            self._print_first_start(first)
        active = await keyring.active()
        if active is None:  # pragma: no cover - ensure_initialised made one
            raise SettingsError(
                "HOTLINE_DATABASE_URL: the database has counselors but no centre key"
            )
        app[readiness_key].add("flows", functools.partial(_flows_loaded, flows))
        console.add_routes(
            app,
            cases=cases,
            counselors=counselors,
            keyring=keyring,
            sessions=ConsoleSessionStore(redis, lifetime=self.settings.login),
            login_guard=LoginGuard(redis, self.settings.login),
            dead_letters=functools.partial(dead_letter_count, redis),
            pending_sign_ins=ConsoleSessionStore(redis, pending=True),
            require_totp=self.settings.login.require_totp,
            bundle=self._console_bundle(flows),
            flows_publish_approval=self.settings.flows_publish_approval,
            sla=self.settings.sla,
            receipts=self._receipt_book(engine),
            time_zone=self.settings.time_zone,
            default_language=self.settings.console_language,
            # The published flows' triage as of this start (the alerts' self-harm flags).
            triage=flows.entry().triage,
            caseload_cap=self.settings.caseload_cap,
        )
        block_ms = self.settings.stream_block_ms
        intake = Intake(redis, cases, f"{self.settings.node_name}-intake", block_ms=block_ms)
        task = asyncio.create_task(intake.run(), name="intake")
        self._stoppable.append(intake)
        self._stack.push_async_callback(_stop_intake, intake, task)
        archive = TranscriptArchive(
            redis, engine, f"{self.settings.node_name}-archive", block_ms=block_ms
        )
        archiving = asyncio.create_task(archive.run(), name="transcript-archive")
        self._stoppable.append(archive)
        self._stack.push_async_callback(_stop_archive, archive, archiving)
        retention = RetentionJob(cases, self.settings.retention, redis)
        purging = asyncio.create_task(retention.run(), name="retention")
        self._stoppable.append(retention)
        self._stack.push_async_callback(_stop_retention, retention, purging)
        salt = await self._receipt_book(engine).salt()
        bootstrap.write_receipt_salt(self.settings.data_dir, salt)
        gauges = CentreGauges(
            self.metrics.registry, redis, cases, ShiftBoard(redis), self.settings.sla
        )
        self._refreshers.append(gauges.refresh)
        return active.public_key, salt

    def _receipt_book(self, engine: AsyncEngine) -> ReceiptBook:
        return ReceiptBook(engine, self.settings.kdf, load_receipt_secret(self.settings))

    def _console_bundle(self, flows: PublishedFlows) -> ConsoleBundle:
        """The resource directory referrals are recorded against and the canned responses: the
        published flows' own, followed when the pointer moves."""
        try:
            canned = published_bundle.canned_of(flows.files)
        except ValueError as exc:
            raise SettingsError(f"published flows: {exc}") from None
        bundle = ConsoleBundle(
            flows.entry().directory, canned or canned_responses.load(canned_responses.shipped())
        )
        flows.listeners.append(lambda f: bundle.follow(f.files, f.entry().directory))
        return bundle

    async def _bot(
        self,
        app: web.Application,
        redis: Redis,
        published: tuple[X25519PublicKey, bytes] | None,
        flows: PublishedFlows,
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
        root_secret = load_root_secret(self.settings)
        pseudonymizer = Pseudonymizer(root_secret)
        victims = VictimSide(
            redis,
            root_secret,
            self.settings.session_ttl_s,
            center_key,
            holding_channels={webchat.CHANNEL, kakao_channel.CHANNEL},
        )
        # The inbound limits count on a small pool of their own: a flood's refusals wait there,
        # never for the connections victims' turns need, and a turn's count never starves them.
        # Through sentinels there is no URL to open a second pool on: the limits share the
        # sentinel-managed client, which follows failovers.
        limits_redis = redis
        if not self.settings.redis_sentinels:
            limits_redis = redis_pool.connect(self._redis_url, LIMITS_POOL)
            self._stack.push_async_callback(limits_redis.aclose)
        runtime = ConversationRuntime(
            redis,
            flows,
            SessionStore(redis, root_secret, self.settings.session_ttl_s),
            # With sentinels there are replicas: "received" waits until one has the report.
            ReportSender(redis, center_key, replicated=bool(self.settings.redis_sentinels)),
            receipts=ReceiptHasher(load_receipt_secret(self.settings), salt, self.settings.kdf),
            live=victims,
            shifts=ShiftBoard(redis),
            limits=InboundLimits(limits_redis, root_secret, self.settings.inbound_limits),
            metrics=self.metrics,
        )
        ready = app[readiness_key]
        ready.add("flows", functools.partial(_flows_loaded, flows))
        ready.add("centre_key", functools.partial(_loaded, center_key is not None))
        replay = TurnReplay(redis, root_secret)
        webchat.add_routes(
            app,
            runtime,
            pseudonymizer,
            replay,
            victims.held,
            poll_wait_s=self.settings.webchat_poll_wait_s,
        )
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
        relay = RelayWorker(
            redis,
            runtime,
            victims,
            doors,
            f"{self.settings.node_name}-relay",
            block_ms=self.settings.stream_block_ms,
        )
        relaying = asyncio.create_task(relay.run(), name="relay")
        self._stoppable.append(relay)
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

    def _announce(self, listener: socket.socket, metrics: socket.socket | None) -> None:
        base = _base_url(listener)
        print(f"hotline is running on {base}", file=self.out)
        if BOT in self.roles:
            print(f"  victim web chat:   {base}/chat", file=self.out)
        if BACKEND in self.roles:
            print(f"  counselor console: {base}/console", file=self.out)
        if metrics is not None:
            print(f"  metrics:           {_base_url(metrics)}/metrics", file=self.out)
        print("Press Ctrl-C to stop.", file=self.out, flush=True)

    def _may_print_secrets(self) -> bool:
        """Whether this start may create the centre, printing its secrets on `out` (issue 14:
        in a container, standard output goes to the log collector)."""
        if self.settings.first_start == FIRST_START_AUTO:
            return self.out.isatty()
        return self.settings.first_start == FIRST_START_PRINT

    def _print_first_start(self, first: bootstrap.FirstStart) -> None:
        print(bootstrap.announcement(first), file=self.out, flush=True)


def _base_url(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


async def _loaded(present: bool) -> bool:
    """A readiness check for what this node loaded at start and keeps for its life."""
    return present


async def _flows_loaded(flows: PublishedFlows) -> bool:
    return bool(flows.entry().flows)


async def _keep_mirrored(store: FlowVersionStore) -> None:
    """The published versions in Redis as SQL has them: a publish made without Redis (the CLI
    on another host) or a Redis that lost its data reaches the workers within seconds."""
    while True:
        await asyncio.sleep(FLOWS_CHECK_S)
        try:
            if await store.sync_mirror():
                log.info("flows mirror brought up to date")
        except (RedisError, OSError, SQLAlchemyError):
            log.warning("flows mirror not checked (redis or the database unavailable)")


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _stop_intake(intake: Intake, task: asyncio.Task[None]) -> None:
    intake.stop()
    await task


async def _stop_archive(archive: TranscriptArchive, task: asyncio.Task[None]) -> None:
    archive.stop()
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
    metrics_listener = None
    if settings.metrics_port is not None:
        metrics_listener = bind_listener(settings, settings.metrics_port, "HOTLINE_METRICS_PORT")
    async with stop_on_signals() as stop:
        await Node(settings, roles, out).run(listener, stop, metrics_listener)
