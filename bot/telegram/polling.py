"""Long polling that confirms an update to Telegram only once it was handled.

getUpdates confirms every update below the `offset` it is called with: Telegram forgets them.
python-telegram-bot's own `Updater` moves the offset past a batch as soon as it is fetched, so
a worker that dies with fetched updates in hand loses them. This poller keeps the offset at the
oldest update not yet handled: whatever a dead worker held is fetched again by the next start,
and the dedupe (`bot.telegram.dedupe`) hands it over once the dead worker's lease ran out. A copy
of an update that was handled is dropped there, so nothing is processed twice.

Fetched updates run concurrently (the door's per-chat order still holds: each is registered
with its chat's queue in the order fetched). While some are in flight the poller asks again
without waiting (`timeout=0`) when one finishes or every `recheck_s`, skipping those it already
runs, so a slow update (a file being fetched) does not hold the others back. An update another
worker holds is asked for again at the next round until its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Any

from telegram import Bot, Update
from telegram.error import TelegramError

log = logging.getLogger(__name__)

# How long an empty getUpdates is held by Telegram (long polling), in seconds.
LONG_POLL_S = 10
MAX_BACKOFF_S = 30.0


class Outcome(Enum):
    HANDLED = "handled"  # or dropped as a copy of one handled before: confirm it
    HELD = "held"  # another worker holds it: ask for it again later


class ConfirmingPoller:
    def __init__(
        self,
        bot: Bot,
        handle: Callable[[Update], Coroutine[Any, Any, Outcome]],
        *,
        allowed_updates: list[str],
        recheck_s: float = 1.0,
        drain_s: float = 10.0,
    ) -> None:
        self._bot = bot
        self._handle = handle
        self._allowed = allowed_updates
        self._recheck_s = recheck_s
        self._drain_s = drain_s
        # Updates at or past the offset, by id: running (a task), or done (None).
        self._running: dict[int, asyncio.Task[Outcome]] = {}
        self._done: set[int] = set()
        self._held: set[int] = set()
        self._offset: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        # A webhook left from an earlier configuration makes getUpdates fail (409 Conflict).
        await self._bot.delete_webhook(drop_pending_updates=False)
        self._task = asyncio.create_task(self._poll(), name="telegram-polling")

    async def stop(self) -> None:
        """Stop fetching; updates in flight are given `drain_s` to finish, so what they did is
        confirmed by the last call, and the rest is left to the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=self._drain_s)
        for task in self._running.values():
            task.cancel()
        if self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)
        offset = self._next_offset()
        if offset is not None and offset != self._offset:
            # Confirm what finished since the last call, so the next start skips it at once.
            try:
                await self._bot.get_updates(
                    offset=offset, timeout=0, limit=1, allowed_updates=self._allowed
                )
            except TelegramError as exc:
                log.info("telegram: last confirmation not sent (%s)", type(exc).__name__)

    async def _poll(self) -> None:
        failures = 0
        while True:
            busy = bool(self._running or self._held)
            try:
                updates = await self._bot.get_updates(
                    offset=self._offset,
                    timeout=0 if busy else LONG_POLL_S,
                    allowed_updates=self._allowed,
                )
            except TelegramError as exc:
                failures += 1
                wait_s = min(0.5 * 2 ** (failures - 1), MAX_BACKOFF_S)
                log.warning(
                    "telegram getUpdates failed (%s); again in %.1f s", type(exc).__name__, wait_s
                )
                await asyncio.sleep(wait_s)
                continue
            failures = 0
            for update in updates:
                self._admit(update)
            self._offset = self._next_offset()
            if self._running or self._held:
                await self._wait_for_change()

    def _admit(self, update: Update) -> None:
        update_id = update.update_id
        if update_id in self._running or update_id in self._done:
            return  # fetched again because an older one is not finished: already in hand
        self._held.discard(update_id)
        task = asyncio.create_task(self._handle(update))
        self._running[update_id] = task
        task.add_done_callback(lambda t: self._finished(update_id, t))

    def _finished(self, update_id: int, task: asyncio.Task[Outcome]) -> None:
        self._running.pop(update_id, None)
        if task.cancelled():
            return  # stopped before it was handled: the next start does it
        if task.exception() is None and task.result() is Outcome.HELD:
            self._held.add(update_id)
        else:
            # An error was already met by the door's error handler (the victim was told):
            # fetching it again would only repeat it.
            self._done.add(update_id)
        self._changed.set()

    async def _wait_for_change(self) -> None:
        self._changed.clear()
        if self._running and not self._held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._recheck_s):
                    await self._changed.wait()
            return
        # Something is held by another worker: look again at the next round, not sooner.
        await asyncio.sleep(self._recheck_s)

    def _next_offset(self) -> int | None:
        """The oldest update not yet handled, else one past the newest handled."""
        unfinished = [*self._running, *self._held]
        if unfinished:
            offset = min(unfinished)
        elif self._done:
            offset = max(self._done) + 1
        else:
            return self._offset
        self._done = {u for u in self._done if u >= offset}
        return offset
