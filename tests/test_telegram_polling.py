"""Long polling confirms an update to Telegram only once it was handled (`bot.telegram_polling`):
a worker killed mid-update loses nothing, and the update is handled exactly once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import redis_keys as streams
from backend.core.pseudonyms import Pseudonymizer
from backend.flows.registry import FlowRegistry
from bot.telegram.door import TelegramConfig, TelegramDoor
from tests import telegram_dying_worker, telegram_support
from tests.conftest import Pair
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import (
    FAST_LIMITS,
    SESSION_TTL_S,
    TOKEN,
    Victim,
    make_runtime,
    say,
    texts,
)

center_key = telegram_support.center_key
flows = telegram_support.flows
telegram = telegram_support.telegram


async def _line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    async with asyncio.timeout(20):
        return (await process.stdout.readline()).decode().strip()


async def test_an_update_a_killed_worker_held_is_handled_once_by_the_next(
    pair: Pair,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        telegram_dying_worker.__name__,
        pair.redis_url,
        telegram.base_url,
        root_secret.hex(),
        stdout=subprocess.PIPE,
    )
    try:
        assert await _line(worker) == "polling"
        await telegram.send_text(victim.user, victim.chat, "/start")
        assert await _line(worker) == "in-turn", "the worker took the update and is mid-turn"
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    start_id = telegram.delivered[-1]["update_id"]
    assert telegram.calls_to("sendMessage") == []
    key = streams.telegram_update_key(int(TOKEN.split(":")[0]), start_id)
    assert await redis.get(key) not in (None, b"done"), "the dead worker's claim is still held"

    config = TelegramConfig(
        token=TOKEN,
        base_url=telegram.base_url,
        limits=FAST_LIMITS,
        update_lease_s=telegram_dying_worker.LEASE_S,
        poll_recheck_s=0.2,
    )
    door = TelegramDoor(
        config,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(root_secret),
        redis=redis,
        root_secret=root_secret,
        session_ttl_s=SESSION_TTL_S,
    )
    await door.start()
    try:
        # Not confirmed by the dead worker, so fetched again; held until its lease ran out.
        await telegram.wait_for("sendMessage", 2, timeout_s=10)
        # A second handling would show now: a lease and a few polling rounds later.
        await asyncio.sleep(telegram_dying_worker.LEASE_S + 0.5)
    finally:
        await door.stop()
    assert texts(telegram.calls_to("sendMessage")) == [say("safety.welcome"), say("report.consent")]
    fetched = [u["update_id"] for c in telegram.calls_to("getUpdates") for u in c.result or []]
    assert fetched.count(start_id) >= 2, "the next worker was given the update again"
    assert await redis.get(key) == b"done"
