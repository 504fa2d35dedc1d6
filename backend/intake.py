"""Intake: the backend's consumer of the reports stream.

Exactly once in effect: a batch is acknowledged only after its cases are committed, and storing
is an insert that skips a report already stored (idempotency key, case id), so a redelivery
(after a crash between commit and XACK, or after another consumer reclaims it) stores nothing
twice. Acknowledged entries are deleted from the stream: the sealed copy in the store is the
record, and Redis keeps no more than it must.

An entry that can never be stored goes to the dead-letter stream instead of blocking the rest:
at once when it is malformed, after `max_failures` attempts when the database keeps refusing it.
An unreachable Redis or database is not the entry's fault: it is retried without counting.

An event about a case (a receipt issued, the victim unreachable) can reach one backend while
another still holds the case's report uncommitted: with several backends in the group, the two
entries of one turn are read by different consumers. Such an event is applied to the cases
already stored and stays pending for the rest; it is tried again with backoff (other entries
flow meanwhile) and dead-lettered only when its case has not appeared within
`redis_keys.INTAKE_EVENT_WAIT_MS` of intake first seeing it (issue 14).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT, StreamIdT
from sqlalchemy.exc import InterfaceError, OperationalError

from backend.cases import CaseRepository
from backend.core import redis_keys
from backend.core.conversation import AGE_GROUPS
from backend.core.errors import SealingError
from backend.core.fingerprints import describe
from backend.core.receipt_codes import DigestScheme
from backend.core.sealing import Envelope, RoutingHeader
from backend.core.stream_consumer import REDIS_TRANSIENT, StreamConsumer

log = logging.getLogger(__name__)

Entry = tuple[bytes, dict[bytes, bytes]]

# The widest value each routing field may have (the store's column sizes), so a report the
# database would refuse is refused here, the same way on SQLite and PostgreSQL.
_FIELD_LIMITS = {
    "case_id": 64,
    "language": 16,
    "channel": 16,
    "category": 32,
    "key_id": 32,
    "created_at": 40,
    "follows": 64,
    "age_group": 16,
}
_MAX_IDEMPOTENCY_KEY = 128
# A receipt code's digest, either scheme: 32 bytes in hex (backend/core/receipt_codes.py).
_DIGEST = re.compile(r"[0-9a-f]{64}")
_PRIORITY_RANGE = range(0, 101)


async def ensure_group(redis: Redis) -> None:
    try:
        await redis.xgroup_create(
            redis_keys.REPORTS_STREAM, redis_keys.INTAKE_GROUP, id="0", mkstream=True
        )
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _routable(header: RoutingHeader) -> bool:
    too_long = any(len(getattr(header, name)) > n for name, n in _FIELD_LIMITS.items())
    return (
        not too_long
        and header.case_id != ""
        and header.priority in _PRIORITY_RANGE
        # Only the coarse groups: a finer value (an exact age) is refused, never stored in clear.
        and header.age_group in ("", *AGE_GROUPS)
    )


def parse(fields: dict[bytes, bytes]) -> tuple[str, Envelope]:
    """An entry's idempotency key and envelope; SealingError if it cannot be stored as is."""
    try:
        key = fields[redis_keys.FIELD_IDEMPOTENCY_KEY.encode()].decode()
        envelope = Envelope.from_bytes(fields[redis_keys.FIELD_ENVELOPE.encode()])
    except (KeyError, UnicodeDecodeError) as exc:
        raise SealingError("entry lacks a readable idempotency key or envelope") from exc
    if not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY or not _routable(envelope.header):
        raise SealingError("routing header does not fit the case store")
    return key, envelope


@dataclass(frozen=True)
class Event:
    """A content-free event about stored cases (`redis_keys.EVENTS`)."""

    kind: str
    case_ids: list[str]
    code_digest: str | None = None  # receipt_issued only
    digest_scheme: DigestScheme = DigestScheme.LEGACY  # receipt_issued only
    priority: int = 0  # priority_raised only


