"""A web chat client that sends a turn the way `bot/webchat_static/chat.js` does.

Every turn carries a turn id. A 503 is sent again with the same id after its Retry-After (the
page adds up to half again, so a crowd does not come back at once); a lost connection (a server
that died or restarts) is sent again after a short backoff. Anything else is the answer.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Attempts:
    """What one turn met before its answer."""

    unavailable: int = 0  # 503 with Retry-After
    refused: int = 0  # no connection at all
    statuses: list[int] = field(default_factory=list)


def new_turn_id() -> str:
    return secrets.token_urlsafe(16)


async def send_turn(
    http: aiohttp.ClientSession,
    base: str,
    body: dict[str, str],
    *,
    turn_id: str | None = None,
    attempts: Attempts | None = None,
    give_up_after: int = 200,
) -> dict[str, Any]:
    """The turn's answer, retried like the page retries; AssertionError on anything but 200,
    503 with Retry-After, or a refused connection."""
    seen = attempts if attempts is not None else Attempts()
    payload = {**body, "turn": turn_id or new_turn_id()}
    backoff_s = 0.1
    for _ in range(give_up_after):
        try:
            async with http.post(base + "/chat/api/turn", json=payload) as response:
                seen.statuses.append(response.status)
                if response.status == 200:
                    answer: dict[str, Any] = await response.json()
                    return answer
                assert response.status == 503, (response.status, await response.text())
                after = float(response.headers["Retry-After"])
                seen.unavailable += 1
                await asyncio.sleep(after * (1 + random.random() / 2))  # noqa: S311 - jitter
        except aiohttp.ClientConnectionError:
            seen.refused += 1
            await asyncio.sleep(backoff_s)
            backoff_s = min(backoff_s * 2, 1.0)
    raise AssertionError(f"no answer after {give_up_after} attempts: {seen}")
