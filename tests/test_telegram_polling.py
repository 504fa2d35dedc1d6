"""Long polling confirms an update to Telegram only once it was handled (`bot.telegram_polling`):
a worker killed mid-update loses nothing, and the update is handled exactly once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console import canned_responses
from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.pseudonyms import Pseudonymizer
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flow_versions import FlowVersionStore
from backend.flows.registry import FlowRegistry
from bot.runtime import ConversationRuntime
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


async def _start_killed_in(
    pair: Pair,
    telegram: FakeTelegram,
    victim: Victim,
    root_secret: bytes,
    *mode: str,
    says: str,
) -> int:
    """A worker (`tests.telegram_dying_worker`, in `mode`) takes the victim's /start, says
    `says` where it stops, and is SIGKILLed there; the update's id."""
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        telegram_dying_worker.__name__,
        pair.redis_url,
        telegram.base_url,
        root_secret.hex(),
        *mode,
        stdout=subprocess.PIPE,
    )
    try:
        assert await _line(worker) == "polling"
        await telegram.send_text(victim.user, victim.chat, "/start")
        assert await _line(worker) == says, f"the worker did not reach {says!r}"
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    return int(telegram.delivered[-1]["update_id"])


async def test_an_update_a_killed_worker_held_is_handled_once_by_the_next(
    pair: Pair,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    # It took the update and is mid-turn.
    start_id = await _start_killed_in(pair, telegram, victim, root_secret, says="in-turn")
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


async def _killed_after_step(
    pair: Pair, telegram: FakeTelegram, victim: Victim, root_secret: bytes, lease_s: float
) -> int:
    """A worker that stepped the victim's /start (the update marked done, its replies kept)
    and was killed before its first reply reached Telegram; the update's id."""
    # The turn stepped; its first reply waits.
    start_id = await _start_killed_in(
        pair, telegram, victim, root_secret, "after-step", str(lease_s), says="stepped"
    )
    assert telegram.calls_to("sendMessage") == []
    return start_id


def _next_worker(
    telegram: FakeTelegram, runtime: ConversationRuntime, redis: Redis, root_secret: bytes
) -> TelegramDoor:
    config = TelegramConfig(
        token=TOKEN,
        base_url=telegram.base_url,
        limits=FAST_LIMITS,
        update_lease_s=telegram_dying_worker.LEASE_S,
        poll_recheck_s=0.2,
        outgoing_lease_s=1,
    )
    return TelegramDoor(
        config,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(root_secret),
        redis=redis,
        root_secret=root_secret,
        session_ttl_s=SESSION_TTL_S,
    )


async def test_replies_of_a_worker_killed_after_the_step_are_sent_once_by_the_next(
    pair: Pair,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    start_id = await _killed_after_step(pair, telegram, victim, root_secret, 1)
    key = streams.telegram_update_key(BOT_ID, start_id)
    assert await redis.get(key) == b"done", "the step marked the update done: no redelivery"
    kept = await redis.zrange(streams.TELEGRAM_OUTGOING_INDEX, 0, -1)
    assert len(kept) == 1, "the stepped turn's replies were kept with the step"
    # Sealed: neither the chat id nor a word of the replies is in Redis in clear.
    member = kept[0]
    assert isinstance(member, bytes)
    pseudonym = member.decode().rpartition(":")[0]
    stored = await redis.hgetall(streams.telegram_outgoing_key(pseudonym))
    assert stored
    for value in stored.values():
        assert str(victim.chat["id"]).encode() not in value
        assert say("safety.welcome").encode()[:20] not in value
    await _until_gone(redis, streams.telegram_poller_key(BOT_ID))
    door = _next_worker(telegram, runtime, redis, root_secret)
    await door.start()
    try:
        calls = await telegram.wait_for("sendMessage", 2, timeout_s=10)
        # A second sending would show now: a lease and a few looks later.
        await asyncio.sleep(2.5)
        # The conversation goes on from where the dead worker's step left it.
        step = await victim.press(calls[1], "agree", replies=1)
        assert texts(step) == [say("report.category")]
    finally:
        await door.stop()
    sent = texts(telegram.calls_to("sendMessage"))
    assert sent == [say("safety.welcome"), say("report.consent"), say("report.category")]
    assert await redis.zcard(streams.TELEGRAM_OUTGOING_INDEX) == 0, "nothing left pending"


async def test_an_exit_after_such_a_death_drops_the_kept_replies(
    pair: Pair,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    # A longer lease: the victim's /exit reaches the next worker before it would take them over.
    await _killed_after_step(pair, telegram, victim, root_secret, 4)
    await _until_gone(redis, streams.telegram_poller_key(BOT_ID))
    door = _next_worker(telegram, runtime, redis, root_secret)
    await door.start()
    try:
        await telegram.send_text(victim.user, victim.chat, "/exit")
        await telegram.wait_for("deleteMessages", 1, timeout_s=10)
        assert await redis.zcard(streams.TELEGRAM_OUTGOING_INDEX) == 0
        await asyncio.sleep(4.5)  # past the dead worker's lease: nothing is taken over
    finally:
        await door.stop()
    sent = texts(telegram.calls_to("sendMessage"))
    assert say("safety.welcome") not in sent and say("report.consent") not in sent


async def test_an_update_from_before_an_exit_starts_nothing_after_it(
    pair: Pair,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    """Her /start reached a worker that died mid-turn; she left with /exit meanwhile, and
    another worker erased the chat. Telegram hands the /start over again once the dead
    worker's claim runs out, after the exit: it came before the exit, so it must not start a
    conversation in the chat she just erased (someone may be holding her phone). A /start
    she sends after the exit begins one as always."""
    runtime, root_secret = make_runtime(redis, flows, center_key)
    victim = Victim(telegram, "en")
    claim_s = 4  # the dead worker's claim on her /start outlives its conversation lock (1 s)
    start_id = await _start_killed_in(
        pair, telegram, victim, root_secret, "claim", str(claim_s), says="in-turn"
    )
    killed = asyncio.get_running_loop().time()
    await telegram.send_text(victim.user, victim.chat, "/exit")
    await _until_gone(redis, streams.telegram_poller_key(BOT_ID))
    door = _next_worker(telegram, runtime, redis, root_secret)
    await door.start()
    try:
        await telegram.wait_for("deleteMessages", 1, timeout_s=10)
        claim_left = claim_s - (asyncio.get_running_loop().time() - killed)
        assert claim_left > 0, "the exit was handled while the /start was still claimed"
        # Past the claim: the /start is fetched again and handled, and a few polls more.
        await asyncio.sleep(claim_left + 1.5)
        fetched = [u["update_id"] for c in telegram.calls_to("getUpdates") for u in c.result or []]
        assert fetched.count(start_id) >= 2, "the /start was handed over again after the exit"
        sent = texts(telegram.calls_to("sendMessage"))
        assert say("safety.welcome") not in sent and say("report.consent") not in sent
        assert sent == [say("safety.exit")], "only the exit's own notice, deleted since"

        step = await victim.say("/start", replies=2)
        assert texts(step) == [say("safety.welcome"), say("report.consent")]
    finally:
        await door.stop()


async def _hotline_bot(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        HOTLINE, "bot", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


async def _until_running(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while b"Press Ctrl-C" not in (line := await process.stdout.readline()):
            # The end of its output: it exited (its return code is not read until waited for).
            assert line, "hotline bot exited"


@pytest.fixture
async def published(engine: AsyncEngine, redis: Redis) -> Redis:
    """Redis with the shipped flows published, as a backend leaves it: a bot worker reads its
    flows from there and will not start without them (issue 15)."""
    await FlowVersionStore(engine, redis).seed(SHIPPED_FLOWS_DIR, canned_responses.shipped())
    return redis


async def test_a_second_poller_on_one_token_refuses_until_the_first_is_gone(
    pair: Pair,
    tmp_path: Path,
    published: Redis,
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
        await _until_gone(published, streams.telegram_poller_key(BOT_ID))
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
