"""Every message to a Telegram chat goes through here, within Telegram's limits, and none is lost.

Telegram allows about one message a second per chat (short bursts tolerated) and about thirty a
second per bot. Each send reserves a slot in two token buckets (its chat's and the bot's) and
waits for it, so callers keep their own order and no one spins. A 429 waits the `retry_after`
Telegram asked for; a network error or a 5xx (PTB raises both as `NetworkError`) retries with
exponential back-off. What still fails is raised, never dropped: `RecipientBlockedError` when
the victim blocked the bot (403), `DeliveryFailedError` after the last attempt.

Every message carries `protect_content` (no forwarding, no saving) and no parse mode, so no
text, the victim's or an administrator's, can be read as markup.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from backend.core.errors import HotlineError
from backend.core.metrics import Metrics

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4096
_T = TypeVar("_T")


class RecipientBlockedError(HotlineError):
    """Telegram answered 403: the victim blocked the bot or deleted the chat."""


class DeliveryFailedError(HotlineError):
    """A message could not be delivered after every retry."""


@dataclass(frozen=True)
class OutboxLimits:
    """Telegram's published limits by default; tests and the bench pass faster ones."""

    per_chat_per_s: float = 1.0
    per_chat_burst: int = 3
    per_bot_per_s: float = 30.0
    per_bot_burst: int = 30
    max_attempts: int = 6
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0


class _Bucket:
    """A token bucket that hands out reservations: `reserve()` says how long to wait for a slot.

    Tokens may go negative, which queues the reservations in call order without a loop.
    """

    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate_per_s: float, burst: int) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic()

    def reserve(self) -> float:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self._rate

    def idle(self) -> bool:
        elapsed = time.monotonic() - self._updated
        return self._tokens + elapsed * self._rate >= self._burst


class TelegramOutbox:
    _MAX_IDLE_BUCKETS = 10_000

    def __init__(
        self, bot: Bot, limits: OutboxLimits | None = None, metrics: Metrics | None = None
    ) -> None:
        self._bot = bot
        self._metrics = metrics if metrics is not None else Metrics()
        self._limits = limits or OutboxLimits()
        self._bot_bucket = _Bucket(self._limits.per_bot_per_s, self._limits.per_bot_burst)
        # Keyed by chat id in memory only, never stored or logged.
        self._chat_buckets: dict[int, _Bucket] = {}

    async def send(
        self,
        chat_id: int,
        text: str,
        reply_markup: InlineKeyboardMarkup | str | None = None,
    ) -> int:
        """Send one message (at most 4096 characters), protected, without parse mode; the
        message id Telegram gave it. `reply_markup` as PTB's object or as its JSON text."""
        if not text or len(text) > MAX_MESSAGE_CHARS:
            raise ValueError("a Telegram message holds 1-4096 characters; fit it first")
        params: dict[str, object] = {"chat_id": chat_id, "text": text, "protect_content": True}
        if reply_markup is not None:
            params["reply_markup"] = reply_markup
        try:
            sent = await self._deliver(chat_id, functools.partial(self._send_message, params))
        except RecipientBlockedError:
            self._metrics.send("blocked")
            raise
        except Exception:
            self._metrics.send("failed")
            raise
        self._metrics.send("sent")
        return sent

    async def _send_message(self, params: dict[str, object]) -> int:
        # PTB's `_post` (what `send_message` calls) answers the raw result: only the id is read,
        # where `send_message` would build a whole `Message` object, most of the cost of a send.
        # The same errors are raised either way. Re-check on every PTB upgrade.
        result = await self._bot._post("sendMessage", dict(params))
        if not isinstance(result, dict) or not isinstance(result.get("message_id"), int):
            raise DeliveryFailedError("telegram answered sendMessage without a message id")
        message_id: int = result["message_id"]
        return message_id

    async def delete(self, chat_id: int, message_ids: list[int]) -> None:
        """Delete messages in batches of 100 (deleteMessages' limit), within the same limits.

        A batch Telegram refuses as a bad request (too old, already gone) is skipped: deletion
        is best effort by nature, and the rest of the chat must still go.
        """
        for start in range(0, len(message_ids), 100):
            batch = message_ids[start : start + 100]
            try:
                await self._deliver(chat_id, functools.partial(self._delete, chat_id, batch))
            except BadRequest:
                log.warning("telegram refused to delete %d message(s)", len(batch))

    async def _delete(self, chat_id: int, message_ids: list[int]) -> bool:
        deleted: bool = await self._bot.delete_messages(chat_id, message_ids)
        return deleted

    async def _deliver(self, chat_id: int, call: Callable[[], Awaitable[_T]]) -> _T:
        limits = self._limits
        attempt = 0
        while True:
            attempt += 1
            await self._wait_for_slot(chat_id)
            try:
                return await call()
            except BadRequest:  # a NetworkError subclass in PTB, but retrying cannot help
                raise
            except Forbidden:
                raise RecipientBlockedError("the recipient blocked the bot") from None
            except RetryAfter as exc:
                wait_s = _seconds(exc.retry_after)
                log.warning("telegram asked to slow down for %.1f s", wait_s)
                self._metrics.rate_limited()
                if attempt >= limits.max_attempts:
                    raise DeliveryFailedError("still rate limited after every attempt") from None
                self._metrics.retry("rate_limited")
                await asyncio.sleep(wait_s)
            except (TimedOut, NetworkError) as exc:
                if attempt >= limits.max_attempts:
                    raise DeliveryFailedError(
                        f"telegram unreachable after {attempt} attempts ({type(exc).__name__})"
                    ) from None
                wait_s = min(limits.backoff_s * 2 ** (attempt - 1), limits.max_backoff_s)
                log.warning("telegram send failed with %s; retrying", type(exc).__name__)
                self._metrics.retry("network")
                await asyncio.sleep(wait_s)

    async def _wait_for_slot(self, chat_id: int) -> None:
        bucket = self._chat_buckets.get(chat_id)
        if bucket is None:
            if len(self._chat_buckets) >= self._MAX_IDLE_BUCKETS:
                self._chat_buckets = {k: b for k, b in self._chat_buckets.items() if not b.idle()}
            bucket = _Bucket(self._limits.per_chat_per_s, self._limits.per_chat_burst)
            self._chat_buckets[chat_id] = bucket
        wait_s = max(bucket.reserve(), self._bot_bucket.reserve())
        if wait_s > 0:
            await asyncio.sleep(wait_s)


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
