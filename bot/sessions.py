"""Conversation sessions in Redis: encrypted, expiring, keyed by the session pseudonym.

The session holds the victim's answers so far and the platform reply address, so it is
encrypted (ChaCha20-Poly1305, key derived from the bot's root secret, the Redis key bound as
associated data so a record cannot be moved to another conversation) and expires after
`session_ttl_s` of silence.

A turn `hold`s its conversation: the conversation lock (so one conversation's turns run one at a
time, across bot workers) is taken and the session read in one round trip, and the new session
is written and the lock released in one more. The write happens only while the lock is still
this turn's: a turn that outlived its lock (`CONVERSATION_LOCK_TTL_S`) writes nothing and fails
with `LockError`, rather than overwrite what the next holder wrote. The lock is a plain
`SET NX PX` holding a token that names this process (`bot.leases`), the same shape as
redis-py's `Lock`, so code that takes the lock with redis-py on the same key excludes a turn and
is excluded by it. Its lease is short and renewed while the turn runs, so the lock of a process
that died mid-turn is free again within seconds (issue 18).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import LockError

from backend.core import redis_keys
from backend.core.conversation import Pseudonym, Session
from backend.core.errors import HotlineError
from backend.core.record_cipher import RecordCipher
from bot.leases import holder_token, renewed

# KEYS: lock, session, blocked, exit mark[, once]. ARGV: token, lock ttl (ms), check blocked
# (1|0), the input's place in its chat ('' for none)[, once token, once lease (s)].
# {1, session} when the lock was taken; {0} when another turn holds it (wait and try again);
# {2, holder} when the once key is another's (a copy of work done or under way elsewhere);
# {3} when the sender is blocked (`Blocked`); {4} when the input came before the chat's last
# quick exit (`ExitMark`): nothing taken. The blocked key and the exit mark are read here, not
# in round trips of their own before (one less per turn; a key that is not checked is passed
# as the lock's, and not read).
_TAKE = """
if ARGV[3] == '1' and redis.call('EXISTS', KEYS[3]) == 1 then return {3} end
if ARGV[4] ~= '' then
  local left = redis.call('GET', KEYS[4])
  if left and tonumber(left) > tonumber(ARGV[4]) then return {4} end
end
if KEYS[5] and not redis.call('SET', KEYS[5], ARGV[5], 'NX', 'EX', ARGV[6]) then
  local holder = redis.call('GET', KEYS[5])
  if holder ~= ARGV[5] then return {2, holder} end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('GET', KEYS[2])}
end
return {0}
"""
# KEYS: lock, session[, third[, replies hash, replies index[, exit mark, keys it ends...]]].
# ARGV: token, action
# (save | delete | keep), sealed session, ttl (s)[, third's value ('' for none: the third key
# is then the lock's, not written), its ttl (s)[, replies (add | clear), field, sealed replies,
# their ttl (s), index member prefix, lease (ms)[, the exit's place, the mark's ttl (s)]]].
# The third key: a `Once` marked done, or a `record`. Replies (`bot.telegram.outgoing`): `add`
# sets a turn's sealed replies in the chat's hash and lists them in the index, due (for another
# worker to take over) a lease from Redis' clock; `clear` drops every pending reply of the chat
# (a quick exit), raises the chat's exit mark to the exit's place and deletes the keys the exit
# ends (`ExitMark`).
# 1 when the lock was still the caller's (and the action done), 0 when it was lost.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == 'save' then
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
elseif ARGV[2] == 'delete' then
  redis.call('DEL', KEYS[2])
end
if KEYS[3] and ARGV[5] ~= '' then redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6]) end
if ARGV[7] == 'clear' then
  for _, field in ipairs(redis.call('HKEYS', KEYS[4])) do
    if string.sub(field, -2) ~= ':p' then redis.call('ZREM', KEYS[5], ARGV[11] .. field) end
  end
  redis.call('DEL', KEYS[4])
  if KEYS[6] then
    local left = redis.call('GET', KEYS[6])
    if not left or tonumber(left) < tonumber(ARGV[13]) then
      redis.call('SET', KEYS[6], ARGV[13], 'EX', ARGV[14])
    end
    for i = 7, #KEYS do redis.call('DEL', KEYS[i]) end
  end
elseif ARGV[7] == 'add' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[4], ARGV[8], ARGV[9])
  redis.call('EXPIRE', KEYS[4], ARGV[10])
  redis.call('ZADD', KEYS[5], now + tonumber(ARGV[12]), ARGV[11] .. ARGV[8])
end
redis.call('DEL', KEYS[1])
return 1
"""
# How long a turn waits between tries for a lock another worker holds.
_LOCK_RETRY_S = 0.02


@dataclass(frozen=True)
class Once:
    """A claim taken in the same step as the lock (a Telegram update, `bot.telegram.dedupe`):
    `key` set to `token` unless it exists, for `lease_s` (renewed while the hold lasts); set to
    `done` (kept `done_ttl_s`) in the write that ends the hold, since a copy must not step the
    conversation again. What comes after the step (the replies) no longer holds the claim: a
    copy arriving meanwhile is refused as done, not as under way elsewhere."""

    key: str
    token: bytes
    lease_s: int
    done: bytes
    done_ttl_s: int


