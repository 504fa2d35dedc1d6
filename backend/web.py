"""The HTTP application shell: health, error translation and security headers.

Both processes serve through it: the backend adds the console, the bot adds its doors.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.core.errors import (
    ApprovalRequiredError,
    CaseNotFoundError,
    CaseWorkError,
    LegalHoldError,
)
from backend.core.settings import Network
from backend.forwarded import forwarded_middleware
from backend.web_security import security_middleware

log = logging.getLogger(__name__)

redis_key = web.AppKey("redis", Redis)
engine_key = web.AppKey("engine", AsyncEngine)

MAX_REQUEST_BYTES = 1024 * 1024


# Core errors a handler lets through, and what they mean over HTTP (the reason None: the error's
# own message, written for the counselor). A handler catches one itself only to say something
# more specific than this. A subclass is looked up before its base.
REFUSALS: Mapping[type[Exception], tuple[type[web.HTTPException], str | None]] = {
    CaseNotFoundError: (web.HTTPNotFound, "no such case"),
    ApprovalRequiredError: (web.HTTPForbidden, None),
    CaseWorkError: (web.HTTPBadRequest, None),
    LegalHoldError: (web.HTTPConflict, "the case is under a legal hold: release it first"),
}


def refused(
    request: web.Request, status: type[web.HTTPException], reason: str
) -> web.HTTPException:
    """JSON for the API, plain text for pages."""
    if request.path.startswith("/api/"):
        return status(text=json.dumps({"error": reason}), content_type="application/json")
    return status(text=reason)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The one boundary where core errors become their HTTP status, and unexpected errors a
    calm answer, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:
        for kind in type(exc).__mro__:
            if kind in REFUSALS:
                status, reason = REFUSALS[kind]
                raise refused(request, status, str(exc) if reason is None else reason) from None
        log.exception("request to %s failed", request.path)
        return web.json_response(
            {"error": "Something went wrong on our side. Please try again in a moment."},
            status=500,
        )


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
