"""Inbound limits: how fast one sender, and one client address, may talk to the bot.

A public hotline is flooded to bury victims' reports. Every bot worker shares the counts in
Redis, kept by the `limits` library's sliding-window counter (one script call per limit, a
counter that expires with its window), so a flood spread over workers meets one limit.

Who is counted, and what is kept:
- a sender per channel, by the rate-limiting pseudonym (`Purpose.RATE_LIMIT`): its key cannot be
  joined with the session pseudonym's, so the counters say nothing about any conversation;
- a client address (the web chat's, the address a KakaoTalk request came from), as the trusted
  proxy reported it (`backend/forwarded.py`), only as a keyed hash: HMAC-SHA256 under a key
  derived from the bot's root secret, in counters that expire with their window. The address
  itself is never stored or logged;
- new web chat conversations per address, since a token is free to make.

What an over-limit victim is told, and that safety words still get through, is the runtime's
business (`ConversationRuntime.handle`): this module only counts.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Pseudonym
from backend.core.pseudonyms import derive_key
from backend.core.settings import InboundLimitPolicy, RedisPool

# Channels whose requests come with a client address worth counting, and which policy field
# limits it: the web chat's page talks to us directly; KakaoTalk's requests come from Kakao.
_ADDRESS_POLICY = {"web": "per_address", "kakao": "per_kakao_address"}
# Where a new conversation is free to open (a fresh random token): the web chat only. A Kakao or
# Telegram account is the platform's to make, and Kakao's address is Kakao's.
_NEW_CONVERSATION_CHANNELS = frozenset({"web"})


# The limits' own connections (bot/cli/node.py): one count at a time per request, so a few
# serve many requests; a flood beyond them queues here rather than in the node's main pool.
LIMITS_POOL = RedisPool(max_connections=16, wait_ms=5_000)


@dataclass(frozen=True)
class Sender:
    """Who sent one inbound, as the limits count it: never a platform id or an address."""

    channel: str
    pseudonym: Pseudonym = field(repr=False)  # the RATE_LIMIT purpose's
    address: str | None = field(default=None, repr=False)  # keyed hash of the client address


class InboundLimits:
    def __init__(self, redis: Redis, root_secret: bytes, policy: InboundLimitPolicy) -> None:
        # `redis`'s own pool (the node gives the limits a client of their own, `LIMITS_POOL`);
        # the URI below is not used when a pool is given, so a Unix socket works as any URL.
        storage = RedisStorage(
            "async+redis://",
            implementation="redispy",
            key_prefix=redis_keys.INBOUND_LIMITS_PREFIX,
            connection_pool=redis.connection_pool,  # type: ignore[arg-type] # limits types options as scalars; it hands them to redis-py
        )
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._address_key = derive_key(root_secret, "address/rate-limit")
        self._per_pseudonym = _items(policy.per_pseudonym)
        self._per_address = {
            channel: _items(getattr(policy, name)) for channel, name in _ADDRESS_POLICY.items()
        }
        self._new_per_address = _items(policy.new_conversations_per_address)

    def __repr__(self) -> str:
        return "InboundLimits(<key hidden>)"

    def sender(self, channel: str, pseudonym: Pseudonym, remote: str | None) -> Sender:
        """The counted identity of one request; `remote` (the client address after the trusted
        proxy's correction) is hashed here and goes no further."""
        address = None
        if remote and channel in _ADDRESS_POLICY:
            address = hmac.new(self._address_key, remote.encode(), hashlib.sha256).hexdigest()[:32]
        return Sender(channel, pseudonym, address)

    async def admit(self, sender: Sender) -> bool:
        """Count one message; False when the sender or its address is over a limit. One limit
        after the other, stopping at the first refusal: one connection at a time per request,
        and a refused flood costs one script call."""
        for item in self._per_pseudonym:
            if not await self._hit(item, "sender", sender.channel, sender.pseudonym):
                return False
        if sender.address is not None:
            for item in self._per_address.get(sender.channel, ()):
                if not await self._hit(item, "address", sender.channel, sender.address):
                    return False
        return True

    async def admit_new_conversation(self, sender: Sender) -> bool:
        """Count one new conversation from the sender's address; False when over the limit."""
        if sender.address is None or sender.channel not in _NEW_CONVERSATION_CHANNELS:
            return True
        for item in self._new_per_address:
            if not await self._hit(item, "new", sender.channel, sender.address):
                return False
        return True

    async def _hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        return await self._limiter.hit(item, *identifiers)


def _items(rate: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(rate)) if rate else ()
