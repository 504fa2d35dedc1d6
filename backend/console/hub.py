"""One transcript reader per backend process, fanning new entries out to the open chat sockets.

Every open case page holds a WebSocket; a blocking XREAD per socket would take a Redis
connection per counselor. The hub runs one XREAD BLOCK over every watched transcript, plus a
wake-up stream of its own (`redis_keys.console_hub_wake_stream`): a newly watched case is added to
the read at once by an XADD there, not after the block runs out. Entries stay sealed in the
hub; each socket opens them with its own counselor's keys.

What a subscriber may rely on: every entry with an id above the case's cursor at the moment it
subscribed reaches its queue, and every entry at or below that cursor was on the stream by then.
So a socket that subscribes first, reads the history (XRANGE) second and drops queued ids it has
already sent misses nothing and sends nothing twice.

A subscriber that falls far behind (a stalled browser) is dropped rather than buffered without
bound: its queue ends with `None` and `overflowed` set; its page reconnects after the last entry
it got and loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from backend.core import redis_keys

log = logging.getLogger(__name__)

RawEntry = tuple[str, dict[bytes, bytes]]
_Entries = list[tuple[bytes, dict[bytes, bytes]]]
# Entries waiting for one socket before it counts as stalled and is dropped.
QUEUE_LIMIT = 1000
_RETRY_FIRST_S = 0.1
_RETRY_MAX_S = 5.0
_STOP_TIMEOUT_S = 2.0


def stream_id(text: str) -> tuple[int, int]:
    """A stream entry id ("<ms>-<seq>") as a pair that orders like Redis orders ids."""
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Subscription:
    """One socket's view of one case: new raw entries, then `None` when it must end."""

    def __init__(self, case_id: str) -> None:
        self.case_id = case_id
        self.queue: asyncio.Queue[RawEntry | None] = asyncio.Queue()
        self.overflowed = False
        self.ended = False

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self.queue.put_nowait(None)