@dataclass(frozen=True)
class ExitMark:
    """An input's place in its chat's order (a Telegram update id: they rise with every update
    a bot receives) and the key where the chat's last quick exit left its own place. An input
    from before that exit is refused by `hold` (`ExitedError`), with nothing taken: a message
    handed over again after the victim left, from a worker that died with it (issue 14's
    scale-out), must not start a conversation in the chat she just erased. Kept
    `ttl_s`, as long as the platform hands an unconfirmed input over again."""

    key: str
    place: int
    ttl_s: int
    # Deleted by the exit's write: the chat's reply address, so that a counselor's line waiting
    # for its slot on another worker finds the chat left from that moment on.
    ends: tuple[str, ...] = ()


@dataclass(frozen=True)
class Replies:
    """What a turn's write does to its chat's pending replies (`bot.telegram.outgoing`):
    `add` this turn's sealed replies (`field`, `value`), or `clear` every one (a quick exit),
    in the same atomic write as the session, so a stepped turn's replies outlive the worker."""

    mode: str  # "add" | "clear"
    hash_key: str
    index_key: str
    member_prefix: str
    field: str = ""
    value: bytes = b""
    ttl_s: int = 0
    lease_ms: int = 0
    # With `clear`: the exit's own place, which the write leaves as the chat's exit mark.
    exit_mark: ExitMark | None = None


class OnceRefusedError(HotlineError):
    """The `Once` key is held by someone else: `holder` is its value."""

    def __init__(self, holder: bytes | None) -> None:
        super().__init__("claimed elsewhere")
        self.holder = holder


class BlockedError(HotlineError):
    """The sender is blocked (`hold`'s `blocked` key exists): nothing was taken."""

    def __init__(self) -> None:
        super().__init__("blocked")


class ExitedError(HotlineError):
    """The input came before its chat's last quick exit (`ExitMark`): nothing was taken."""

    def __init__(self) -> None:
        super().__init__("from before a quick exit")


class HeldSession:
    """A conversation's session while its lock is held; what to write is said, not done, and
    written when the hold ends."""

    __slots__ = ("_action", "_record", "_replies", "_seal", "_sealed", "session")

    def __init__(self, session: Session | None, seal: Callable[[Session], bytes]) -> None:
        self.session = session
        self._seal = seal
        self._action = "keep"
        self._sealed = b""
        self._record: tuple[str, bytes, int] | None = None
        self._replies: Replies | None = None

    def record(self, key: str, value: bytes, ttl_s: int) -> None:
        """Also set `key` to `value` (for `ttl_s`) in the write that ends the hold: what the
        turn answered (the web chat's replay answer, `bot.turn_replay`), so a process killed
        after that write leaves the answer for the victim's retry, never a stepped conversation
        without it (issue 14: the retry ran the turn again on the next step, "That question has
        passed", and a submitted report's receipt was never shown). Not with a `Once`."""
        self._record = (key, value, ttl_s)

    def replies(self, replies: Replies) -> None:
        """Also add or clear the chat's pending replies in the write that ends the hold
        (`Replies`); with a `Once` or a `record` alike."""
        self._replies = replies

    def save(self, session: Session) -> None:
        self.session = session
        self._action, self._sealed = "save", self._seal(session)

    def delete(self) -> None:
        self.session = None
        self._action, self._sealed = "delete", b""


@dataclass(frozen=True)
class Peeked:
    """A session read without the lock, and the record it was read from: a write decided on it
    holds only while nothing has moved since (`bot.live.VictimSide.line_unlocked` checks, in the
    write itself, that no turn holds the conversation and the record is still this one)."""

    session: Session
    record: bytes


