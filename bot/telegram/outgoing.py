"""A stepped Telegram turn's replies, kept in Redis until they went out, so a worker that dies
after the step loses none of them (the update was marked done by the step, and the webhook
answered 200: Telegram will not deliver it again).

The step's own write (`SessionStore.hold`'s release, `Replies`) sets the turn's replies, sealed
like the chat record (ChaCha20-Poly1305 under the "telegram-chat" key, the Redis key and field
bound as associated data: the chat id and the texts, a receipt code among them, are never in
clear), and lists the turn in an index, due when its sender's lease runs out. The worker that
stepped sends them; before each message after the first it writes how far it got (the ids
sent, sealed) and renews the lease, and a background job renews the lease of every turn it is
sending every third of it. Once sent (or dropped), the turn's entry is deleted.

A turn whose lease ran out belonged to a dead worker: another worker's background job (at start
and every third of the lease) `take`s it, renewing the lease as its own, and sends what was not
sent yet. A turn being sent by a live worker is never taken (its lease is renewed). Telegram
has no idempotency key: a message sent just before its worker died, before its progress was
written, is sent again, once.

A quick exit clears every pending turn of the chat in its own step's write (and again when it
erases the chat): nothing pending is sent after an exit, and a sender finds its turn gone before
its next message and stops. The same write leaves the exit's update id as the chat's exit mark
(`bot.sessions.ExitMark`): an update from before the exit that steps only after it (handed over
again by Telegram once the worker holding it died) is refused, so it keeps no replies either.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Pseudonym
from backend.core.record_cipher import RecordCipher
from bot.sessions import ExitMark, Replies

# KEYS: hash, index. ARGV: field, member, sealed progress, lease (ms). 1 when the turn is still
# pending (progress written, lease renewed), 0 when it is gone (a quick exit cleared it).
_ADVANCE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1] .. ':p', ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[4]), ARGV[2])
return 1
"""
# KEYS: index. ARGV: lease (ms), most. The members due now, each leased to the caller.
_TAKE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[1]), member)
end
return due
"""
# KEYS: index. ARGV: lease (ms), members. Renews the leases of turns still listed.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
return 1
"""
# KEYS: hash, index. ARGV: field, member.
_FINISH = """
redis.call('HDEL', KEYS[1], ARGV[1], ARGV[1] .. ':p')
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""
# KEYS: hash, index. ARGV: member prefix. A quick exit outside a step.
_CLEAR = """
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(field, -2) ~= ':p' then redis.call('ZREM', KEYS[2], ARGV[1] .. field) end
end
redis.call('DEL', KEYS[1])
return 1
"""


@dataclass(frozen=True)
class Pending:
    """A turn's replies as kept: each message's text and inline keyboard (JSON text, or
    None), ready to send; `done` of them went out already, with the ids `sent`."""

    pseudonym: Pseudonym
    turn: str
    chat_id: int
    messages: tuple[tuple[str, str | None], ...]
    priority: int
    done: int = 0
    sent: tuple[int, ...] = ()
    # The cases the turn opened, for the chat record (flagged if she blocks the bot).
    case_ids: tuple[str, ...] = ()
    # When this process made or took it (monotonic): replies that waited since are looked up
    # before they go (`bot.telegram.door`), an exit through another worker may have come.
    made_at: float = field(default_factory=time.monotonic)


class OutgoingStore:
    def __init__(
        self,
        redis: Redis,
        root_secret: bytes,
        ttl_s: int,
        *,
        lease_s: float = redis_keys.TELEGRAM_OUTGOING_LEASE_S,
    ) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "telegram-chat")
        self._ttl_s = ttl_s
        self.lease_s = lease_s
        self._advance = redis.register_script(_ADVANCE)
        self._take_due = redis.register_script(_TAKE_DUE)
        self._renew = redis.register_script(_RENEW)
        self._finish = redis.register_script(_FINISH)
        self._clear = redis.register_script(_CLEAR)
        # The turns this worker is sending now (members of the index), renewed by `renew`.
        self.sending: set[str] = set()

    def __repr__(self) -> str:
        return "OutgoingStore(<key hidden>)"

    @property
    def _lease_ms(self) -> int:
        return int(self.lease_s * 1000)

    @staticmethod
    def _member(pseudonym: Pseudonym, turn: str) -> str:
        return f"{pseudonym}:{turn}"

    def _name(self, pseudonym: Pseudonym, field: str) -> str:
        return f"{redis_keys.telegram_outgoing_key(pseudonym)}|{field}"

    def new(
        self,
        pseudonym: Pseudonym,
        chat_id: int,
        messages: tuple[tuple[str, str | None], ...],
        priority: int,
        *,
        case_ids: tuple[str, ...] = (),
    ) -> tuple[Pending, Replies]:
        """A turn's replies, and the write that keeps them with its step."""
        # Time first: one chat's turns sort in the order they stepped.
        turn = f"{time.time_ns():020d}{secrets.token_hex(4)}"
        pending = Pending(pseudonym, turn, chat_id, messages, priority, case_ids=case_ids)
        plain = json.dumps(
            {
                "chat": chat_id,
                "messages": [list(m) for m in messages],
                "priority": priority,
                "cases": list(case_ids),
            },
            ensure_ascii=False,
        ).encode()
        replies = Replies(
            "add",
            redis_keys.telegram_outgoing_key(pseudonym),
            redis_keys.TELEGRAM_OUTGOING_INDEX,
            f"{pseudonym}:",
            field=turn,
            value=self._cipher.seal(self._name(pseudonym, turn), plain),
            ttl_s=self._ttl_s,
            lease_ms=self._lease_ms,
        )
        return pending, replies

    @staticmethod
    def clearing(pseudonym: Pseudonym, exit_mark: ExitMark | None = None) -> Replies:
        """The write a quick exit's step makes: every pending reply of the chat dropped, and
        the exit's place left as the chat's exit mark (an update from before it is refused)."""
        return Replies(
            "clear",
            redis_keys.telegram_outgoing_key(pseudonym),
            redis_keys.TELEGRAM_OUTGOING_INDEX,
            f"{pseudonym}:",
            exit_mark=exit_mark,
        )

    async def clear(self, pseudonym: Pseudonym) -> None:
        await self._clear(
            [redis_keys.telegram_outgoing_key(pseudonym), redis_keys.TELEGRAM_OUTGOING_INDEX],
            [f"{pseudonym}:"],
        )

    async def advance(self, pending: Pending, done: int, sent: list[int]) -> bool:
        """`done` messages went out with ids `sent`: written, and the lease renewed; False when
        the turn is gone (a quick exit cleared it): send no more."""
        field = f"{pending.turn}:p"
        progress = self._cipher.seal(
            self._name(pending.pseudonym, field), json.dumps([done, sent]).encode()
        )
        kept = await self._advance(
            [
                redis_keys.telegram_outgoing_key(pending.pseudonym),
                redis_keys.TELEGRAM_OUTGOING_INDEX,
            ],
            [pending.turn, self._member(pending.pseudonym, pending.turn), progress, self._lease_ms],
        )
        return bool(kept)

    async def finish(self, pending: Pending) -> None:
        """The turn's replies went out, or were dropped: nothing of it is kept."""
        member = self._member(pending.pseudonym, pending.turn)
        self.sending.discard(member)
        await self._finish(
            [
                redis_keys.telegram_outgoing_key(pending.pseudonym),
                redis_keys.TELEGRAM_OUTGOING_INDEX,
            ],
            [pending.turn, member],
        )

    async def renew(self) -> None:
        """Renew the lease of every turn this worker is sending."""
        if self.sending:
            await self._renew(
                [redis_keys.TELEGRAM_OUTGOING_INDEX], [self._lease_ms, *sorted(self.sending)]
            )

    async def take_due(self, most: int = 100) -> list[Pending]:
        """The turns of dead workers (their lease ran out), now leased to this one, oldest
        first within each chat. A turn that no longer opens (gone, or another key) is
        dropped."""
        members = await self._take_due([redis_keys.TELEGRAM_OUTGOING_INDEX], [self._lease_ms, most])
        taken: list[Pending] = []
        for raw in members:
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            pseudonym_text, _, turn = member.rpartition(":")
            pseudonym = Pseudonym(pseudonym_text)
            key = redis_keys.telegram_outgoing_key(pseudonym)
            record, progress = await self._redis.hmget(key, [turn, f"{turn}:p"])
            plain = self._cipher.open(self._name(pseudonym, turn), record)
            if plain is None:
                await self._finish([key, redis_keys.TELEGRAM_OUTGOING_INDEX], [turn, member])
                continue
            data = json.loads(plain)
            done, sent = 0, []
            opened = self._cipher.open(self._name(pseudonym, f"{turn}:p"), progress)
            if opened is not None:
                done, sent = json.loads(opened)
            messages = tuple((str(m[0]), m[1]) for m in data["messages"])
            taken.append(
                Pending(
                    pseudonym,
                    turn,
                    int(data["chat"]),
                    messages,
                    int(data["priority"]),
                    int(done),
                    tuple(int(s) for s in sent),
                    tuple(str(c) for c in data.get("cases", [])),
                )
            )
            self.sending.add(member)
        taken.sort(key=lambda p: (p.pseudonym, p.turn))
        return taken
