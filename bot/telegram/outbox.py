"""Every message to a Telegram chat goes through here, within Telegram's limits, and none is lost.

Telegram allows about one message a second per chat (short bursts tolerated) and about thirty a
second per bot. Each send reserves a slot in its chat's token bucket and waits for it, so
callers keep their own order and no one spins; then, when the outbox has a `SlotGate` (the door
gives it `SharedRateLimits`), it waits for the same limits counted over every bot worker in
Redis, where the bot's slots go by priority (issue 14: replies to conversations triaged as
danger, self-harm, sextortion or a minor first, `send(..., priority=)`), then by when each send
was asked for. Without a gate, an in-process bucket keeps to the bot's rate, first come first
served. A 429 waits the `retry_after`
Telegram asked for; a network error or a 5xx (PTB raises both as `NetworkError`) retries with
exponential back-off. What still fails is raised, never dropped: `RecipientBlockedError` when
the victim blocked the bot (403), `DeliveryFailedError` after the last attempt.

Every message carries `protect_content` (no forwarding, no saving) and no parse mode, so no
text, the victim's or an administrator's, can be read as markup.

A quick exit jumps every queue (issue 12: /exit waited 10-20 s behind the replies of the
victim's earlier clicks, paced at one a second). `abandon` starts a new epoch for the chat:
every send of that chat waiting for a slot is dropped at once (`ChatExitedError`), and so is
any later send of a turn that began before the exit; `delete(..., urgent=True)` waits for no
bucket. Other chats' sends are untouched. "Waiting" is every wait before the call: the
in-process buckets, the shared gate (which may hold a send for seconds, and may hand it a slot
in the very moment of the exit, so the epoch is checked again after it) and a retry's back-off;
a send's epoch is the one it was asked for under, never one read again on a retry. An epoch is
this process's: a send that waited for its slot asks its caller whether it is still wanted
(`still`: the door asks Redis whether the turn's kept replies are still there, which an exit
through another worker clears) before it goes. The exit's
own sends (`exiting`) do not wait for the chat's shared window either: it was filled by the
replies the exit drops, as the chat's in-process bucket is, which starts afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Protocol, TypeVar

from telegram import Bot, InlineKeyboardMarkup
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from backend.core.errors import HotlineError
from backend.core.metrics import Metrics

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 4096
# A send that waited this long for its slot asks its caller's `still` before it goes: another
# worker may have taken the victim's quick exit meanwhile. A shorter wait asks nothing (no
# round trip for the common, uncongested send).
RECHECK_AFTER_S = 0.2
_T = TypeVar("_T")


class RecipientBlockedError(HotlineError):
    """Telegram answered 403: the victim blocked the bot or deleted the chat."""


class DeliveryFailedError(HotlineError):
    """A message could not be delivered after every retry."""


class ChatExitedError(HotlineError):
    """The victim left the chat (quick exit) after this send was asked for: it is dropped."""


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


class SlotGate(Protocol):
    """Telegram's limits over every worker: True when this one may send to the chat; False,
    without a slot, as soon as `abandoned` is set (a quick exit dropped the send). `urgent`:
    a quick exit's own send, which takes the bot's slot before any other but does not wait for
    the chat's. The bot's slots go by `priority` (higher first), then by `asked_at` (when the
    send was first asked for, `time.time()`, kept across retries)."""

    async def wait(
        self,
        chat_id: int,
        *,
        abandoned: asyncio.Event | None = None,
        urgent: bool = False,
        priority: int = 0,
        asked_at: float | None = None,
    ) -> bool: ...


class _Exits:
    """Per chat, the epoch (bumped by each quick exit), the event that wakes the epoch's
    waiting sends to drop them, and the ids sent by calls still in flight (a turn that began
    before the exit has not yet recorded them in the chat record, so the exit asks here)."""

    __slots__ = ("closed", "epoch", "exited", "in_flight", "sent", "settled")

    def __init__(self) -> None:
        # While an exit is under way, only its own sends go out (a relay line, say, would
        # otherwise slip in between the abandon and the end of the conversation).
        self.closed = False
        self.epoch = 0
        self.exited = asyncio.Event()
        self.in_flight = 0
        self.settled = asyncio.Event()
        self.settled.set()
        self.sent: list[int] = []


@dataclass(frozen=True)
class _Ticket:
    """A send's standing, fixed when it was asked for: against quick exits, its chat's state,
    the epoch it belongs to and that epoch's event (set by the exit that ends it); in the
    shared gate's line, its priority and when it was asked for."""

    exits: _Exits
    epoch: int
    exited: asyncio.Event
    exiting: bool
    priority: int = 0
    asked_at: float = field(default_factory=time.time)
    still: Callable[[], Awaitable[bool]] | None = None

    def check(self) -> None:
        """ChatExitedError if an exit came since, or one is under way and this is not its own."""
        if self.exits.epoch != self.epoch or (self.exits.closed and not self.exiting):
            raise ChatExitedError("the victim left this chat")

    async def check_still(self) -> None:
        """After a wait for the slot of `RECHECK_AFTER_S` or more: ChatExitedError if the
        caller's `still` says the send is no longer wanted (a quick exit through another
        worker, which this process's epoch cannot know of)."""
        if self.still is None or time.time() - self.asked_at < RECHECK_AFTER_S:
            return
        if not await self.still():
            raise ChatExitedError("the victim left this chat")

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`, or less: an exit meanwhile drops the send at once."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.exited.wait()
        self.check()


class TelegramOutbox:
    _MAX_IDLE_BUCKETS = 10_000

    def __init__(
        self,
        bot: Bot,
        limits: OutboxLimits | None = None,
        metrics: Metrics | None = None,
        gate: SlotGate | None = None,
    ) -> None:
        self._bot = bot
        self._metrics = metrics if metrics is not None else Metrics()
        self._limits = limits or OutboxLimits()
        self._gate = gate
        self._bot_bucket = _Bucket(self._limits.per_bot_per_s, self._limits.per_bot_burst)
        # Keyed by chat id in memory only, never stored or logged.
        self._chat_buckets: dict[int, _Bucket] = {}
        self._exits: dict[int, _Exits] = {}

    def _exit_state(self, chat_id: int) -> _Exits:
        state = self._exits.get(chat_id)
        if state is None:
            if len(self._exits) >= self._MAX_IDLE_BUCKETS:
                self._exits = {k: v for k, v in self._exits.items() if v.in_flight}
            state = self._exits[chat_id] = _Exits()
        return state

    def epoch(self, chat_id: int) -> int:
        """The chat's current epoch: a turn passes it to its sends, which are dropped once a
        quick exit has begun a newer one."""
        state = self._exits.get(chat_id)
        return 0 if state is None else state.epoch

    def abandon(self, chat_id: int) -> None:
        """A quick exit: drop every send of this chat that waits for a slot now or that a turn
        begun before now asks for later; the chat's bucket starts afresh (nothing dropped was
        sent). Synchronous: nothing else runs before the drop is decided."""
        state = self._exit_state(chat_id)
        state.epoch += 1
        state.closed = True
        state.exited.set()
        state.exited = asyncio.Event()
        self._chat_buckets.pop(chat_id, None)

    def reopen(self, chat_id: int) -> None:
        """The exit is done: the chat takes sends again (a victim may come back later)."""
        state = self._exits.get(chat_id)
        if state is not None:
            state.closed = False

    def note_incoming(self, chat_id: int, message_id: int) -> None:
        """A victim's message as it arrives: an exit deletes it even if its update is dropped
        unhandled (it came before the exit) and so never reached the chat record."""
        state = self._exit_state(chat_id)
        state.sent.append(message_id)
        del state.sent[:-200]

    def sent_recently(self, chat_id: int) -> list[int]:
        """Ids of this chat's latest messages (up to 200, both sides) seen by this process,
        recorded in the chat record or not yet."""
        state = self._exits.get(chat_id)
        return [] if state is None else list(state.sent)

    async def settle(self, chat_id: int, timeout_s: float) -> list[int]:
        """Wait (up to `timeout_s`) for this chat's calls already on the wire, and hand over
        the ids they sent, so an exit can delete them too."""
        state = self._exits.get(chat_id)
        if state is None:
            return []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await state.settled.wait()
        sent, state.sent = state.sent, []
        return sent

    async def send(
        self,
        chat_id: int,
        text: str,
        reply_markup: InlineKeyboardMarkup | str | None = None,
        *,
        epoch: int | None = None,
        exiting: bool = False,
        priority: int = 0,
        still: Callable[[], Awaitable[bool]] | None = None,
    ) -> int:
        """Send one message (at most 4096 characters), protected, without parse mode; the
        message id Telegram gave it. `reply_markup` as PTB's object or as its JSON text.
        `epoch`: the chat's epoch when the turn began; ChatExitedError if a quick exit came
        since (also while waiting for a slot), or if an exit is under way and this is not its
        own send (`exiting`). `priority`: the conversation's triage level (0-3); under the
        bot's cap, higher goes first (with a gate). `still`: asked once the slot is given, if
        the send waited `RECHECK_AFTER_S` or more for it; ChatExitedError when it says no."""
        if not text or len(text) > MAX_MESSAGE_CHARS:
            raise ValueError("a Telegram message holds 1-4096 characters; fit it first")
        params: dict[str, object] = {"chat_id": chat_id, "text": text, "protect_content": True}
        if reply_markup is not None:
            params["reply_markup"] = reply_markup
        state = self._exit_state(chat_id)
        ticket = _Ticket(
            state,
            state.epoch if epoch is None else epoch,
            state.exited,
            exiting,
            priority,
            still=still,
        )
        ticket.check()
        state.in_flight += 1
        state.settled.clear()
        try:
            sent = await self._deliver(
                chat_id, functools.partial(self._send_message, params), ticket=ticket
            )
        except RecipientBlockedError:
            self._metrics.send("blocked")
            raise
        except ChatExitedError:
            raise  # dropped by an exit: never sent, not a failure
        except Exception:
            self._metrics.send("failed")
            raise
        finally:
            state.in_flight -= 1
            if not state.in_flight:
                state.settled.set()
        self._metrics.send("sent")
        state.sent.append(sent)
        del state.sent[:-200]  # only the calls an exit may race with matter
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

    async def delete(self, chat_id: int, message_ids: list[int], *, urgent: bool = False) -> None:
        """Delete messages in batches of 100 (deleteMessages' limit), within the same limits;
        `urgent` (a quick exit): at once, ahead of every queue (Telegram's 429 still waits).

        A batch Telegram refuses as a bad request (too old, already gone) is skipped: deletion
        is best effort by nature, and the rest of the chat must still go.
        """
        for start in range(0, len(message_ids), 100):
            batch = message_ids[start : start + 100]
            try:
                await self._deliver(
                    chat_id, functools.partial(self._delete, chat_id, batch), urgent=urgent
                )
            except BadRequest:
                log.warning("telegram refused to delete %d message(s)", len(batch))

    async def _delete(self, chat_id: int, message_ids: list[int]) -> bool:
        deleted: bool = await self._bot.delete_messages(chat_id, message_ids)
        return deleted

    async def _deliver(
        self,
        chat_id: int,
        call: Callable[[], Awaitable[_T]],
        *,
        urgent: bool = False,
        ticket: _Ticket | None = None,
    ) -> _T:
        limits = self._limits
        attempt = 0
        while True:
            attempt += 1
            if not urgent:
                await self._wait_for_slot(chat_id, ticket)
                if ticket is not None:
                    await ticket.check_still()
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
                await self._sleep(wait_s, ticket)
            except (TimedOut, NetworkError) as exc:
                if attempt >= limits.max_attempts:
                    raise DeliveryFailedError(
                        f"telegram unreachable after {attempt} attempts ({type(exc).__name__})"
                    ) from None
                wait_s = min(limits.backoff_s * 2 ** (attempt - 1), limits.max_backoff_s)
                log.warning("telegram send failed with %s; retrying", type(exc).__name__)
                self._metrics.retry("network")
                await self._sleep(wait_s, ticket)

    async def _wait_for_slot(self, chat_id: int, ticket: _Ticket | None = None) -> None:
        bucket = self._chat_buckets.get(chat_id)
        if bucket is None:
            if len(self._chat_buckets) >= self._MAX_IDLE_BUCKETS:
                self._chat_buckets = {k: b for k, b in self._chat_buckets.items() if not b.idle()}
            bucket = _Bucket(self._limits.per_chat_per_s, self._limits.per_chat_burst)
            self._chat_buckets[chat_id] = bucket
        if self._gate is None:
            await self._sleep(max(bucket.reserve(), self._bot_bucket.reserve()), ticket)
            return
        # The bot's rate is the gate's to keep, by priority: a first-come bucket here would
        # hold a safety reply behind every ordinary one this worker was asked for before it.
        await self._sleep(bucket.reserve(), ticket)
        if ticket is None:
            await self._gate.wait(chat_id)
            return
        await self._gate.wait(
            chat_id,
            abandoned=ticket.exited,
            urgent=ticket.exiting,
            priority=ticket.priority,
            asked_at=ticket.asked_at,
        )
        # Also when the gate gave a slot: the exit may have come during its last round trip.
        ticket.check()

    @staticmethod
    async def _sleep(seconds: float, ticket: _Ticket | None) -> None:
        if ticket is not None:
            await ticket.sleep(seconds)
        elif seconds > 0:
            await asyncio.sleep(seconds)


def _seconds(value: int | float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
