"""The HTTP application shell: health, error translation and security headers.

Both processes serve through it: the backend adds the console, the bot adds its doors.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.fingerprints import describe
from backend.forwarded import Network, forwarded_middleware
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
    except Exception as exc:
        # The type and a fingerprint only: a message may quote a victim's words, and the
        # route's pattern rather than the path, which a client chooses.
        log.error("request to %s failed: %s", _route(request), describe(exc))
        return web.json_response(
            {"error": "Something went wrong on our side. Please try again in a moment."},
            status=500,
        )


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "(no route)"


async def healthz(request: web.Request) -> web.Response:
    failing = []
    try:
        await request.app[redis_key].ping()
    except Exception:
        failing.append("redis")
    if engine_key in request.app:
        try:
            await database.ping(request.app[engine_key])
        except Exception:
            failing.append("database")
    if failing:
        return web.json_response({"status": "unavailable", "failing": failing}, status=503)
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
    if engine is not None:
        app[engine_key] = engine
    app.router.add_get("/healthz", healthz)
    return app