class SessionStore:
    def __init__(
        self,
        redis: Redis,
        root_secret: bytes,
        ttl_s: int,
        *,
        lock_ttl_s: float = redis_keys.CONVERSATION_LOCK_TTL_S,
    ) -> None:
        self._redis = redis
        self._cipher = RecordCipher(root_secret, "session")
        self._ttl_s = ttl_s
        self._lock_ttl_s = lock_ttl_s
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)

    def __repr__(self) -> str:
        return "SessionStore(<key hidden>)"

    def _open(self, key: str, sealed: object) -> Session | None:
        plain = self._cipher.open(key, sealed)
        if plain is None:
            return None
        try:
            return Session.from_json(plain)
        except (ValueError, TypeError):
            # Unreadable (key changed, or tampered): start afresh rather than fail the victim.
            return None

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def sealed(self, pseudonym: Pseudonym, session: Session) -> bytes:
        """The session's record as `hold` writes it."""
        key = redis_keys.session_key(pseudonym)
        return self._cipher.seal(key, session.to_json())

    async def peek(self, pseudonym: Pseudonym, *, blocked: str | None = None) -> Peeked | None:
        """The session and its record, without the lock (reads: no write, no fsync); None
        when there is none or it does not open. `blocked`: a key whose existence refuses the
        sender (`BlockedError`), read in the same round trip."""
        key = redis_keys.session_key(pseudonym)
        if blocked is None:
            record = await self._redis.get(key)
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(blocked)
                pipe.get(key)
                is_blocked, record = await pipe.execute()
            if is_blocked:
                raise BlockedError
        if not isinstance(record, bytes):
            return None
        session = self._open(key, record)
        return None if session is None else Peeked(session, record)

    async def load(self, pseudonym: Pseudonym) -> Session | None:
        """The session without the lock: for a look that changes nothing."""
        key = redis_keys.session_key(pseudonym)
        return self._open(key, await self._redis.get(key))

    @asynccontextmanager
    async def hold(
        self,
        pseudonym: Pseudonym,
        *,
        wait_s: float = redis_keys.CONVERSATION_LOCK_WAIT_S,
        once: Once | None = None,
        blocked: str | None = None,
        exit_mark: ExitMark | None = None,
    ) -> AsyncIterator[HeldSession]:
        """Lock the conversation and read its session; on a clean exit write what the holder
        said (save or delete) and unlock, on an error unlock only. `LockError` when the lock
        cannot be had within `wait_s`, or was lost before the write.

        With `once`, that claim is taken first, in the same round trip; `OnceRefusedError`
        (and no lock) when it is someone else's. The clean exit's write marks it done.
        `blocked`: a key whose existence refuses the sender (`BlockedError`), read first, in the
        same round trip. `exit_mark`: an input from before the chat's last quick exit is
        refused (`ExitedError`), in the same round trip.
        """
        key = redis_keys.session_key(pseudonym)
        lock = redis_keys.conversation_lock_key(pseudonym)
        keys = [lock, key, blocked or lock, lock if exit_mark is None else exit_mark.key]
        token = holder_token()
        args: list[str | bytes | int] = [
            token,
            int(self._lock_ttl_s * 1000),
            0 if blocked is None else 1,
            "" if exit_mark is None else exit_mark.place,
        ]
        if once is not None:
            keys.append(once.key)
            args += [once.token, once.lease_s]
        give_up = time.monotonic() + wait_s
        while True:
            taken = await self._take(keys, args)
            if taken[0] == 1:
                break
            if taken[0] == 2:
                raise OnceRefusedError(taken[1] if len(taken) > 1 else None)
            if taken[0] == 3:
                raise BlockedError
            if taken[0] == 4:
                raise ExitedError
            if time.monotonic() >= give_up:
                raise LockError("conversation busy")
            await asyncio.sleep(_LOCK_RETRY_S)
        sealed = taken[1] if len(taken) > 1 else None
        held = HeldSession(self._open(key, sealed), lambda s: self._cipher.seal(key, s.to_json()))
        try:
            async with contextlib.AsyncExitStack() as leases:
                await leases.enter_async_context(
                    renewed(self._redis, keys[0], token, int(self._lock_ttl_s * 1000))
                )
                if once is not None:
                    # The claim's lease is short and renewed like the lock's: a worker killed
                    # mid-turn lets its update go within seconds, not minutes.
                    await leases.enter_async_context(
                        renewed(self._redis, once.key, once.token, once.lease_s * 1000)
                    )
                yield held
        except BaseException:
            await self._release(keys[:2], [token, "keep", b"", self._ttl_s])
            raise
        release_keys, args = self._release_args(keys[:2], token, held, once)
        if not await self._release(release_keys, args):
            raise LockError("conversation lock lost before the session was written")

    def _release_args(
        self, keys: list[str], token: str, held: HeldSession, once: Once | None
    ) -> tuple[list[str], list[str | bytes | int]]:
        """The release script's keys and arguments for what the holder said."""
        lock = keys[0]
        args: list[str | bytes | int] = [token, held._action, held._sealed, self._ttl_s]
        release_keys = list(keys)
        if once is not None:
            release_keys.append(once.key)
            args += [once.done, once.done_ttl_s]
        elif held._record is not None:
            # The release sets its third key as it marks a `Once` done.
            record_key, value, ttl_s = held._record
            release_keys.append(record_key)
            args += [value, ttl_s]
        replies = held._replies
        if replies is not None:
            if len(release_keys) == 2:
                release_keys.append(lock)  # no third key: '' says so
                args += [b"", 0]
            release_keys += [replies.hash_key, replies.index_key]
            args += [
                replies.mode,
                replies.field,
                replies.value,
                replies.ttl_s,
                replies.member_prefix,
                replies.lease_ms,
            ]
            if replies.exit_mark is not None:
                release_keys += [replies.exit_mark.key, *replies.exit_mark.ends]
                args += [replies.exit_mark.place, replies.exit_mark.ttl_s]
        return release_keys, args

    async def save(self, pseudonym: Pseudonym, session: Session) -> None:
        key = redis_keys.session_key(pseudonym)
        await self._redis.set(key, self._cipher.seal(key, session.to_json()), ex=self._ttl_s)

    async def delete(self, pseudonym: Pseudonym) -> None:
        await self._redis.delete(redis_keys.session_key(pseudonym))
