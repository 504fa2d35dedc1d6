"""Serves the alerts script every signed-in console page loads (`static/alerts.js`): it reads
`/api/queue` for new priority-3 cases and SLAs about to be missed, and takes self-harm flags from
the live chat (`live.py` marks victim lines with the triage's flags)."""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from backend.console.access import Access, guard


async def alerts_script(_request: web.Request) -> web.Response:
    body = (resources.files("backend.console") / "static" / "alerts.js").read_bytes()
    return web.Response(body=body, content_type="text/javascript", charset="utf-8")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/console/static/alerts.js", guard(Access.PUBLIC, alerts_script))
