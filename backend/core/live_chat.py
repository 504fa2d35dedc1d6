"""The live chat of a handed-off case, over Redis streams: the wire protocol both sides share.

One stream per case and one shared one (names in `backend.core.redis_keys`):

- the transcript (`case_transcript_stream`): the whole chat in order, as the counselor sees it.
  A line from either side is sealed to the centre key (like a report), so a counselor who
  reconnects, or a colleague who takes the case over, reads it as it was. Delivery and presence
  events (`Event`) ride on the same stream, in clear but content-free, so one blocking read
  gives a console everything in order.
- the relay outbox (`RELAY_OUTBOX_STREAM`, consumer group `RELAY_GROUP`): one entry per thing
  the bot must carry to a victim (a line, "a counselor joined", "the chat ended"). A line is
  sealed once more, to the conversation's reply key, an X25519 key pair the bot makes per
  conversation and keeps the private half of only in the victim's encrypted session: the
  backend can write to the victim but cannot read the outbox back, and a Redis snapshot reads
  nothing on either stream. Bot workers share the outbox through the consumer group, so each
  entry is carried by one worker, and an entry a dead worker held is taken over, as the intake
  does with reports.

A counselor's line goes onto the transcript and the outbox in one MULTI, so it is never on one
and missing from the other. The routing header of each sealed line carries
the case id: a line moved onto another case's stream does not open.

The bot learns a counselor's reply key through no channel of its own: the public half travels
in the sealed handoff request (`REPLY_KEY_ANSWER`), so only a signed-in counselor reads it.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from backend.core import keys, redis_keys
from backend.core.conversation import MAX_TEXT_CHARS
from backend.core.errors import SealingError
from backend.core.sealing import Envelope, RoutingHeader, open_envelope, seal

log = logging.getLogger(__name__)

MESSAGE_CATEGORY = "message"
# The answer of a sealed handoff request that carries the conversation's reply key (base64).
REPLY_KEY_ANSWER = "reply_key"


class Sender(StrEnum):
    VICTIM = "victim"
    COUNSELOR = "counselor"


class EventKind(StrEnum):
    # A counselor took the chat: the bot tells the victim and relays their words from now on.
    JOINED = "joined"
    # The bot handed a counselor's line to the platform (`ref` = the line's id).
    DELIVERED = "delivered"
    # The platform cannot take it now (e.g. Kakao replies only to the next message): it waits.
    HELD = "held"
    # It could not be delivered at all (the victim blocked the bot, the session expired).
    FAILED = "failed"
    # The chat is over: the counselor ended it, or the victim left (quick exit).
    ENDED = "ended"
    # Triage matched the victim's words (`ref` = the rule's flag: self_harm, threat, minor):
    # the counselor's panel shows an alert; the case's priority rises with it.
    TRIAGE = "triage"


class OutboxKind(StrEnum):
    LINE = "line"
    JOINED = "joined"
    ENDED = "ended"


@dataclass(frozen=True)
class Line:
    """One chat message; `id` is made by the sender and names it in delivery events."""

    id: str
    sender: Sender
    text: str
    at: float

    def to_bytes(self) -> bytes:
        data = {"id": self.id, "sender": self.sender.value, "text": self.text, "at": self.at}
        return json.dumps(data, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> Line:
        try:
            data = json.loads(raw)
            return cls(
                str(data["id"]), Sender(data["sender"]), str(data["text"]), float(data["at"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SealingError("a chat line is malformed") from exc


@dataclass(frozen=True)
class Event:
    kind: EventKind
    by: Sender
    at: float
    ref: str = ""  # the line an event is about, if any


@dataclass(frozen=True)
class TranscriptEntry:
    entry_id: str
    # Exactly one of the two is set.
    line: Line | None = None
    event: Event | None = None


@dataclass(frozen=True)
class OutboxItem:
    """One thing for the bot to carry to a victim; `entry_id` names it for `ack`."""

    entry_id: str
    case_id: str
    kind: OutboxKind
    # For a line: the line, sealed to the conversation's reply key.
    sealed: bytes = b""
    # For a line: its id, in clear (a random name, no content), so a line that cannot be opened
    # any more (the victim's session is gone) is still reported FAILED by name.
    ref: str = ""


def new_line(sender: Sender, text: str, now: float | None = None) -> Line:
    if not text.strip() or len(text) > MAX_TEXT_CHARS:
        raise ValueError(f"a chat line is 1 to {MAX_TEXT_CHARS} characters")
    return Line(secrets.token_hex(8), sender, text, time.time() if now is None else now)


def _header(case_id: str, sender: Sender, key: X25519PublicKey) -> RoutingHeader:
    return RoutingHeader(
        case_id=case_id,
        priority=0,
        language="",
        channel=sender.value,
        category=MESSAGE_CATEGORY,
        key_id=keys.key_id(key),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def sealed_line(case_id: str, line: Line, key: X25519PublicKey) -> bytes:
    """A line sealed to `key`, its routing header naming the case: a transcript entry's
    `FIELD_SEALED` (to the centre key) or an outbox line's (to the reply key)."""
    return seal(line.to_bytes(), _header(case_id, line.sender, key), key).to_bytes()


