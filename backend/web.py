"""The HTTP application shell: health and readiness, error translation and security headers.

Both processes serve through it: the backend adds the console, the bot adds its doors.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.forwarded import Network, forwarded_middleware
from backend.readiness import Readiness, readiness_key, readyz
from backend.web_security import security_middleware

log = logging.getLogger(__name__)

redis_key = web.AppKey("redis", Redis)
engine_key = web.AppKey("engine", AsyncEngine)

MAX_REQUEST_BYTES = 1024 * 1024


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one boundary where unexpected errors become a calm answer, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("request to %s failed", request.path)
        return web.json_response(
            {"error": "Something went wrong on our side. Please try again in a moment."},
            status=500,
        )


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers. Dependencies are `/readyz`'s (backend/readiness.py), so
    a Redis outage takes nodes out of rotation instead of having them all restarted."""
    return web.json_response({"status": "ok"})


def make_app(
    redis: Redis, engine: AsyncEngine | None, *, trusted_proxies: Sequence[Network] = ()
) -> web.Application:
    # The proxy's view first: every later middleware and handler sees the public request.
    app = web.Application(
        middlewares=[forwarded_middleware(trusted_proxies), security_middleware, error_middleware],
        client_max_size=MAX_REQUEST_BYTES,
    )
    app[redis_key] = redis
    ready = Readiness()
    ready.add("redis", functools.partial(_answers, redis))
    if engine is not None:
        app[engine_key] = engine
        ready.add("database", functools.partial(_database_answers, engine))
        ready.add("migrations", functools.partial(database.at_head, engine))
    app[readiness_key] = ready
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _answers(redis: Redis) -> bool:
    return bool(await redis.ping())


async def _database_answers(engine: AsyncEngine) -> bool:
    await database.ping(engine)
    return True
