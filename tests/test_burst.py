"""A burst of requests beyond a node's Redis connections (a flood, or just a busy minute) waits
for a connection: no victim is told "unavailable" because others came at the same moment."""

from __future__ import annotations

import asyncio

from backend.core import redis_keys
from tests.conftest import RunningHotline
from tests.locales import texts_of

EN = texts_of("en")


async def test_a_burst_beyond_the_redis_pool_is_answered_not_failed(
    hotline: RunningHotline,
) -> None:
    async def start(n: int) -> list[str]:
        response = await hotline.client.post(
            "/chat/api/turn", json={"token": f"{n:043d}", "text": "/start", "language": "en"}
        )
        assert response.status == 200
        return [m["text"] for m in (await response.json())["messages"]]

    burst = 3 * redis_keys.REDIS_MAX_CONNECTIONS
    answers = await asyncio.gather(*(start(n) for n in range(burst)))
    assert [a for a in answers if a == [EN["common.unavailable"]]] == []
    assert all(a[-1] == EN["report.consent"] for a in answers)
