"""Published flow versions as bot workers read them: mirrored in Redis by the backend.

The versions live in SQL (backend/flow_versions.py), which bot workers never reach (the
deployment keeps them off the database). The backend writes each version's files under its
content digest (immutable: written once, never changed) and the pointer to the published one,
and announces every change; it also re-checks the mirror against SQL every few seconds, so a
publish made without Redis (`hotline flows import` on a host without HOTLINE_REDIS_URL) or a
lost Redis still reaches the workers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from backend.core import redis_keys


@dataclass(frozen=True)
class Pointer:
    digest: str
    number: int


async def write_version(redis: Redis, digest: str, files_json: bytes) -> None:
    await redis.set(redis_keys.flows_version_key(digest), files_json, nx=True)


async def missing(redis: Redis, digests: list[str]) -> list[str]:
    """The digests whose files are not mirrored yet."""
    found = []
    for digest in digests:
        if not await redis.exists(redis_keys.flows_version_key(digest)):
            found.append(digest)
    return found


async def point(redis: Redis, pointer: Pointer) -> bool:
    """Set the pointer; True (and announced) when it changed."""
    value = json.dumps({"digest": pointer.digest, "number": pointer.number})
    before = await redis.get(redis_keys.FLOWS_POINTER_KEY)
    if before is not None and json.loads(before) == json.loads(value):
        return False
    await redis.set(redis_keys.FLOWS_POINTER_KEY, value)
    await redis.publish(redis_keys.FLOWS_PUBLISHED_CHANNEL, pointer.digest)
    return True


class MirrorReader:
    """What a worker reads: the pointer and a version's files by digest."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def pointer(self) -> Pointer | None:
        raw = await self._redis.get(redis_keys.FLOWS_POINTER_KEY)
        if raw is None:
            return None
        data = json.loads(raw)
        return Pointer(str(data["digest"]), int(data["number"]))

    async def files(self, digest: str) -> dict[str, str] | None:
        raw = await self._redis.get(redis_keys.flows_version_key(digest))
        if raw is None:
            return None
        data = json.loads(raw)
        if not isinstance(data, dict):
            return None
        return {str(k): str(v) for k, v in data.items()}
