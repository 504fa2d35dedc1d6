"""The relay worker: carries what the console sends (a counselor joined, a line, the chat ended)
to the victim, through their door, and tells the console what became of each line.

Bot workers share the relay outbox through a consumer group (`backend.core.live_chat`), so each
entry is carried by one worker. An entry is acknowledged only after it was carried out: a worker
that dies holding entries leaves them pending, and another takes them over after
`RELAY_CLAIM_IDLE_MS`. A worker that restarts first carries its own pending entries.

What cannot be carried out is not retried for ever: a victim who cannot be reached (session
gone, bot blocked, a line sealed for another conversation) is a FAILED event at once; an
unexpected error is retried a few times (`RELAY_MAX_FAILURES`, counted in Redis, so a restart
does not reset the count) and then reported FAILED too. One case's entries are carried in order;
different cases concurrently.

Logs carry case ids and kinds, never a line, a pseudonym or a platform id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Outbound
from backend.core.errors import SealingError
from backend.core.live_chat import Event, EventKind, OutboxItem, OutboxKind, Sender
from backend.core.stream_consumer import StreamConsumer
from bot.channel import Delivery
from bot.live import VictimSide, how_replies_key, reply_key_of
from bot.runtime import ConversationRuntime

log = logging.getLogger(__name__)


class VictimUnreachableError(Exception):
    """The victim of this entry cannot be reached any more: report FAILED, do not retry."""


class RelayWorker(StreamConsumer):
    def __init__(
        self,
        redis: Redis,
        runtime: ConversationRuntime,
        victims: VictimSide,
        doors: Mapping[str, Delivery],
        consumer: str,
        *,
        claim_idle_ms: int = redis_keys.RELAY_CLAIM_IDLE_MS,
        max_failures: int = redis_keys.RELAY_MAX_FAILURES,
        block_ms: int = redis_keys.RELAY_BLOCK_MS,
    ) -> None:
        self._redis = redis
        self._runtime = runtime
        self._victims = victims
        self._chat = victims.chat
        self._doors = doors
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._max_failures = max_failures
        self._block_ms = block_ms
        super().__init__()
        self._ready = False
        self.carried = 0

    async def _step(self) -> None:
        if not self._ready:
            await self._chat.ensure_relay_group()
            self._ready = True
        items = await self._chat.take_over_stale(self._consumer, self._claim_idle_ms)
        if items:
            log.info("relay: took over %d stale entries", len(items))
        else:
            items = await self._chat.next_for_victims(
                self._consumer, count=redis_keys.RELAY_BATCH, block_ms=self._block_ms
            )
        if not await self.carry(items):
            await self._pause()  # an entry failed and stays pending: not in a tight loop

    def _service_away(self) -> None:
        log.warning("relay: redis unreachable; retrying")
        self._ready = False

    def _step_failed(self, exc: Exception) -> None:
        log.error("relay: unexpected %s; retrying", type(exc).__name__)
        self._ready = False

    async def carry(self, items: Sequence[OutboxItem]) -> bool:
        """Carry a batch: each case's entries in order, cases concurrently; False if an entry
        failed and was left pending for a retry."""
        by_case: dict[str, list[OutboxItem]] = {}
        for item in items:
            by_case.setdefault(item.case_id, []).append(item)
        results = await asyncio.gather(
            *(self._carry_case(group) for group in by_case.values()), return_exceptions=True
        )
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return all(results)

    async def _carry_case(self, items: list[OutboxItem]) -> bool:
        for item in items:
            try:
                await self._carry(item)
            except self.transient:
                raise
            except VictimUnreachableError as exc:
                log.info("relay: %s for case %s not delivered: %s", item.kind, item.case_id, exc)
                await self._give_up(item)
            except Exception as exc:
                if not await self._failed(item, type(exc).__name__):
                    return False  # later entries of this case wait, to stay in order
                continue
            await self._done(item)
        return True

    async def _carry(self, item: OutboxItem) -> None:
        link = await self._victims.links.find(item.case_id)
        if link is None:
            raise VictimUnreachableError("no conversation for this case")
        door = self._doors.get(link.channel)
        if door is None:
            raise VictimUnreachableError(f"no door for channel {link.channel}")
        if item.kind is OutboxKind.JOINED:
            session = await self._runtime.join(link.pseudonym, item.case_id)
            if session is None:
                raise VictimUnreachableError("the conversation is gone")
            keys = ("live.joined", how_replies_key(link.channel), "live.how_exit")
            said = [Outbound(self._runtime.text(key, session.language)) for key in keys]
            outcome = await door.deliver(
                link.pseudonym, item.case_id, said, language=session.language
            )
            if outcome is EventKind.FAILED:
                raise VictimUnreachableError("the door could not reach the victim")
        elif item.kind is OutboxKind.ENDED:
            # The link stays: the counselor may start the chat again (`ConversationRuntime.leave`).
            session = await self._runtime.leave(link.pseudonym, item.case_id)
            if session is None:
                await self._victims.links.forget(item.case_id)
                return  # the victim had already left: nobody to tell
            text = self._runtime.text("live.ended", session.language)
            await door.deliver(
                link.pseudonym, item.case_id, [Outbound(text)], language=session.language
            )
        else:
            session = await self._runtime.session_of(link.pseudonym)
            if session is None or session.handoff_case != item.case_id:
                raise VictimUnreachableError("the conversation is gone")
            try:
                line = self._chat.line_for_victim(item, reply_key_of(session))
            except (SealingError, ValueError):
                raise VictimUnreachableError("the line does not open here") from None
            label = self._runtime.text("live.counselor", session.language)
            outcome = await door.deliver(
                link.pseudonym,
                item.case_id,
                [Outbound(f"{label}: {line.text}")],
                language=session.language,
                ref=line.id,
            )
            event = Event(outcome, Sender.VICTIM, time.time(), line.id)
            await self._chat.event(item.case_id, event)
            self._runtime.metrics.live_delivery(item.entry_id, outcome.value)

    async def _give_up(self, item: OutboxItem) -> None:
        """Tell the console this one will not arrive (a line by its id, a notice with none)."""
        if item.kind is not OutboxKind.ENDED:
            failed = Event(EventKind.FAILED, Sender.VICTIM, time.time(), ref=item.ref)
            await self._chat.event(item.case_id, failed)

    async def _failed(self, item: OutboxItem, reason: str) -> bool:
        """Count an unexpected failure; True once the entry is given up (FAILED, acked)."""
        failures = await self._redis.hincrby(redis_keys.RELAY_FAILURES_KEY, item.entry_id, 1)
        if failures < self._max_failures:
            log.warning("relay: entry %s failed (%s); will retry", item.entry_id, reason)
            return False
        log.error("relay: entry %s failed %d times (%s); given up", item.entry_id, failures, reason)
        await self._give_up(item)
        await self._done(item)
        return True

    async def _done(self, item: OutboxItem) -> None:
        await self._chat.ack(item)
        await self._redis.hdel(redis_keys.RELAY_FAILURES_KEY, item.entry_id)
        self.carried += 1
