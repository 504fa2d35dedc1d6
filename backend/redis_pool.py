"""The one way a hotline process opens Redis: a bounded pool that waits for a free connection.

redis-py's default pool raises "Too many connections" the moment its limit is reached, so a burst
of requests (a surge of victims, a flood) failed turns that a moment's wait would have served
(issue 18). A `BlockingConnectionPool` queues the caller for up to `RedisPool.wait_ms` instead;
only what still finds no connection then fails, as a `redis.exceptions.ConnectionError` that the
web layer answers with 503 and Retry-After (`backend.web`), never as a lost message.

Blocking stream readers (intake, relay, console hub) each hold one connection while they wait,
so the pool must be larger than the number of them plus the turns expected at once.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from backend.core.settings import RedisPool

HEALTH_CHECK_INTERVAL_S = 30


def connect(url: str, pool: RedisPool) -> Redis:
    """A client on its own pool; `aclose()` closes the pool with it."""
    connections = BlockingConnectionPool.from_url(
        url,
        max_connections=pool.max_connections,
        timeout=pool.wait_ms / 1000,
        health_check_interval=HEALTH_CHECK_INTERVAL_S,
    )
    return Redis.from_pool(connections)
