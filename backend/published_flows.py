"""Following the published flow version, on every bot worker and backend node.

Issue 15: a conversation was pinned to its flow version only in one process's memory, so a
second bot worker, or the same one after a restart, answered a victim's next button with the
welcome text and her answers were lost. Here the pin is a content digest any process can look
up in the versions the backend mirrors to Redis (`backend.core.bundle_mirror`; bot workers
never reach the database); compiled bundles are cached by digest, so a pinned turn costs one
read the first time a process meets that version and nothing after.

The current version changes when the pointer does: a message on a Redis channel makes every
process look at once, and each also looks on its own every `redis_keys.FLOWS_CHECK_S` (a lost
message, a process that was down). A version that does not load here (it cannot happen for one
that passed its checks, but the code it ran against may differ) is logged and the old one kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from backend.core import redis_keys
from backend.core.bundle_mirror import MirrorReader
from backend.core.errors import FlowError
from backend.flows import bundle_files
from backend.flows.engine import Bundle

log = logging.getLogger(__name__)

KEEP_COMPILED = 32
LISTEN_RETRY_S = 5.0


class PublishedFlows:
    """`flow_source.FlowSource` backed by the versions table; `files` are the current one's."""

    def __init__(
        self,
        store: MirrorReader,
        current: Bundle,
        files: dict[str, str],
        number: int,
        *,
        check_s: float = redis_keys.FLOWS_CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self.current = current
        self.files = files
        self.number = number
        self._compiled: OrderedDict[str, Bundle] = OrderedDict({current.version: current})
        self._check_s = check_s
        self._clock = clock
        self._checked_at = clock()
        self._lock = asyncio.Lock()
        self._stopping = False
        # Called with each newly followed version (the console's referral list, its canned
        # responses), after it is live.
        self.listeners: list[Callable[[PublishedFlows], None]] = []

    @classmethod
    async def open(
        cls, store: MirrorReader, *, check_s: float = redis_keys.FLOWS_CHECK_S
    ) -> PublishedFlows:
        """The published version, compiled; `FlowError` if nothing is published or it fails."""
        published = await store.pointer()
        files = None if published is None else await store.files(published.digest)
        if published is None or files is None:
            raise FlowError("no published flow version in Redis yet: start a backend first")
        bundle = _compile(files)
        return cls(store, bundle, files, published.number, check_s=check_s)

    def entry(self) -> Bundle:
        return self.current

    async def pinned(self, version: str) -> Bundle | None:
        found = self._compiled.get(version)
        if found is not None:
            self._compiled.move_to_end(version)
            return found
        files = await self._store.files(version)
        if files is None:
            return None
        try:
            bundle = _compile(files)
        except FlowError as exc:
            log.warning("pinned flow version %s does not load here: %s", version[:16], exc)
            return None
        self._remember(bundle)
        return bundle

    async def follow(self) -> bool:
        """Look at the pointer if the last look is `check_s` old."""
        if self._clock() - self._checked_at < self._check_s:
            return False
        return await self.follow_now()

    async def follow_now(self) -> bool:
        async with self._lock:
            self._checked_at = self._clock()
            published = await self._store.pointer()
            if published is None or published.digest == self.current.version:
                return False
            files = await self._store.files(published.digest)
            if files is None:
                log.warning("flow version %d is not mirrored yet", published.number)
                return False
            try:
                bundle = self._compiled.get(published.digest) or _compile(files)
            except FlowError as exc:
                log.warning("flow version %d not followed: %s", published.number, exc)
                return False
            self.current, self.files, self.number = bundle, files, published.number
            self._remember(bundle)
        log.info("following flow version %d", published.number)
        for listener in self.listeners:
            listener(self)
        return True

    async def listen(self, redis: Redis) -> None:
        """Follow each publish as it is announced, until `stop`; resubscribes after a failure."""
        while not self._stopping:
            try:
                async with redis.pubsub() as pubsub:
                    await pubsub.subscribe(redis_keys.FLOWS_PUBLISHED_CHANNEL)
                    # Anything published while we were not subscribed.
                    await self.follow_now()
                    while not self._stopping:
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is not None:
                            await self.follow_now()
            except (RedisError, OSError):
                log.warning("flows: publishes unheard (redis); looking every %ss", self._check_s)
                await asyncio.sleep(LISTEN_RETRY_S)
            except (FlowError, ValueError) as exc:  # ValueError: a mangled mirror entry
                log.warning("flows: following failed: %s", type(exc).__name__)
                await asyncio.sleep(LISTEN_RETRY_S)

    def stop(self) -> None:
        self._stopping = True

    def _remember(self, bundle: Bundle) -> None:
        self._compiled[bundle.version] = bundle
        self._compiled.move_to_end(bundle.version)
        while len(self._compiled) > KEEP_COMPILED:
            self._compiled.popitem(last=False)


def _compile(files: dict[str, str]) -> Bundle:
    bundle, problems = bundle_files.compile_files(files)
    if bundle is None:
        errors = [str(p) for p in problems if p.is_error]
        raise FlowError("; ".join(errors[:5]))
    return bundle


async def stop_listening(flows: PublishedFlows, task: asyncio.Task[None]) -> None:
    flows.stop()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