def parse_event(fields: dict[bytes, bytes]) -> Event:
    """An event entry; SealingError if it is not a known, well-formed one."""
    try:
        kind = fields[redis_keys.FIELD_EVENT.encode()].decode()
        case_ids = fields[redis_keys.FIELD_CASE_IDS.encode()].decode().split()
        raw_digest = fields.get(redis_keys.FIELD_CODE_DIGEST.encode())
        code_digest = None if raw_digest is None else raw_digest.decode()
        priority = int(fields.get(redis_keys.FIELD_PRIORITY.encode(), b"0"))
        # A bot of before issue 14 names no scheme: its digests are Argon2id.
        raw_scheme = fields.get(redis_keys.FIELD_DIGEST_SCHEME.encode(), b"argon2id")
        scheme = DigestScheme(raw_scheme.decode())
    except (KeyError, UnicodeDecodeError, ValueError) as exc:
        raise SealingError("event lacks a readable kind, case ids or digest scheme") from exc
    too_long = any(len(c) > _FIELD_LIMITS["case_id"] for c in case_ids)
    if kind not in redis_keys.EVENTS or not case_ids or len(case_ids) > 100 or too_long:
        raise SealingError("event of an unknown kind, or without fitting case ids")
    if kind == redis_keys.EVENT_RECEIPT_ISSUED and (
        len(case_ids) != 1 or code_digest is None or not _DIGEST.fullmatch(code_digest)
    ):
        raise SealingError("receipt event without one case id and a code digest")
    if (
        kind == redis_keys.EVENT_PRIORITY_RAISED
        and not 0 < priority <= redis_keys.HANDOFF_MAX_PRIORITY
    ):
        raise SealingError("priority event without a priority of 1 to 3")
    return Event(kind, case_ids, code_digest, scheme, priority)


async def dead_letter_count(redis: Redis) -> int:
    """How many reports wait in the dead-letter stream: the console's alert."""
    return int(await redis.xlen(redis_keys.DEAD_LETTER_STREAM))


