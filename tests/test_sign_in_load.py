"""Sign-in load never holds up a victim (issue 18): Argon2id at a real cost runs in bounded
worker threads, so a web chat turn is answered while password checks are still queued."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import ClientResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import Pair, start_hotline

SIGN_INS = 8
TURNS = 5
# The shipped default cost: tens of megabytes and a good part of a second per check.
REAL_KDF = {"HOTLINE_KDF_TIME_COST": "3", "HOTLINE_KDF_MEMORY_KIB": "65536"}


async def test_a_web_chat_turn_is_answered_while_sign_ins_hash(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    env = REAL_KDF | {"HOTLINE_KDF_CONCURRENCY": "1", "HOTLINE_LOGIN_MAX_FAILURES": "100"}
    async with start_hotline(pair, tmp_path, env) as hotline:
        client = hotline.client

        async def sign_in(n: int) -> ClientResponse:
            form = {"username": f"nobody-{n}", "password": "a made-up long password"}
            response = await client.post("/console/login", data=form)
            await response.read()
            return response

        sign_ins = [asyncio.create_task(sign_in(n)) for n in range(SIGN_INS)]
        # Once one check is done the rest are queued or hashing: the server is under load.
        await asyncio.wait(sign_ins, return_when=asyncio.FIRST_COMPLETED)
        done_before = sum(task.done() for task in sign_ins)
        for _ in range(TURNS):
            turn = await client.post(
                "/chat/api/turn", json={"token": "t" * 43, "text": "/start", "language": "en"}
            )
            assert turn.status == 200, await turn.text()
            assert (await turn.json())["messages"], "the victim got an answer"
        finished_meanwhile = sum(task.done() for task in sign_ins) - done_before
        # On the event loop each turn waited behind at least one check (about one per turn
        # finished meanwhile); in threads, one at a time, the victim's turns pass them all.
        assert finished_meanwhile <= 2, finished_meanwhile
        statuses = [(await task).status for task in sign_ins]
        assert statuses == [401] * SIGN_INS
