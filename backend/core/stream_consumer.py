"""The loop a consumer of a Redis stream runs: the backend's intake and the bot's relay.

Each step reads and handles a batch; a service that is away (`transient`) is not the entry's
fault, so the consumer pauses and tries again, and so after any other error, so that one bad
moment never ends the loop. Stopping is cooperative rather than by cancelling the task: redis-py
can swallow a cancellation that lands in a blocking XREADGROUP, and then shutdown hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

RETRY_DELAY_S = 1.0
# Errors that say "Redis is away", not "this entry is bad".
REDIS_TRANSIENT: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError, OSError)


class StreamConsumer:
    """Subclasses say what one step is and what to log (and reset) when a step fails."""

    transient: ClassVar[tuple[type[Exception], ...]] = REDIS_TRANSIENT

    def __init__(self) -> None:
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        """Consume until `stop()`."""
        while not self._stopping.is_set():
            try:
                await self._step()
            except self.transient:
                self._service_away()
                await self._pause()
            except Exception as exc:
                self._step_failed(exc)
                await self._pause()

    def stop(self) -> None:
        self._stopping.set()

    async def _pause(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), RETRY_DELAY_S)

    async def _step(self) -> None:
        raise NotImplementedError

    def _service_away(self) -> None:
        raise NotImplementedError

    def _step_failed(self, exc: Exception) -> None:
        raise NotImplementedError
