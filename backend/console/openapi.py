"""The console's JSON API described as OpenAPI 3.1, generated from the routes themselves.

Built from the router at request time, so the document cannot drift from what is served: every
`/api/` route appears with its summary (the handler's docstring) and its access rule.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from aiohttp import web

from backend.console.access import Access, access_of, guard
from backend.console.sessions import COOKIE_NAME

_PARAMETER = re.compile(r"{(\w+)}")


def document(app: web.Application) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if not path.startswith("/api/") or route.method == "HEAD":
            continue
        access = access_of(route.handler)
        doc = inspect.getdoc(route.handler) or ""
        operation: dict[str, Any] = {
            "summary": doc.splitlines()[0] if doc else route.method + " " + path,
            "x-hotline-access": access.value if access else "undeclared",
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {}}},
                "401": {"description": "not signed in, or a password or two-factor step is due"},
                "403": {"description": "the counselor's role may not do this"},
            },
        }
        if access is not None and access is not Access.PUBLIC:
            operation["security"] = [{"consoleSession": []}]
        names = _PARAMETER.findall(path)
        if names:
            operation["parameters"] = [
                {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                for n in names
            ]
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "hotline console API", "version": "1"},
        "paths": dict(sorted(paths.items())),
        "components": {
            "securitySchemes": {
                "consoleSession": {"type": "apiKey", "in": "cookie", "name": COOKIE_NAME}
            }
        },
    }


async def openapi(request: web.Request) -> web.Response:
    """This document: the console's JSON API."""
    return web.json_response(document(request.app))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/openapi.json", guard(Access.PUBLIC, openapi))