def _open(case_id: str, raw: bytes, private_keys: Mapping[str, X25519PrivateKey]) -> Line:
    envelope = Envelope.from_bytes(raw)
    if envelope.header.case_id != case_id:
        raise SealingError("a message of another case is on this case's stream")
    key = private_keys.get(envelope.header.key_id)
    if key is None:
        raise SealingError("no key for this message")
    return Line.from_bytes(open_envelope(envelope, key))


def _decoded(fields: dict[bytes, bytes]) -> dict[str, bytes]:
    return {k.decode(): v for k, v in fields.items()}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


Entries = list[tuple[bytes, dict[bytes, bytes]]]


# KEYS: the case's transcript, the archive. ARGV: maxlen, ttl_s, case id, then field/value
# pairs. The entry goes onto the live buffer (trimmed, expiry renewed) and, under the id it got,
# onto the archive the backend stores in SQL: one round trip, all or nothing.
_APPEND = """
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'case', ARGV[3], 'entry', id, unpack(fields))
return id
"""


class LiveChat:
    """Both ends of the protocol; the bot uses the victim's side, the console the counselor's."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    def _on_transcript(
        self, target: Redis | Pipeline, case_id: str, fields: Mapping[FieldT, EncodableT]
    ) -> Any:
        """Queue (on a pipeline) or send one transcript entry: the live buffer (trimmed, its
        expiry renewed) and the archive the backend keeps in SQL, in one atomic script."""
        args: list[EncodableT] = [
            redis_keys.CASE_STREAM_MAXLEN,
            redis_keys.CASE_TRANSCRIPT_TTL_S,
            case_id,
        ]
        for name, value in fields.items():
            args += [name, value]
        keys = [redis_keys.case_transcript_stream(case_id), redis_keys.TRANSCRIPT_ARCHIVE_STREAM]
        # EVAL, not redis-py's Script: in a pipeline that asks SCRIPT EXISTS first, on another
        # pooled connection, each time (a round trip more, and the pool ran dry at 200 chats),
        # and an EVALSHA that met NOSCRIPT inside MULTI would leave the rest half done.
        return target.eval(_APPEND, len(keys), *keys, *args)

    # -- bot side ---------------------------------------------------------------------------

    async def from_victim(
        self,
        case_id: str,
        line: Line,
        center_key: X25519PublicKey,
        *,
        keep_alive: tuple[str, int] | None = None,
    ) -> str:
        """A victim's line onto the transcript, sealed to the centre; its entry id.
        `keep_alive` (key, ttl_s): a key whose expiry the line renews, in the same round trip
        (the bot's link from the case to the conversation)."""
        pipe = self._redis.pipeline(transaction=False)
        self._on_transcript(
            pipe, case_id, {redis_keys.FIELD_SEALED: sealed_line(case_id, line, center_key)}
        )
        if keep_alive is not None:
            pipe.expire(*keep_alive)
        entry_id, *_renewed = await pipe.execute()
        return _text(entry_id)

    async def event(self, case_id: str, event: Event) -> str:
        """A content-free delivery or presence event onto the transcript."""
        entry_id = await self._on_transcript(self._redis, case_id, _event_fields(event))
        return _text(entry_id)

    async def events(self, events: Sequence[tuple[str, Event]]) -> None:
        """Events (case id, event) onto their transcripts, in order, in one round trip."""
        if not events:
            return
        pipe = self._redis.pipeline(transaction=False)
        for case_id, event in events:
            self._on_transcript(pipe, case_id, _event_fields(event))
        await pipe.execute()

    async def ensure_relay_group(self) -> None:
        try:
            await self._redis.xgroup_create(
                redis_keys.RELAY_OUTBOX_STREAM, redis_keys.RELAY_GROUP, id="0", mkstream=True
            )
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def next_for_victims(
        self, consumer: str, *, count: int = 100, block_ms: int | None = None
    ) -> list[OutboxItem]:
        """Outbox entries for this bot worker: first its own unacknowledged ones (after a
        restart), then new ones; `ack` each once carried out."""
        items: list[OutboxItem] = []
        for start in ("0", ">"):
            response = await self._redis.xreadgroup(
                redis_keys.RELAY_GROUP,
                consumer,
                {redis_keys.RELAY_OUTBOX_STREAM: start},
                count=count,
                block=None if start == "0" else block_ms,
            )
            for _stream, entries in cast(list[tuple[bytes, Entries]], response or []):
                items.extend(await self._readable(entries))
            if items:
                break
        return items

    async def take_over_stale(self, consumer: str, idle_ms: int) -> list[OutboxItem]:
        """Entries another worker took and never acknowledged (it died): now this one's."""
        response = await self._redis.xautoclaim(
            redis_keys.RELAY_OUTBOX_STREAM,
            redis_keys.RELAY_GROUP,
            consumer,
            idle_ms,
            "0-0",
            count=100,
        )
        return await self._readable(cast(Entries, response[1]))

    async def _readable(self, entries: Entries) -> list[OutboxItem]:
        """The entries as items; one that can never be carried out (malformed, or its body
        gone) is acknowledged away at once, or every read would offer it again for ever."""
        items: list[OutboxItem] = []
        for entry_id, fields in entries:
            try:
                items.append(_outbox_item(entry_id, fields or {}))
            except SealingError:
                log.warning("relay outbox entry %s is malformed; dropped", _text(entry_id))
                await self._redis.xack(
                    redis_keys.RELAY_OUTBOX_STREAM, redis_keys.RELAY_GROUP, entry_id
                )
                await self._redis.xdel(redis_keys.RELAY_OUTBOX_STREAM, entry_id)
        return items

    async def ack(self, item: OutboxItem) -> None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.xack(redis_keys.RELAY_OUTBOX_STREAM, redis_keys.RELAY_GROUP, item.entry_id)
        pipe.xdel(redis_keys.RELAY_OUTBOX_STREAM, item.entry_id)
        await pipe.execute()

    def line_for_victim(self, item: OutboxItem, reply_key: X25519PrivateKey) -> Line:
        """The counselor's line an outbox item carries, opened with the conversation's reply key
        (SealingError if it was sealed for another conversation or case)."""
        kid = keys.key_id(reply_key.public_key())
        return _open(item.case_id, item.sealed, {kid: reply_key})

    # -- console side -----------------------------------------------------------------------

    async def from_counselor(
        self,
        case_id: str,
        line: Line,
        center_key: X25519PublicKey,
        reply_key: X25519PublicKey,
    ) -> str:
        """A counselor's line: onto the transcript (sealed to the centre), the victim's stream
        (sealed to the reply key) and the relay outbox, all or nothing. Its transcript id."""
        pipe = self._redis.pipeline(transaction=True)
        self._on_transcript(
            pipe, case_id, {redis_keys.FIELD_SEALED: sealed_line(case_id, line, center_key)}
        )
        pipe.xadd(
            redis_keys.RELAY_OUTBOX_STREAM,
            {
                redis_keys.FIELD_CASE: case_id,
                redis_keys.FIELD_KIND: OutboxKind.LINE.value,
                redis_keys.FIELD_SEALED: sealed_line(case_id, line, reply_key),
                redis_keys.FIELD_REF: line.id,
            },
        )
        transcript_id, _outbox = await pipe.execute()
        return _text(transcript_id)

    async def notify_victim(self, case_id: str, kind: OutboxKind, by: Sender) -> None:
        """`joined` or `ended`: onto the transcript as an event and into the outbox, together."""
        if kind is OutboxKind.LINE:
            raise ValueError("a line is sent with from_counselor")
        event = EventKind.JOINED if kind is OutboxKind.JOINED else EventKind.ENDED
        pipe = self._redis.pipeline(transaction=True)
        self._on_transcript(pipe, case_id, _event_fields(Event(event, by, time.time())))
        pipe.xadd(
            redis_keys.RELAY_OUTBOX_STREAM,
            {redis_keys.FIELD_CASE: case_id, redis_keys.FIELD_KIND: kind.value},
        )
        await pipe.execute()

    async def transcript(
        self,
        case_id: str,
        private_keys: Mapping[str, X25519PrivateKey],
        after: str = "0-0",
    ) -> list[TranscriptEntry]:
        """Everything after `after`, lines opened (SealingError if one was not sealed for this
        case or with a key the counselor holds)."""
        low = "-" if after == "0-0" else f"({after}"
        found = await self._redis.xrange(redis_keys.case_transcript_stream(case_id), min=low)
        return [
            transcript_entry(case_id, entry_id, fields, private_keys)
            for entry_id, fields in cast(Entries, found)
        ]

    async def presence(self, case_id: str) -> Event | None:
        """The latest `joined` or `ended` event on the transcript: whether the chat is on, over,
        or (None) never started. Read backwards in pages; events are in clear, nothing opens."""
        high = "+"
        while True:
            page = cast(
                Entries,
                await self._redis.xrevrange(
                    redis_keys.case_transcript_stream(case_id), max=high, count=100
                ),
            )
            for entry_id, fields in page:
                data = _decoded(fields)
                kind = data.get(redis_keys.FIELD_EVENT)
                if kind in (EventKind.JOINED.value.encode(), EventKind.ENDED.value.encode()):
                    entry = transcript_entry(case_id, entry_id, fields, {})
                    return entry.event
            if len(page) < 100:
                return None
            high = f"({_text(page[-1][0])}"


def _event_fields(event: Event) -> dict[FieldT, EncodableT]:
    """An event as a transcript entry's fields; `transcript_entry` reads them back."""
    return {
        redis_keys.FIELD_EVENT: event.kind.value,
        redis_keys.FIELD_BY: event.by.value,
        redis_keys.FIELD_AT: repr(event.at),
        redis_keys.FIELD_REF: event.ref,
    }


def transcript_entry(
    case_id: str,
    entry_id: bytes | str,
    fields: dict[bytes, bytes],
    private_keys: Mapping[str, X25519PrivateKey],
) -> TranscriptEntry:
    """One raw transcript entry (e.g. from a console's own XREAD), opened."""
    data = _decoded(fields)
    if redis_keys.FIELD_SEALED in data:
        return TranscriptEntry(
            _text(entry_id), line=_open(case_id, data[redis_keys.FIELD_SEALED], private_keys)
        )
    try:
        event = Event(
            EventKind(_text(data[redis_keys.FIELD_EVENT])),
            Sender(_text(data[redis_keys.FIELD_BY])),
            float(_text(data[redis_keys.FIELD_AT])),
            _text(data.get(redis_keys.FIELD_REF, b"")),
        )
    except (KeyError, ValueError) as exc:
        raise SealingError("a transcript event is malformed") from exc
    return TranscriptEntry(_text(entry_id), event=event)


def _outbox_item(entry_id: bytes, fields: dict[bytes, bytes]) -> OutboxItem:
    data = _decoded(fields)
    try:
        return OutboxItem(
            _text(entry_id),
            _text(data[redis_keys.FIELD_CASE]),
            OutboxKind(_text(data[redis_keys.FIELD_KIND])),
            data.get(redis_keys.FIELD_SEALED, b""),
            _text(data.get(redis_keys.FIELD_REF, b"")),
        )
    except (KeyError, ValueError, UnicodeDecodeError) as exc:
        raise SealingError("a relay outbox entry is malformed") from exc


def encode_reply_key(key: X25519PublicKey) -> str:
    return keys.encode_public_key(key)


def reply_key_of(answers: Mapping[str, object]) -> X25519PublicKey | None:
    """The reply key from an opened handoff request's answers; None if it carries none."""
    raw = answers.get(REPLY_KEY_ANSWER)
    if not isinstance(raw, str):
        return None
    try:
        return keys.decode_public_key(raw)
    except (ValueError, TypeError):
        return None
