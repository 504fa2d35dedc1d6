"""`/healthz` (liveness: the process answers) and `/readyz` (readiness: what the node needs).

Through the composed app: the failing checks are made by stopping the node's own Redis server
and by setting the database's schema revision back, not by replacing anything.
"""

from __future__ import annotations

import io
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.settings import Settings
from backend.embedded_redis import EmbeddedRedis
from backend.readiness import readiness_key
from bot.cli.node import BOT, Node
from tests.conftest import FAST_KDF_ENV, Pair, RunningHotline, start_hotline


async def test_a_ready_node_says_so(hotline: RunningHotline) -> None:
    response = await hotline.client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ready"}


async def test_without_redis_the_node_is_alive_but_not_ready(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    own = EmbeddedRedis(tmp_path / "own-redis")
    await own.start()
    try:
        alone = Pair(pair.name, pair.database_url, own.url)
        async with start_hotline(alone, tmp_path, {}) as running:
            assert (await running.client.get("/readyz")).status == 200
            await own.stop()
            response = await running.client.get("/readyz")
            assert response.status == 503
            assert await response.json() == {"status": "not ready", "failing": ["redis"]}
            alive = await running.client.get("/healthz")
            assert alive.status == 200, "liveness does not depend on Redis: no restart storm"
    finally:
        await own.stop()


async def test_a_database_behind_the_code_is_not_ready(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {}) as running:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0004'"))
        response = await running.client.get("/readyz")
        assert response.status == 503
        assert (await response.json())["failing"] == ["migrations"]


async def test_a_bot_worker_is_ready_with_the_centre_key_and_its_flows(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {}):
        pass  # the backend's first start publishes the centre key into the data directory
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path / "data"),
            "HOTLINE_REDIS_URL": pair.redis_url,
            **FAST_KDF_ENV,
        }
    )
    async with Node(settings, frozenset({BOT}), io.StringIO()) as node:
        app = await node.build()
        async with TestClient(TestServer(app)) as client:
            response = await client.get("/readyz")
            assert response.status == 200, await response.text()
    assert set(app[readiness_key].names) == {"redis", "flows", "centre_key"}
