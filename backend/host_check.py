"""Requests are served only under our own name: the public host, or the address we listen on.

Without this, any name that resolves to us is served as if it were ours: a page on an
attacker's name that re-resolves to this server (DNS rebinding, aimed at a console on
127.0.0.1 or an internal address) reads our answers, and the console's origin check, which
compares the Origin with the request's own scheme and Host, agrees with it (issue 18). So the
Host (as the trusted proxy gave it, `backend.forwarded`) must be one of:
- the host of `HOTLINE_PUBLIC_URL` (and of the Telegram webhook URL, which Telegram calls);
- the address `HOTLINE_HTTP_HOST` names; for a loopback address, any loopback name;
- for a wildcard bind (0.0.0.0, ::), any address literal: it is this host's own address, and
  a rebinding page always comes under a name, never an address.
The port is not compared: a request that reached our socket came to our port.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
REFUSED = "this server does not answer to that host name"


@dataclass(frozen=True)
class AllowedHosts:
    names: frozenset[str]
    any_address: bool = False

    @classmethod
    def of(cls, http_host: str, *urls: str | None) -> AllowedHosts:
        names = {_name(urlsplit(url).hostname or "") for url in urls if url}
        bound = _name(http_host)
        address = _address(bound)
        if address is not None and address.is_unspecified:
            return cls(frozenset(names - {""}), any_address=True)
        names.add(bound)
        if bound in _LOOPBACK_NAMES or (address is not None and address.is_loopback):
            names |= _LOOPBACK_NAMES
        return cls(frozenset(names - {""}))

    def allows(self, host: str) -> bool:
        name = _name(_without_port(host))
        if name in self.names:
            return True
        return self.any_address and _address(name) is not None


def _name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _without_port(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _address(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_middleware(allowed: AllowedHosts) -> Middleware:
    """For `make_app`, after `forwarded_middleware`: 421 for a Host that is not ours."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not allowed.allows(request.host):
            raise web.HTTPMisdirectedRequest(text=REFUSED)
        return await handler(request)

    return middleware
