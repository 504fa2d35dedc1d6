"""The HTTP application shell: health and readiness, error translation and security headers.

Both processes serve through it: the backend adds the console, the bot adds its doors.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Mapping, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import database
from backend.core.errors import (
    N_,
    ApprovalRequiredError,
    CaseNotFoundError,
    CaseTransitionError,
    CaseWorkError,
    HotlineError,
    LegalHoldError,
)
from backend.core.fingerprints import describe
from backend.core.settings import Network
from backend.forwarded import forwarded_middleware
from backend.host_check import AllowedHosts, host_middleware
from backend.readiness import Readiness, readiness_key, readyz
from backend.web_security import security_middleware

log = logging.getLogger(__name__)

redis_key = web.AppKey("redis", Redis)
engine_key = web.AppKey("engine", AsyncEngine)

MAX_REQUEST_BYTES = 1024 * 1024
# What an overloaded server asks a client to wait before sending the same request again.
RETRY_AFTER_S = 1


def unavailable(reason: str = "busy; send the same request again") -> web.HTTPServiceUnavailable:
    """503 with Retry-After: the request was not served and may be sent again as it was.

    Never a 200 that carries an error text: a client (the web chat page) retries only what it
    can tell failed, so a 200 would lose the victim's message (issue 18)."""
    return web.HTTPServiceUnavailable(
        text=json.dumps({"error": reason}),
        content_type="application/json",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# Core errors a handler lets through, and what they mean over HTTP (the reason None: the error's
# own message, written for the counselor). A handler catches one itself only to say something
# more specific than this. A subclass is looked up before its base.
REFUSALS: Mapping[type[Exception], tuple[type[web.HTTPException], str | None]] = {
    CaseNotFoundError: (web.HTTPNotFound, N_("no such case")),
    ApprovalRequiredError: (web.HTTPForbidden, None),
    CaseWorkError: (web.HTTPBadRequest, None),
    LegalHoldError: (web.HTTPConflict, N_("the case is under a legal hold: release it first")),
    # Its own text names the case and its statuses (for logs); a counselor reads what to do.
    CaseTransitionError: (
        web.HTTPConflict,
        N_("the case's status changed meanwhile (or does not allow this); reload the page"),
    ),
}


def refusal_for(
    request: web.Request,
    exc: Exception,
    translate: Callable[[str], str] = str,
    error_text: Callable[[HotlineError], str] = str,
) -> web.HTTPException | None:
    """The answer to a core error a handler let through (`REFUSALS`), or None for any other.
    The console passes its own `translate` and `error_text`, so the reason is in the
    counselor's language; here (outside the console) it is the English."""
    for kind in type(exc).__mro__:
        if kind in REFUSALS:
            status, reason = REFUSALS[kind]
            if reason is not None:
                return refused(request, status, translate(reason))
            text = error_text(exc) if isinstance(exc, HotlineError) else str(exc)
            return refused(request, status, text)
    return None


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
    except RedisError as exc:
        # Out of connections (the pool waited its `HOTLINE_REDIS_POOL_WAIT_MS`) or Redis away:
        # nothing was done that a retry would repeat wrongly, and the client is told to retry.
        log.warning("request to %s refused: redis %s", request.path, type(exc).__name__)
        raise unavailable() from None
    except Exception as exc:
        answer = refusal_for(request, exc)
        if answer is not None:
            raise answer from None
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


async def healthz(_request: web.Request) -> web.Response:
    """Liveness: the process answers. Dependencies are `/readyz`'s (backend/readiness.py), so
    a Redis outage takes nodes out of rotation instead of having them all restarted."""
    return web.json_response({"status": "ok"})


def make_app(
    redis: Redis,
    engine: AsyncEngine | None,
    *,
    trusted_proxies: Sequence[Network] = (),
    allowed_hosts: AllowedHosts | None = None,
) -> web.Application:
    """`allowed_hosts` None: any Host (a bench's in-process app)."""
    # The proxy's view first: every later middleware and handler sees the public request.
    middlewares = [forwarded_middleware(trusted_proxies), security_middleware]
    if allowed_hosts is not None:
        middlewares.append(host_middleware(allowed_hosts))
    app = web.Application(
        middlewares=[*middlewares, error_middleware], client_max_size=MAX_REQUEST_BYTES
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
