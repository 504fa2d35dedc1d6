"""Security headers shared by every page hotline serves: the console and the victims' chat."""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

# Sent only on requests that came over TLS (directly, or through a trusted proxy:
# backend/forwarded.py); over plain HTTP browsers ignore it anyway.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


def security_headers(response: web.StreamResponse, *, secure: bool = False) -> None:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if secure:
        response.headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY


@web.middleware
async def security_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        security_headers(exc, secure=request.secure)
        raise
    security_headers(response, secure=request.secure)
    return response