class TranscriptHub:
    def __init__(self, redis: Redis, *, block_ms: int = redis_keys.CONSOLE_HUB_BLOCK_MS) -> None:
        self._redis = redis
        self._wake = redis_keys.console_hub_wake_stream(secrets.token_hex(8))
        self._wake_cursor = "0-0"
        self._command = _ReadCommand(self._wake, block_ms)
        # Per watched case: the highest id known to be on its stream and fanned out.
        self._cursors: dict[str, str] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.reads = 0  # XREAD calls that returned, for tests and the bench

    @property
    def watched(self) -> frozenset[str]:
        return frozenset(self._cursors)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-transcript-hub")

    async def stop(self) -> None:
        """End every subscription and the reader; the wake-up stream is deleted."""
        self._stopping = True
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.end()
        self._subscribers.clear()
        self._cursors.clear()
        if self._task is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._nudge()
            try:
                await asyncio.wait_for(self._task, _STOP_TIMEOUT_S)
            except TimeoutError:  # pragma: no cover - Redis did not answer the wake-up
                log.warning("the transcript hub did not stop in time; cancelled")
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(self._wake)

    async def subscribe(self, case_id: str) -> Subscription:
        subscription = Subscription(case_id)
        if self._stopping:
            subscription.end()
            return subscription
        added = False
        if case_id not in self._cursors:
            newest = cast(
                _Entries,
                await self._redis.xrevrange(redis_keys.case_transcript_stream(case_id), count=1),
            )
            # Another socket may have added the case while we waited; its cursor is as good.
            if case_id not in self._cursors:
                self._cursors[case_id] = _text(newest[0][0]) if newest else "0-0"
                self._command.moved(case_id, self._cursors[case_id])
                added = True
        self._subscribers.setdefault(case_id, set()).add(subscription)
        if added:
            await self._nudge()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.case_id)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            # The reader drops the stream from its next read; no need to wake it for that.
            del self._subscribers[subscription.case_id]
            del self._cursors[subscription.case_id]

    async def _nudge(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(self._wake, {"wake": "1"}, maxlen=1)
        pipe.expire(self._wake, redis_keys.CONSOLE_HUB_WAKE_TTL_S)
        await pipe.execute()

    async def _run(self) -> None:
        # One connection of the pool for the hub's whole life: the blocking read is always on it.
        pool = self._redis.connection_pool
        delay = _RETRY_FIRST_S
        while not self._stopping:
            try:
                connection = await pool.get_connection()  # type: ignore[no-untyped-call]  # unannotated in redis-py
                break
            except (RedisError, OSError) as exc:
                log.warning("transcript hub cannot reach Redis (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
        else:
            return
        try:
            await self._read_forever(connection)
        finally:
            await pool.release(connection)

    async def _read_forever(self, connection: AbstractConnection) -> None:
        delay = _RETRY_FIRST_S
        while not self._stopping:
            cases = self._command.prepare(self._cursors)
            try:
                packed = self._command.packed(self._wake_cursor)
                await connection.send_packed_command(packed, check_health=False)
                response = await connection.read_response()
            except (RedisError, OSError) as exc:
                log.warning("transcript hub read failed (%s); retrying", type(exc).__name__)
                await connection.disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                continue
            delay = _RETRY_FIRST_S
            self.reads += 1
            for name, entries in _streams_of(response):
                if name == self._wake:
                    self._wake_cursor = entries[-1][0]
                    continue
                case_id = cases.get(name)
                if case_id is not None:
                    self._fan_out(case_id, entries)

    def _fan_out(self, case_id: str, entries: list[RawEntry]) -> None:
        cursor = self._cursors.get(case_id)
        if cursor is None:  # nobody watches it any more
            return
        subscribers = self._subscribers.get(case_id, set())
        for entry_id, fields in entries:
            if stream_id(entry_id) <= stream_id(cursor):
                continue
            cursor = entry_id
            for subscription in list(subscribers):
                if subscription.queue.qsize() >= QUEUE_LIMIT:
                    log.warning("a chat socket of case %s fell behind; it must reconnect", case_id)
                    subscription.overflowed = True
                    subscription.end()
                    self.unsubscribe(subscription)
                    continue
                subscription.queue.put_nowait((entry_id, fields))
        if case_id in self._cursors:
            self._cursors[case_id] = cursor
            self._command.moved(case_id, cursor)


def _bulk(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return b"$%d\r\n%s\r\n" % (len(raw), raw)


class _ReadCommand:
    """`XREAD COUNT n BLOCK ms STREAMS <names> <ids>`, packed by hand and only where it changed.

    redis-py packs a command argument by argument, joining each onto the growing buffer; at a
    couple of hundred watched transcripts that cost more than all the rest of a line's way to
    the counselor's page. Here the names are packed once per change of the watched set and
    each id once per move of that stream's cursor.
    """

    def __init__(self, wake: str, block_ms: int) -> None:
        args = ("XREAD", "COUNT", str(redis_keys.CONSOLE_HUB_BATCH), "BLOCK", str(block_ms))
        self._head = b"".join(_bulk(arg) for arg in args) + _bulk("STREAMS")
        self._wake = wake
        self._watched: tuple[str, ...] = ()
        self._names = _bulk(wake)
        self._cases: dict[str, str] = {}  # stream name -> case id
        self._ids: dict[str, bytes] = {}  # case id -> its packed cursor

    def prepare(self, cursors: dict[str, str]) -> dict[str, str]:
        """Read these cases from their cursors; the case id of each transcript stream name."""
        watched = tuple(cursors)
        if watched != self._watched:
            self._watched = watched
            self._cases = {redis_keys.case_transcript_stream(c): c for c in watched}
            self._names = b"".join(_bulk(name) for name in (self._wake, *self._cases))
            self._ids = {c: _bulk(cursors[c]) for c in watched}
        return self._cases

    def moved(self, case_id: str, cursor: str) -> None:
        if case_id in self._ids:
            self._ids[case_id] = _bulk(cursor)

    def packed(self, wake_cursor: str) -> bytes:
        count = 6 + 2 * (1 + len(self._watched))
        ids = b"".join(self._ids[c] for c in self._watched)
        return b"*%d\r\n" % count + self._head + self._names + _bulk(wake_cursor) + ids


def _streams_of(response: object) -> list[tuple[str, list[RawEntry]]]:
    """A raw XREAD reply (RESP2 list or RESP3 map, or nothing after the block) as entries."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else cast(list[list[object]], response)
    found: list[tuple[str, list[RawEntry]]] = []
    for name, entries in pairs:
        decoded: list[RawEntry] = []
        for entry_id, flat in cast(list[tuple[bytes, list[bytes] | None]], entries):
            values = flat or []
            fields = dict(zip(values[::2], values[1::2], strict=True))
            decoded.append((_text(entry_id), fields))
        found.append((_text(cast(bytes, name)), decoded))
    return found
