"""Long polling confirms an update to Telegram only once it was handled (`bot.telegram_polling`):
a worker killed mid-update loses nothing, and the update is handled exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys
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


BOT_ID = int(TOKEN.split(":")[0])
HOTLINE = str(Path(sys.executable).parent / "hotline")


async def _until_gone(redis: Redis, key: str) -> None:
    """Until a dead poller's lease ran out (it is no longer renewed)."""
    for _ in range(150):
        if not await redis.exists(key):
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the poller lease was never released")


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
    await _until_gone(redis, streams.telegram_poller_key(BOT_ID))

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


async def _hotline_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        HOTLINE, "bot", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def _until_running(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while b"Press Ctrl-C" not in await process.stdout.readline():
            assert process.returncode is None, "hotline bot exited"


async def test_a_second_poller_on_one_token_refuses_until_the_first_is_gone(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    telegram: FakeTelegram,
    center_key: X25519PrivateKey,
) -> None:
    """Telegram serves getUpdates to one consumer per token: a second `hotline bot` polling
    the same bot exits with one line saying so; once the first is gone (its lease ran out) a
    new one starts and serves victims."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")} | {
        "HOTLINE_DATA_DIR": str(tmp_path / "bot"),
        "HOTLINE_REDIS_URL": pair.redis_url,
        "HOTLINE_HTTP_PORT": "0",
        "HOTLINE_CENTER_PUBLIC_KEY": keys.encode_public_key(center_key.public_key()),
        "HOTLINE_RECEIPT_SALT": "00" * 16,
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url,
        "HOTLINE_TELEGRAM_POLL_LEASE_S": "3",
    }
    first = await _hotline_bot(env)
    third: asyncio.subprocess.Process | None = None
    try:
        await _until_running(first)
        second = await _hotline_bot(env)
        async with asyncio.timeout(30):
            _, stderr = await second.communicate()
        assert second.returncode == 2
        said = stderr.decode().strip().splitlines()[-1]
        assert said.startswith(
            "hotline: HOTLINE_TELEGRAM_TOKEN: another worker is already long-polling this bot"
        ), said
        assert "webhook" in said and TOKEN not in stderr.decode()

        first.send_signal(signal.SIGKILL)
        await first.wait()
        await _until_gone(redis, streams.telegram_poller_key(BOT_ID))
        third = await _hotline_bot(env)
        await _until_running(third)
        victim = Victim(telegram, "en")
        await telegram.send_text(victim.user, victim.chat, "/start")
        sent = await telegram.wait_for("sendMessage", 1, timeout_s=15)
        assert texts(sent)[0] == say("safety.welcome"), "the new poller serves the bot"
    finally:
        for process in (first, third):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGINT)
                async with asyncio.timeout(20):
                    await process.wait()
