"""The victim's side of a live chat with a counselor, as the runtime and the relay share it.

At handoff the conversation gets a reply key pair (the private half only in the encrypted
session, the public half in the sealed request, so only a counselor learns it) and a link from
the case id to the conversation, so the relay can find the victim when a counselor writes.

Doors that cannot speak first (web chat, KakaoTalk) get what the relay brings as held lines:
one encrypted list entry each, per conversation, expiring like the session, handed out by the
page's long poll or with the answer to the victim's next message. Handing a held line out is
its delivery, and is recorded as such on the transcript. A KakaoTalk callback claims lines
instead (moved aside under a lease while it POSTs them) and records them delivered only once
Kakao took them; what it could not send is held again, in order.

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

from backend.core import keys, redis_keys
from backend.core.conversation import Outbound, Pseudonym, Session
from backend.core.live_chat import (
    Event,
    EventKind,
    LiveChat,
    Sender,
    encode_reply_key,
    new_line,
    sealed_line,
)
from backend.core.record_cipher import RecordCipher
from bot.sessions import Once, OnceRefusedError, Peeked, SessionStore

log = logging.getLogger(__name__)

# The button a door that cannot push offers while a chat is pending or live: "any replies?".
CHECK_BUTTON = "live_check"
# Channels that cannot push tell the victim their own way replies arrive; the rest say "here".
_HOLDING_HOW = {"web": "live.how_web", "kakao": "live.how_kakao"}


def how_replies_key(channel: str) -> str:
    """The text telling a victim how a counselor's replies reach them on `channel`."""
    return _HOLDING_HOW.get(channel, "live.how_push")


# Every held line (held, sending, lease: the keys), oldest first, removed: see `HeldLines.take`.
_TAKE_HELD = """
local function take_held(held, sending, lease)
  local out = {}
  if redis.call('EXISTS', lease) == 0 then
    out = redis.call('LRANGE', sending, 0, -1)
    redis.call('DEL', sending)
  end
  for _, entry in ipairs(redis.call('LRANGE', held, 0, -1)) do table.insert(out, entry) end
  redis.call('DEL', held)
  return out
end
"""
# KEYS of the three scripts: held, sending, lease. Entries move between the lists verbatim.
_TAKE = _TAKE_HELD + "return take_held(KEYS[1], KEYS[2], KEYS[3])\n"
# ARGV: lease (ms), ttl (s). Lines a dead sender left behind are claimed again, first.
_CLAIM = """
if redis.call('EXISTS', KEYS[3]) == 1 then return {} end
for _, entry in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  redis.call('RPUSH', KEYS[2], entry)
end
redis.call('DEL', KEYS[1])
local out = redis.call('LRANGE', KEYS[2], 0, -1)
if #out > 0 then
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[1])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
end
return out
"""
# ARGV: ttl (s).
_UNSEND = """
local sending = redis.call('LRANGE', KEYS[2], 0, -1)
for i = #sending, 1, -1 do redis.call('LPUSH', KEYS[1], sending[i]) end
redis.call('DEL', KEYS[2], KEYS[3])
if #sending > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return #sending
"""


