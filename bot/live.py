"""The victim's side of a live chat with a counselor, as the runtime and the relay share it.

At handoff the conversation gets a reply key pair (the private half only in the encrypted
session, the public half in the sealed request, so only a counselor learns it) and a link from
the case id to the conversation, so the relay can find the victim when a counselor writes.

Doors that cannot speak first (web chat, KakaoTalk) get what the relay brings as held lines:
one encrypted list entry each, per conversation, expiring like the session, handed out by the
page's long poll or with the answer to the victim's next message. Handing a held line out is
its delivery, and is recorded as such on the transcript.

Everything here is sealed with keys derived from the bot's root secret and bound to its Redis
key name (`RecordCipher`): the link names the victim's pseudonym, the held lines the
counselor's words.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from redis.asyncio import Redis

from backend import keys, streams
from backend.conversation import Outbound, Pseudonym, Session
from backend.handoff import Event, EventKind, LiveChat, Sender, encode_reply_key, new_line
from backend.record_cipher import RecordCipher

log = logging.getLogger(__name__)

# The button a door that cannot push offers while a chat is pending or live: "any replies?".
CHECK_BUTTON = "live_check"
# Channels that cannot push tell the victim their own way replies arrive; the rest say "here".
_HOLDING_HOW = {"web": "live.how_web", "kakao": "live.how_kakao"}


def how_replies_key(channel: str) -> str:
    """The text telling a victim how a counselor's replies reach them on `channel`."""
    return _HOLDING_HOW.get(channel, "live.how_push")


@dataclass(frozen=True)
class Link:
    pseudonym: Pseudonym = field(repr=False)
    channel: str


@dataclass(frozen=True)
class HeldLine:
    case_id: str
    text: str = field(repr=False)
    ref: str = ""  # the counselor line's id; "" for a notice (joined, ended)


class RelayLinks:
    """Case id -> the conversation waiting for, or chatting with, that case's counselor."""

    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "relay-link")
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return "RelayLinks(<key hidden>)"

    async def link(self, case_id: str, pseudonym: Pseudonym, channel: str) -> None:
        key = streams.relay_link_key(case_id)
        plain = json.dumps([pseudonym, channel]).encode()
        await self._redis.set(key, self._cipher.seal(key, plain), ex=self._ttl_s)

    async def find(self, case_id: str) -> Link | None:
        key = streams.relay_link_key(case_id)
        plain = self._cipher.open(key, await self._redis.get(key))
        if plain is None:
            return None
        pseudonym, channel = json.loads(plain)
        return Link(Pseudonym(str(pseudonym)), str(channel))

    def keep_alive(self, case_id: str) -> tuple[str, int]:
        """A chat under way lives as long as the session it belongs to: the link's key and
        TTL, renewed with each of the victim's lines (`LiveChat.from_victim`)."""
        return streams.relay_link_key(case_id), self._ttl_s

    async def forget(self, case_id: str) -> None:
        await self._redis.delete(streams.relay_link_key(case_id))


class HeldLines:
    """What waits for a victim whose door cannot push; also the `Delivery` of such doors."""

    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "held-lines")
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return "HeldLines(<key hidden>)"

    async def deliver(
        self,
        pseudonym: Pseudonym,
        case_id: str,
        messages: Sequence[Outbound],
        *,
        language: str,
        ref: str = "",
    ) -> EventKind:
        del language  # the texts are already in the victim's language
        key = streams.held_lines_key(pseudonym)
        entries = [
            self._cipher.seal(key, json.dumps([case_id, m.text, ref], ensure_ascii=False).encode())
            for m in messages
        ]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *entries)
            pipe.ltrim(key, -streams.HELD_LINES_MAX, -1)
            pipe.expire(key, self._ttl_s)
            await pipe.execute()
        return EventKind.HELD

    async def waiting(self, pseudonym: Pseudonym) -> bool:
        return bool(await self._redis.exists(streams.held_lines_key(pseudonym)))

    async def take(self, pseudonym: Pseudonym) -> list[HeldLine]:
        """Every held line, oldest first, removed in the same MULTI: two takers (the page's
        poll and a turn) never both get one."""
        key = streams.held_lines_key(pseudonym)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            sealed, _deleted = await pipe.execute()
        lines = []
        for entry in sealed:
            plain = self._cipher.open(key, entry)
            if plain is not None:
                case_id, text, ref = json.loads(plain)
                lines.append(HeldLine(str(case_id), str(text), str(ref)))
        return lines

    async def drop(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(streams.held_lines_key(pseudonym))


class VictimSide:
    """The runtime's and the relay's shared view of live chats: links, held lines, the chat."""

    def __init__(
        self,
        redis: Redis,
        root_secret: bytes,
        ttl_s: int,
        center_key: X25519PublicKey,
        *,
        holding_channels: Collection[str] = (),
    ) -> None:
        self.chat = LiveChat(redis)
        self.links = RelayLinks(redis, root_secret, ttl_s)
        self.held = HeldLines(redis, root_secret, ttl_s)
        self._center_key = center_key
        # Channels whose doors cannot push: their victims' turns hand out held lines.
        self.holding_channels = frozenset(holding_channels)

    def __repr__(self) -> str:
        return "VictimSide(<keys hidden>)"

    async def open_relay(self, session: Session, pseudonym: Pseudonym, case_id: str) -> str:
        """At handoff: the conversation's reply key (made once) and the link to it; the public
        half, for the sealed request."""
        if session.reply_key is None:
            session.reply_key = keys.private_bytes(keys.generate_private_key()).hex()
        session.handoff_case = case_id
        session.live = False  # a new case waits for its own counselor
        await self.links.link(case_id, pseudonym, session.channel)
        return encode_reply_key(reply_key_of(session).public_key())

    async def from_victim(self, case_id: str, text: str) -> None:
        """The victim's words onto the transcript, sealed to the centre (ValueError if empty or
        too long)."""
        await self.chat.from_victim(
            case_id,
            new_line(Sender.VICTIM, text),
            self._center_key,
            keep_alive=self.links.keep_alive(case_id),
        )

    async def victim_left(self, pseudonym: Pseudonym, case_id: str) -> None:
        """Quick exit or a blocked bot: the console learns the chat is over; nothing is kept."""
        await self.chat.event(case_id, Event(EventKind.ENDED, Sender.VICTIM, time.time()))
        await self.links.forget(case_id)
        await self.held.drop(pseudonym)
        log.info("live chat of case %s ended by the victim", case_id)

    async def hand_out(self, pseudonym: Pseudonym) -> list[Outbound]:
        """Held lines, now the victim's: each counselor line among them is recorded delivered."""
        lines = await self.held.take(pseudonym)
        for line in lines:
            if line.ref:
                delivered = Event(EventKind.DELIVERED, Sender.VICTIM, time.time(), ref=line.ref)
                await self.chat.event(line.case_id, delivered)
        return [Outbound(line.text) for line in lines]


def reply_key_of(session: Session) -> X25519PrivateKey:
    """The session's reply key (ValueError if it has none or it is unreadable)."""
    if session.reply_key is None:
        raise ValueError("this conversation has no reply key")
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(session.reply_key))
