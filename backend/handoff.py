"""The live chat of a handed-off case: one Redis stream per direction, sealed entries only.

- victim → counselor (`case_to_counselor_stream`): sealed by the bot to the centre public key,
  opened in a counselor's session, like a report;
- counselor → victim (`case_to_victim_stream`): sealed by the backend to the case's reply key,
  an X25519 key pair the bot makes per handoff and keeps the private half of only in the
  victim's encrypted session. The backend can write to the victim but not read its own
  replies back from Redis, and a Redis snapshot reads nothing either way.

The routing header of each message carries the case id, so a message moved to another case's
stream does not open. Streams are capped (`CASE_STREAM_MAXLEN`); the record is the case store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from redis.asyncio import Redis

from backend import keys, streams
from backend.errors import SealingError
from backend.sealing import Envelope, RoutingHeader, open_envelope, seal

MESSAGE_CATEGORY = "message"


@dataclass(frozen=True)
class ChatMessage:
    entry_id: str
    body: bytes


def _header(case_id: str, channel: str, key: X25519PublicKey) -> RoutingHeader:
    return RoutingHeader(
        case_id=case_id,
        priority=0,
        language="",
        channel=channel,
        category=MESSAGE_CATEGORY,
        key_id=keys.key_id(key),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class HandoffStreams:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def _send(
        self, stream: str, header: RoutingHeader, body: bytes, key: X25519PublicKey
    ) -> str:
        sealed = seal(body, header, key).to_bytes()
        entry_id = await self._redis.xadd(
            stream,
            {streams.FIELD_SEALED: sealed},
            maxlen=streams.CASE_STREAM_MAXLEN,
            approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def to_counselor(self, case_id: str, body: bytes, center_key: X25519PublicKey) -> str:
        """Bot side: a victim's message, sealed to the centre."""
        header = _header(case_id, "victim", center_key)
        return await self._send(streams.case_to_counselor_stream(case_id), header, body, center_key)

    async def to_victim(self, case_id: str, body: bytes, reply_key: X25519PublicKey) -> str:
        """Backend side: a counselor's reply, sealed to the case's reply key."""
        header = _header(case_id, "counselor", reply_key)
        return await self._send(streams.case_to_victim_stream(case_id), header, body, reply_key)

    async def read(
        self, stream: str, case_id: str, private_key: X25519PrivateKey, after: str = "0-0"
    ) -> list[ChatMessage]:
        """Messages after `after`, opened; SealingError if one was not sealed for this case."""
        response = await self._redis.xrange(stream, min=f"({after}" if after != "0-0" else "-")
        messages = []
        for entry_id, fields in cast(list[tuple[bytes, dict[bytes, bytes]]], response):
            envelope = Envelope.from_bytes(fields[streams.FIELD_SEALED.encode()])
            if envelope.header.case_id != case_id:
                raise SealingError("a message of another case is on this case's stream")
            messages.append(ChatMessage(entry_id.decode(), open_envelope(envelope, private_key)))
        return messages