# A victim's line in a live chat, the whole turn's writes in one script and without the
# conversation lock (one fsync on the embedded Redis instead of three: the lock, the line, the
# session and unlock). It writes only while no turn holds the conversation (`bot.sessions`'s
# lock) and the session is still the record the turn was decided on (`SessionStore.peek`);
# else {0}, nothing written, and the runtime does the turn again under the lock. A `Once` held
# by another is {2, holder}, as `hold` refuses it. Then, all or nothing: the line onto the
# transcript and the archive (as `LiveChat`'s append), the link's expiry renewed, the session
# saved, the once marked done, and (ARGV[10] = 1) the held lines taken: {1, entry id, held...}.
# KEYS: lock, session, transcript, archive, link, held, sending, lease[, once].
# ARGV: record read, new record, session ttl (s), field name, sealed line, case id, maxlen,
# transcript ttl (s), link ttl (s), take held (1|0)[, once token, once done, done ttl (s)].
_LINE_UNLOCKED = (
    _TAKE_HELD
    + """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return {0}
end
if KEYS[9] then
  local holder = redis.call('GET', KEYS[9])
  if holder and holder ~= ARGV[11] then return {2, holder} end
end
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[8])
redis.call('XADD', KEYS[4], '*', 'case', ARGV[6], 'entry', id, ARGV[4], ARGV[5])
redis.call('EXPIRE', KEYS[5], ARGV[9])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
if KEYS[9] then redis.call('SET', KEYS[9], ARGV[12], 'EX', ARGV[13]) end
local out = {1, id}
if ARGV[10] == '1' then
  for _, entry in ipairs(take_held(KEYS[6], KEYS[7], KEYS[8])) do table.insert(out, entry) end
end
return out
"""
)


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
        key = redis_keys.relay_link_key(case_id)
        plain = json.dumps([pseudonym, channel]).encode()
        await self._redis.set(key, self._cipher.seal(key, plain), ex=self._ttl_s)

    async def find(self, case_id: str) -> Link | None:
        key = redis_keys.relay_link_key(case_id)
        plain = self._cipher.open(key, await self._redis.get(key))
        if plain is None:
            return None
        pseudonym, channel = json.loads(plain)
        return Link(Pseudonym(str(pseudonym)), str(channel))

    def keep_alive(self, case_id: str) -> tuple[str, int]:
        """A chat under way lives as long as the session it belongs to: the link's key and
        TTL, renewed with each of the victim's lines (`LiveChat.from_victim`)."""
        return redis_keys.relay_link_key(case_id), self._ttl_s

    async def forget(self, case_id: str) -> None:
        await self._redis.delete(redis_keys.relay_link_key(case_id))


