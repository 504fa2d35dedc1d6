"""Keys a turn holds on a short lease, renewed while it runs, so a dead process lets go fast.

A turn's conversation lock and a web chat turn's replay marker used to live 30 s and 300 s: a
process killed mid-turn (SIGKILL, OOM, a lost node) left its victim behind "still working on
this message" for up to five minutes (issue 18). Now each such key names its holder (this
process, `holder_token`) and expires after a few seconds unless the holder, still alive, renews
it every third of the lease. Renewal is a compare-and-set on the token: a key that has passed
to someone else is never extended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

# KEYS: the key. ARGV: the holder's token, the lease (ms). 1 when renewed, 0 when not ours.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def holder_token() -> str:
    """Names the process (host and pid, for an operator reading Redis) and this one hold."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(8)}"


@contextlib.asynccontextmanager
async def renewed(redis: Redis, key: str, token: str | bytes, lease_ms: int) -> AsyncIterator[None]:
    """Keep `key`'s lease while the block runs, as long as it still holds `token`."""
    renewing = asyncio.create_task(_renew(redis, key, token, lease_ms), name="lease")
    try:
        yield
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing


async def _renew(redis: Redis, key: str, token: str | bytes, lease_ms: int) -> None:
    while True:
        await asyncio.sleep(lease_ms / 3000)
        try:
            if not await redis.eval(_RENEW, 1, key, token, lease_ms):
                return  # lost: whoever holds it now decides; the holder's write will fail
        except RedisError as exc:
            # Try again at the next third: one missed renewal leaves two thirds of the lease.
            log.warning("lease renewal failed: redis %s", type(exc).__name__)
