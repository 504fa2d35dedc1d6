"""A web chat turn retried with the same turn id runs once and gets the same answer."""

from __future__ import annotations

import asyncio
import json

import pytest
from redis.asyncio import Redis

from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.conversation import Pseudonym
from backend.core.pseudonyms import Pseudonymizer
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.registry import FlowRegistry
from bot.runtime import Turn
from bot.turn_replay import TurnReplay
from bot.webchat import answer_body, parse_turn
from tests.conftest import RunningHotline
from tests.telegram_support import make_runtime, say

WHO = Pseudonym("a" * 64)


async def test_a_retry_gets_the_first_answer_without_running_again(redis: Redis) -> None:
    replay = TurnReplay(redis, b"s" * 32)
    runs = 0

    async def handle() -> bytes:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.1)
        return b'{"messages": ["secret-bot-text"]}'

    first, second = await asyncio.gather(
        replay.once(WHO, "turn-0000000000001", handle),
        replay.once(WHO, "turn-0000000000001", handle),
    )
    assert first == second == b'{"messages": ["secret-bot-text"]}'
    assert runs == 1
    assert await replay.once(WHO, "turn-0000000000002", handle) == first
    assert runs == 2
    async for key in redis.scan_iter(match=streams.TURN_REPLAY_PREFIX + "*"):
        assert b"secret-bot-text" not in (await redis.get(key) or b""), "answers are encrypted"
        assert 0 < await redis.ttl(key) <= streams.WEBCHAT_TURN_REPLAY_TTL_S


async def test_a_failed_first_attempt_lets_the_retry_run(redis: Redis) -> None:
    replay = TurnReplay(redis, b"s" * 32)

    async def fail() -> bytes:
        raise ConnectionError("redis went away")

    async def succeed() -> bytes:
        return b"ok"

    with pytest.raises(ConnectionError):
        await replay.once(WHO, "turn-0000000000003", fail)
    assert await replay.once(WHO, "turn-0000000000003", succeed) == b"ok"


async def test_turn_ids_of_different_conversations_do_not_collide(redis: Redis) -> None:
    replay = TurnReplay(redis, b"s" * 32)

    async def one() -> bytes:
        return b"one"

    async def two() -> bytes:
        return b"two"

    assert await replay.once(WHO, "same-turn-id-000001", one) == b"one"
    assert await replay.once(Pseudonym("b" * 64), "same-turn-id-000001", two) == b"two"


async def test_the_web_chat_answers_a_retried_turn_once(hotline: RunningHotline) -> None:
    token = "r" * 43
    start = {"token": token, "text": "/start", "turn": "turn-start-000001"}
    first = await (await hotline.client.post("/chat/api/turn", json=start)).json()
    agree = {"token": token, "button": "agree", "turn": "turn-agree-000001"}
    answer = await (await hotline.client.post("/chat/api/turn", json=agree)).json()
    retried = await (await hotline.client.post("/chat/api/turn", json=agree)).json()
    assert retried == answer, "the retry is answered, not stepped again"
    assert answer != first
    again = await (await hotline.client.post("/chat/api/turn", json=start)).json()
    assert again == first


async def test_a_malformed_turn_id_is_refused(hotline: RunningHotline) -> None:
    body = {"token": "r" * 43, "text": "hi", "turn": "../../x"}
    response = await hotline.client.post("/chat/api/turn", json=body)
    assert response.status == 400
    assert "turn" in (await response.json())["error"]


async def test_a_turn_whose_process_died_after_its_write_is_answered_from_that_write(
    redis: Redis,
) -> None:
    """Issue 14, found by the scale-out test: a bot worker SIGKILLed after a web chat turn's
    session write but before the replay's own write of the answer left the conversation
    stepped and no answer; the page's retry (same turn id) ran the turn again on the next step
    ("That question has passed", and a submitted report's receipt never shown). The answer is
    now written with the session: the first request here ends right after that write, as a
    killed process does, and the retry gets its answer without running anything."""
    runtime, root_secret = make_runtime(
        redis, FlowRegistry.load(SHIPPED_FLOWS_DIR), keys.generate_private_key()
    )
    pseudonymizer = Pseudonymizer(root_secret)
    replay = TurnReplay(redis, root_secret)
    token = "t" * 43
    start = {"token": token, "text": "/start", "language": "en"}
    await runtime.handle(parse_turn(start, pseudonymizer))
    agree = parse_turn({"token": token, "button": "agree"}, pseudonymizer)
    turn_id = "turn-0000000000001"

    def record(turn: Turn) -> tuple[str, bytes, int]:
        return replay.answer_record(agree.pseudonym, turn_id, answer_body(turn))

    first = await runtime.handle(agree, record=record)
    runs = 0

    async def retried() -> bytes:
        nonlocal runs
        runs += 1
        return answer_body(await runtime.handle(agree))

    answer = await replay.once(agree.pseudonym, turn_id, retried)
    assert runs == 0, "the retry did not run the turn again"
    assert answer == answer_body(first)
    (message,) = json.loads(answer)["messages"]
    assert message["text"] == say("report.category")