class HeldLines:
    """What waits for a victim whose door cannot push; also the `Delivery` of such doors."""

    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "held-lines")
        self._ttl_s = ttl_s
        self._take = redis.register_script(_TAKE)
        self._claim = redis.register_script(_CLAIM)
        self._unsend = redis.register_script(_UNSEND)

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
        key = redis_keys.held_lines_key(pseudonym)
        entries = [
            self._cipher.seal(key, json.dumps([case_id, m.text, ref], ensure_ascii=False).encode())
            for m in messages
        ]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *entries)
            pipe.ltrim(key, -redis_keys.HELD_LINES_MAX, -1)
            pipe.expire(key, self._ttl_s)
            await pipe.execute()
        return EventKind.HELD

    async def waiting(self, pseudonym: Pseudonym) -> bool:
        return bool(await self._redis.exists(redis_keys.held_lines_key(pseudonym)))

    async def take(self, pseudonym: Pseudonym) -> list[HeldLine]:
        """Every held line, oldest first, removed in the same script: two takers (the page's
        poll and a turn) never both get one. Lines a live callback is sending are not taken,
        unless its lease ran out (the sender died): then they come first."""
        found = await self._take(keys=self.keys(pseudonym))
        return self.opened(pseudonym, found)

    async def claim(self, pseudonym: Pseudonym) -> list[HeldLine]:
        """For a KakaoTalk callback: every held line, moved aside under a lease while it is
        POSTed; then `sent` or `unsent`. Empty while another callback of this conversation is
        sending."""
        lease_ms = redis_keys.HELD_SENDING_LEASE_MS
        found = await self._claim(keys=self.keys(pseudonym), args=[lease_ms, self._ttl_s])
        return self.opened(pseudonym, found)

    async def sent(self, pseudonym: Pseudonym) -> None:
        """The claimed lines reached the victim: gone."""
        _held, sending, lease = self.keys(pseudonym)
        await self._redis.delete(sending, lease)

    async def unsent(self, pseudonym: Pseudonym) -> None:
        """The claimed lines did not reach the victim: held again, before any newer ones."""
        await self._unsend(keys=self.keys(pseudonym), args=[self._ttl_s])

    def keys(self, pseudonym: Pseudonym) -> list[str]:
        return [
            redis_keys.held_lines_key(pseudonym),
            redis_keys.held_sending_key(pseudonym),
            redis_keys.held_sending_lease_key(pseudonym),
        ]

    def opened(self, pseudonym: Pseudonym, sealed: list[bytes]) -> list[HeldLine]:
        # Sealed under the held list's name, wherever they moved since.
        key = redis_keys.held_lines_key(pseudonym)
        lines = []
        for entry in sealed:
            plain = self._cipher.open(key, entry)
            if plain is not None:
                case_id, text, ref = json.loads(plain)
                lines.append(HeldLine(str(case_id), str(text), str(ref)))
        return lines

    async def drop(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(*self.keys(pseudonym))


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
        self._line_unlocked = redis.register_script(_LINE_UNLOCKED)
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
        if session.handoff_case != case_id:
            session.live = False  # a new case waits for its own counselor
        # The same case asked for again (issue 18) keeps its line and its counselor.
        session.handoff_case = case_id
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

    async def line_unlocked(
        self,
        sessions: SessionStore,
        pseudonym: Pseudonym,
        peeked: Peeked,
        after: Session,
        text: str,
        *,
        take_held: bool,
        once: Once | None = None,
    ) -> list[HeldLine] | None:
        """The victim's words in a live chat, the turn's writes in one round trip without the
        conversation lock (`_LINE_UNLOCKED`): the line sealed to the centre onto the
        transcript, the session `after` saved in place of the `peeked` record, and, on a door
        that cannot push, the held lines taken (recorded delivered here). None when a turn holds
        the conversation or its session moved since it was peeked: nothing is written, the
        caller takes the lock and does the turn again. ValueError for an empty or too long
        text, `OnceRefusedError` when `once` is another's; nothing written either way."""
        case_id = after.handoff_case
        if case_id is None:
            raise ValueError("this conversation has no live chat")
        line = new_line(Sender.VICTIM, text)
        link_key, link_ttl_s = self.links.keep_alive(case_id)
        held_keys = self.held.keys(pseudonym)
        keys_ = [
            redis_keys.conversation_lock_key(pseudonym),
            redis_keys.session_key(pseudonym),
            redis_keys.case_transcript_stream(case_id),
            redis_keys.TRANSCRIPT_ARCHIVE_STREAM,
            link_key,
            *held_keys,
        ]
        args: list[str | bytes | int] = [
            peeked.record,
            sessions.sealed(pseudonym, after),
            sessions.ttl_s,
            redis_keys.FIELD_SEALED,
            sealed_line(case_id, line, self._center_key),
            case_id,
            redis_keys.CASE_STREAM_MAXLEN,
            redis_keys.CASE_TRANSCRIPT_TTL_S,
            link_ttl_s,
            1 if take_held else 0,
        ]
        if once is not None:
            keys_.append(once.key)
            args += [once.token, once.done, once.done_ttl_s]
        done = await self._line_unlocked(keys_, args)
        if done[0] == 2:
            raise OnceRefusedError(done[1])
        if done[0] != 1:
            return None
        lines = self.held.opened(pseudonym, done[2:])
        await self.delivered(lines)
        return lines

    async def flag(self, case_id: str, flag: str) -> None:
        """Triage matched the victim's words: the counselor's panel shows the flag (the rule's
        flag name, never the words) as it shows a presence event."""
        await self.chat.event(case_id, Event(EventKind.TRIAGE, Sender.VICTIM, time.time(), flag))

    async def victim_left(self, pseudonym: Pseudonym, case_id: str) -> None:
        """Quick exit or a blocked bot: the console learns the chat is over; nothing is kept."""
        await self.chat.event(case_id, Event(EventKind.ENDED, Sender.VICTIM, time.time()))
        await self.links.forget(case_id)
        await self.held.drop(pseudonym)
        log.info("live chat of case %s ended by the victim", case_id)

    async def hand_out(self, pseudonym: Pseudonym) -> list[Outbound]:
        """Held lines, now the victim's: each counselor line among them is recorded delivered."""
        lines = await self.held.take(pseudonym)
        await self.delivered(lines)
        return [Outbound(line.text) for line in lines]

    async def delivered(self, lines: Sequence[HeldLine]) -> None:
        """Record each counselor line among `lines` as having reached the victim."""
        now = time.time()
        await self.chat.events(
            [
                (line.case_id, Event(EventKind.DELIVERED, Sender.VICTIM, now, ref=line.ref))
                for line in lines
                if line.ref
            ]
        )


def reply_key_of(session: Session) -> X25519PrivateKey:
    """The session's reply key (ValueError if it has none or it is unreadable)."""
    if session.reply_key is None:
        raise ValueError("this conversation has no reply key")
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(session.reply_key))