class Intake(StreamConsumer):
    # An unreachable database is not the entry's fault either.
    transient = (*REDIS_TRANSIENT, OperationalError, InterfaceError)

    def __init__(
        self,
        redis: Redis,
        cases: CaseRepository,
        consumer: str,
        *,
        claim_idle_ms: int = redis_keys.INTAKE_CLAIM_IDLE_MS,
        max_failures: int = redis_keys.INTAKE_MAX_FAILURES,
        batch: int = redis_keys.INTAKE_BATCH,
        event_wait_ms: int = redis_keys.INTAKE_EVENT_WAIT_MS,
        block_ms: int = redis_keys.INTAKE_BLOCK_MS,
    ) -> None:
        self._redis = redis
        self._cases = cases
        self._consumer = consumer
        self._claim_idle_ms = claim_idle_ms
        self._max_failures = max_failures
        self._batch = batch
        self._event_wait_ms = event_wait_ms
        self._read_block_ms = block_ms
        super().__init__()
        self.stored = 0
        # Our own pending entries need a look: at start, and after anything failed.
        self._recover = True
        # Events waiting for their case, by entry id: when to look again (monotonic seconds).
        self._waiting: dict[bytes, float] = {}

    async def _step(self) -> None:
        """One round, between blocking reads of at most `block_ms`."""
        if self._recover:
            await ensure_group(self._redis)
            await self._drain_own_pending()
        await self._reclaim_stale()
        await self._retry_waiting()
        entries = await self._read(">", block_ms=self._block_ms())
        await self.handle(entries)

    def _block_ms(self) -> int:
        """How long a read may block: until the next waiting event is due, at most the usual
        (never 0, which blocks for ever)."""
        if not self._waiting:
            return self._read_block_ms
        until_ms = (min(self._waiting.values()) - time.monotonic()) * 1000
        return max(1, min(self._read_block_ms, int(until_ms)))

    async def _retry_waiting(self) -> None:
        """Look again at the events whose time has come. XCLAIM to ourselves (idle 0) returns
        their fields and keeps their idle time low, so no other consumer takes them over while
        we are alive; entries acknowledged or deleted meanwhile come back as nothing."""
        now = time.monotonic()
        due = [entry_id for entry_id, at in self._waiting.items() if at <= now]
        if not due:
            return
        for entry_id in due:
            del self._waiting[entry_id]
        ids: list[StreamIdT] = list(due)
        claimed = await self._redis.xclaim(
            redis_keys.REPORTS_STREAM,
            redis_keys.INTAKE_GROUP,
            self._consumer,
            min_idle_time=0,
            message_ids=ids,
        )
        await self.handle([e for e in cast(list[Entry], claimed) if e and e[1]])

    def _service_away(self) -> None:
        log.warning("intake: redis or database unreachable; retrying")
        self._recover = True

    def _step_failed(self, exc: Exception) -> None:
        # Never the message or a traceback: a database error can echo the values it was given.
        log.error("intake: unexpected error; retrying: %s", describe(exc))
        self._recover = True

    async def _drain_own_pending(self) -> None:
        self._recover = False
        start = "0"
        while not self._stopping.is_set():
            entries = await self._read(start, block_ms=None, include_deleted=True)
            if not entries:
                return
            await self.handle([e for e in entries if e[1]])
            # Entries still pending (a failure) are behind this id; do not loop on them now.
            start = entries[-1][0].decode()

    async def _reclaim_stale(self) -> None:
        result = await self._redis.xautoclaim(
            redis_keys.REPORTS_STREAM,
            redis_keys.INTAKE_GROUP,
            self._consumer,
            min_idle_time=self._claim_idle_ms,
            start_id="0-0",
            count=self._batch,
        )
        claimed: list[Entry] = [e for e in result[1] if e[1]]
        if claimed:
            log.info("intake: reclaimed %d stale entries", len(claimed))
            await self.handle(claimed)

    async def _read(
        self, start: str, *, block_ms: int | None, include_deleted: bool = False
    ) -> list[Entry]:
        response = await self._redis.xreadgroup(
            redis_keys.INTAKE_GROUP,
            self._consumer,
            {redis_keys.REPORTS_STREAM: start},
            count=self._batch,
            block=block_ms,
        )
        if not response:
            return []
        # redis-py types XREADGROUP loosely; the reply is [[stream, [(id, fields), ...]]].
        entries = cast(list[Entry], response[0][1])  # type: ignore[index]  # the reply's shape is in the comment above
        if include_deleted:
            # A pending entry whose body was deleted reads as (id, None/{}); ack it away.
            gone = [e[0] for e in entries if not e[1]]
            if gone:
                await self._redis.xack(redis_keys.REPORTS_STREAM, redis_keys.INTAKE_GROUP, *gone)
            return entries
        return [e for e in entries if e[1]]

    async def handle(self, entries: Sequence[Entry]) -> None:
        """Store a batch in one transaction, then acknowledge it; divert what cannot be stored.
        Events (`redis_keys.FIELD_EVENT`) are applied after the batch's reports are stored, so an
        event about a report in the same batch finds its case."""
        reports: list[Entry] = []
        joins: list[Entry] = []
        events: list[tuple[bytes, dict[bytes, bytes], Event]] = []
        for entry_id, fields in entries:
            if redis_keys.FIELD_JOINS.encode() in fields:
                joins.append((entry_id, fields))
                continue
            if redis_keys.FIELD_EVENT.encode() not in fields:
                reports.append((entry_id, fields))
                continue
            try:
                events.append((entry_id, fields, parse_event(fields)))
            except SealingError as exc:
                log.error("intake: event %s is malformed; dead-lettered", entry_id.decode())
                await self._dead_letter(entry_id, fields, str(exc))
        await self._store(reports)
        for entry_id, fields in joins:
            self._waiting.pop(entry_id, None)
            await self._join(entry_id, fields)
        if events:
            await self._apply_events(events)

    async def _apply_events(self, events: list[tuple[bytes, dict[bytes, bytes], Event]]) -> None:
        """Apply each event to its cases stored now (applying one again changes nothing: each
        kind is idempotent), acknowledge those whose cases are all stored, hold the rest."""
        for entry_id, _, _ in events:
            self._waiting.pop(entry_id, None)
        stored = await self._cases.stored_case_ids([c for _, _, e in events for c in e.case_ids])
        await self._apply(
            [
                dataclasses.replace(e, case_ids=[c for c in e.case_ids if c in stored])
                for _, _, e in events
                if any(c in stored for c in e.case_ids)
            ]
        )
        early = [(i, f, e) for i, f, e in events if not set(e.case_ids) <= stored]
        done = [i for i, _, e in events if set(e.case_ids) <= stored]
        if done:
            await self._ack(done)
        if early:
            await self._hold(early, stored)

    async def _hold(
        self, early: list[tuple[bytes, dict[bytes, bytes], Event]], stored: set[str]
    ) -> None:
        """Keep events whose case is not stored yet pending, to look again soon; dead-letter
        one that has waited `event_wait_ms` since intake first saw it (on any backend)."""
        seconds, micros = await self._redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        names = [entry_id.decode() for entry_id, _, _ in early]
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hsetnx(redis_keys.INTAKE_EVENT_WAITING_KEY, name, now_ms)
            pipe.hmget(redis_keys.INTAKE_EVENT_WAITING_KEY, names)
            firsts = (await pipe.execute())[-1]
        for (entry_id, fields, event), first in zip(early, firsts, strict=True):
            waited_ms = now_ms - int(first or now_ms)
            if waited_ms >= self._event_wait_ms:
                missing = sum(1 for c in event.case_ids if c not in stored)
                log.error(
                    "intake: event %s names %d case(s) not stored within %d ms; dead-lettered",
                    entry_id.decode(),
                    missing,
                    waited_ms,
                )
                reason = f"{event.kind}: case not stored within {waited_ms} ms"
                await self._dead_letter(entry_id, fields, reason)
                continue
            # Backoff: a quarter of the wait so far, within the bounds.
            delay_ms = min(
                redis_keys.INTAKE_EVENT_RETRY_MAX_MS,
                max(redis_keys.INTAKE_EVENT_RETRY_MIN_MS, waited_ms // 4),
            )
            self._waiting[entry_id] = time.monotonic() + delay_ms / 1000
        log.info("intake: %d event(s) wait for their case to be stored", len(self._waiting))

    async def _join(self, entry_id: bytes, fields: dict[bytes, bytes]) -> None:
        """A handoff request that joins its conversation's case (issue 18), after the batch's
        reports are stored, so a report and the request just after it are one case.

        Its case may not be stored yet: the report is an earlier entry of the stream, but another
        backend may still be storing it (or retrying it). While any earlier entry is pending,
        the request stays pending too and is tried again next round. With none left, the case
        will never come (its report was dead-lettered, or it was shredded): the request is
        stored as a case of its own, so nothing the victim asked for is lost."""
        try:
            _, envelope = parse(fields)
        except SealingError as exc:
            log.error("intake: entry %s is malformed; dead-lettered", entry_id.decode())
            await self._dead_letter(entry_id, fields, str(exc))
            return
        if fields[redis_keys.FIELD_JOINS.encode()].decode() != envelope.header.case_id:
            log.error("intake: entry %s joins another case; dead-lettered", entry_id.decode())
            await self._dead_letter(entry_id, fields, "joins a case its header does not name")
            return
        if await self._cases.join_handoff(envelope):
            log.info("intake: a handoff joined case %s", envelope.header.case_id)
            await self._ack([entry_id])
            return
        earlier = await self._redis.xpending_range(
            redis_keys.REPORTS_STREAM,
            redis_keys.INTAKE_GROUP,
            min="-",
            max="(" + entry_id.decode(),
            count=1,
        )
        if earlier:
            log.info("intake: a handoff waits for its case %s", envelope.header.case_id)
            # Looked at again soon, as an event waiting for its case is (`_retry_waiting`).
            self._waiting[entry_id] = time.monotonic() + redis_keys.INTAKE_EVENT_RETRY_MIN_MS / 1000
            return
        await self._store([(entry_id, fields)])
        log.warning("intake: a handoff's case %s was never stored", envelope.header.case_id)

    async def _apply(self, events: list[Event]) -> None:
        unreachable = [
            case_id
            for event in events
            if event.kind == redis_keys.EVENT_VICTIM_UNREACHABLE
            for case_id in event.case_ids
        ]
        if unreachable:
            flagged = await self._cases.mark_victim_unreachable(unreachable)
            log.info("intake: %d case(s) flagged: victim unreachable", flagged)
        issued = [
            (event.code_digest, event.case_ids[0], event.digest_scheme)
            for event in events
            if event.kind == redis_keys.EVENT_RECEIPT_ISSUED and event.code_digest is not None
        ]
        if issued:
            kept = await self._cases.attach_receipts(issued)
            log.info("intake: %d of %d receipt(s) kept", kept, len(issued))
        erase = [
            case_id
            for event in events
            if event.kind == redis_keys.EVENT_ERASE_REQUESTED
            for case_id in event.case_ids
        ]
        if erase:
            marked = await self._cases.mark_erase_requested(erase)
            log.info("intake: %d case(s) marked: the victim asked to erase", marked)
        for event in events:
            if event.kind == redis_keys.EVENT_PRIORITY_RAISED:
                raised = await self._cases.raise_priority(event.case_ids, event.priority)
                log.info("intake: %d case(s) raised to priority %d", raised, event.priority)

    async def _store(self, entries: Sequence[Entry]) -> None:
        good: list[tuple[bytes, str, Envelope]] = []
        for entry_id, fields in entries:
            try:
                key, envelope = parse(fields)
            except SealingError as exc:
                log.error("intake: entry %s is malformed; dead-lettered", entry_id.decode())
                await self._dead_letter(entry_id, fields, str(exc))
                continue
            good.append((entry_id, key, envelope))
        if not good:
            return
        try:
            new = await self._cases.store_many([(k, e) for _, k, e in good])
        except self.transient:
            raise
        except Exception:
            # Something in the batch is refused: store one by one to find it, keep the rest.
            log.warning("intake: a batch of %d was refused; storing one by one", len(good))
            await self._one_by_one(entries, good)
            return
        self.stored += len(new)
        await self._ack([entry_id for entry_id, _, _ in good])

    async def _one_by_one(
        self, entries: Sequence[Entry], good: list[tuple[bytes, str, Envelope]]
    ) -> None:
        fields_of = dict(entries)
        for entry_id, key, envelope in good:
            try:
                self.stored += len(await self._cases.store_many([(key, envelope)]))
            except self.transient:
                raise
            except Exception as exc:
                await self._failed(entry_id, fields_of[entry_id], type(exc).__name__)
                continue
            await self._ack([entry_id])

    async def _failed(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        failures = await self._redis.hincrby(redis_keys.INTAKE_FAILURES_KEY, entry_id.decode(), 1)
        self._recover = True  # try it again soon, from our own pending entries
        if failures >= self._max_failures:
            log.error(
                "intake: entry %s failed %d times (%s); dead-lettered",
                entry_id.decode(),
                failures,
                reason,
            )
            await self._dead_letter(entry_id, fields, f"store failed {failures} times: {reason}")
        else:
            log.warning("intake: entry %s failed (%s); will retry", entry_id.decode(), reason)

    async def _dead_letter(self, entry_id: bytes, fields: dict[bytes, bytes], reason: str) -> None:
        # One MULTI: the copy and the acknowledgement happen together or not at all.
        # Only the fields the bot writes (sealed); anything else on the entry is not kept.
        known = {
            name.encode()
            for name in (
                redis_keys.FIELD_IDEMPOTENCY_KEY,
                redis_keys.FIELD_ENVELOPE,
                # An event's fields are content-free (case ids, a code's digest).
                redis_keys.FIELD_EVENT,
                redis_keys.FIELD_CASE_IDS,
                redis_keys.FIELD_CODE_DIGEST,
                redis_keys.FIELD_DIGEST_SCHEME,
                redis_keys.FIELD_PRIORITY,
            )
        }
        message: dict[FieldT, EncodableT] = {k: v for k, v in fields.items() if k in known}
        message[redis_keys.FIELD_DEAD_ENTRY_ID] = entry_id
        message[redis_keys.FIELD_DEAD_REASON] = reason
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(redis_keys.DEAD_LETTER_STREAM, message)
            pipe.xack(redis_keys.REPORTS_STREAM, redis_keys.INTAKE_GROUP, entry_id)
            pipe.xdel(redis_keys.REPORTS_STREAM, entry_id)
            pipe.hdel(redis_keys.INTAKE_FAILURES_KEY, entry_id.decode())
            pipe.hdel(redis_keys.INTAKE_EVENT_WAITING_KEY, entry_id.decode())
            await pipe.execute()

    async def _ack(self, entry_ids: list[bytes]) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(redis_keys.REPORTS_STREAM, redis_keys.INTAKE_GROUP, *entry_ids)
            pipe.xdel(redis_keys.REPORTS_STREAM, *entry_ids)
            pipe.hdel(redis_keys.INTAKE_FAILURES_KEY, *(i.decode() for i in entry_ids))
            pipe.hdel(redis_keys.INTAKE_EVENT_WAITING_KEY, *(i.decode() for i in entry_ids))
            await pipe.execute()
