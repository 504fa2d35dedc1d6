"""Telegram-only conversation state: the reply address, the message ids to erase on /exit, and
the cases the conversation opened (to flag for their counselors if the victim blocks the bot).

Kept out of the neutral `Session` (other channels have neither), but guarded the same way:
encrypted with ChaCha20-Poly1305 under a key derived from the bot's root secret with its own
label, the Redis key bound as associated data, keyed by the session pseudonym, expiring after
`ttl_s` of silence. A private chat's id equals the user's id, so it is never stored in clear.

Message ids are one encrypted list entry each (RPUSH is atomic, so replies recorded by the
outbox and incoming messages recorded by the door never overwrite each other) with the time
they were sent: Telegram lets a bot delete messages only within 48 hours.

The record outlives a finished report on purpose: a victim who reported and then sends /exit
must still get the chat erased. It is deleted on /exit and when the victim blocks the bot.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Pseudonym
from backend.core.record_cipher import RecordCipher

# Telegram: "a message can only be deleted if it was sent less than 48 hours ago". A margin
# keeps a deleteMessages call from failing on an id that crosses the line in flight.
DELETABLE_FOR_S = 48 * 3600 - 300


@dataclass(frozen=True)
class ChatMessage:
    message_id: int
    sent_at: float


# KEYS: chat record, message list, case list, update to mark done. ARGV: sealed chat id, ttl
# (s), most entries kept, done ttl (s) or 0 for none, how many message entries (n), then n
# sealed message entries and the sealed case entries. One atomic step, one round trip.
_REMEMBER = """
local ttl, most, n = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
if n > 0 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 6, 5 + n))
  redis.call('LTRIM', KEYS[2], -most, -1)
end
redis.call('EXPIRE', KEYS[2], ttl)
if #ARGV > 5 + n then
  redis.call('RPUSH', KEYS[3], unpack(ARGV, 6 + n))
  redis.call('LTRIM', KEYS[3], -most, -1)
end
redis.call('EXPIRE', KEYS[3], ttl)
if ARGV[4] ~= '0' then redis.call('SET', KEYS[4], 'done', 'EX', ARGV[4]) end
return 1
"""


class TelegramChatStore:
    def __init__(self, redis: Redis, root_secret: bytes, ttl_s: int) -> None:
        self._redis = redis
        self._remember = redis.register_script(_REMEMBER)
        self._cipher = RecordCipher(root_secret, "telegram-chat")
        self._ttl_s = ttl_s

    def __repr__(self) -> str:
        return "TelegramChatStore(<key hidden>)"

    def _seal(self, key: str, plain: bytes) -> bytes:
        return self._cipher.seal(key, plain)

    def _open(self, key: str, sealed: object) -> bytes | None:
        return self._cipher.open(key, sealed)

    async def remember(
        self,
        pseudonym: Pseudonym,
        chat_id: int,
        message_ids: list[int],
        *,
        now: float | None = None,
        case_ids: tuple[str, ...] = (),
        done_update: str | None = None,
    ) -> None:
        """Record the reply address and messages (sent or received) in this private chat, and
        the cases the turn opened (flagged if the victim blocks the bot).

        `done_update`: the dedupe key of the update whose last write this is, marked done in
        the same atomic step (`UpdateDedupe.done_key`), which saves the turn a round trip.
        """
        chat_key = redis_keys.telegram_chat_key(pseudonym)
        list_key = redis_keys.telegram_messages_key(pseudonym)
        cases_key = redis_keys.telegram_cases_key(pseudonym)
        sent_at = time.time() if now is None else now
        entries = [
            self._seal(list_key, json.dumps([message_id, sent_at]).encode())
            for message_id in message_ids
        ]
        cases = [self._seal(cases_key, case_id.encode()) for case_id in case_ids]
        done_ttl = 0 if done_update is None else redis_keys.TELEGRAM_UPDATE_TTL_S
        keys = [chat_key, list_key, cases_key, done_update or chat_key]
        head: list[bytes | int] = [self._seal(chat_key, str(chat_id).encode()), self._ttl_s]
        limits = [redis_keys.TELEGRAM_CHAT_MAX_MESSAGES, done_ttl, len(entries)]
        await self._remember(keys, [*head, *limits, *entries, *cases])

    async def cases(self, pseudonym: Pseudonym) -> list[str]:
        """The cases this conversation opened, oldest first, without duplicates."""
        key = redis_keys.telegram_cases_key(pseudonym)
        found: list[str] = []
        for sealed in await self._redis.lrange(key, 0, -1):
            plain = self._open(key, sealed)
            if plain is not None and plain.decode() not in found:
                found.append(plain.decode())
        return found

    async def chat_id(self, pseudonym: Pseudonym) -> int | None:
        key = redis_keys.telegram_chat_key(pseudonym)
        plain = self._open(key, await self._redis.get(key))
        return None if plain is None else int(plain)

    async def messages(self, pseudonym: Pseudonym) -> list[ChatMessage]:
        key = redis_keys.telegram_messages_key(pseudonym)
        found = []
        for sealed in await self._redis.lrange(key, 0, -1):
            plain = self._open(key, sealed)
            if plain is not None:
                message_id, sent_at = json.loads(plain)
                found.append(ChatMessage(int(message_id), float(sent_at)))
        return found

    async def deletable(self, pseudonym: Pseudonym, *, now: float | None = None) -> list[int]:
        """The ids Telegram still lets the bot delete, oldest first, without duplicates."""
        cutoff = (time.time() if now is None else now) - DELETABLE_FOR_S
        ids = [m.message_id for m in await self.messages(pseudonym) if m.sent_at > cutoff]
        return sorted(set(ids))

    async def forget(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(
            redis_keys.telegram_chat_key(pseudonym),
            redis_keys.telegram_messages_key(pseudonym),
            redis_keys.telegram_cases_key(pseudonym),
        )
