"""Readiness: may this node take traffic now? `GET /readyz`, beside `/healthz` (liveness).

Liveness only says the process answers, so an orchestrator restarts a hung process but not
every node at once when Redis blips. Readiness names what this node needs: Redis everywhere;
on a backend the database, reachable and at the newest migration; flows loaded where they are
run; on a bot the centre's public key. A failing check takes the node out of the load
balancer's rotation until it passes again.

The answer names the failing checks, never why (an error's text may carry a URL or a host).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

# A probe that hangs is a failing probe: an orchestrator's own timeout is about a second.
CHECK_TIMEOUT_S = 0.8

Check = Callable[[], Awaitable[bool]]


class Readiness:
    """Named checks, run together on every probe; each True when its dependency is usable."""

    def __init__(self) -> None:
        self._checks: dict[str, Check] = {}

    def add(self, name: str, check: Check) -> None:
        self._checks[name] = check

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._checks)

    async def failing(self) -> list[str]:
        names = list(self._checks)
        results = await asyncio.gather(*(self._run(n) for n in names))
        return [name for name, ok in zip(names, results, strict=True) if not ok]

    async def _run(self, name: str) -> bool:
        try:
            return await asyncio.wait_for(self._checks[name](), CHECK_TIMEOUT_S)
        except Exception as exc:
            log.warning("readiness: %s failed (%s)", name, type(exc).__name__)
            return False


readiness_key = web.AppKey("readiness", Readiness)


async def readyz(request: web.Request) -> web.Response:
    failing = await request.app[readiness_key].failing()
    if failing:
        return web.json_response({"status": "not ready", "failing": failing}, status=503)
    return web.json_response({"status": "ready"})
