"""What a TLS-terminating reverse proxy says about the request it passes on.

Behind a proxy the connection hotline sees is plain HTTP from the proxy: `request.secure` is
False, the host may be an internal one and `request.remote` is the proxy. Without correcting
that, session cookies would lack `Secure`, HSTS would never be sent, and the origin checks would
compare a browser's `https://` origin with `http://` and refuse every console action.

`forwarded_middleware` believes the proxy's headers (RFC 7239 `Forwarded`, or else
`X-Forwarded-Proto`, `X-Forwarded-Host` and `X-Forwarded-For`) only from a peer in
`HOTLINE_TRUSTED_PROXIES`, and then clones the request with the public scheme, host and client
address, once, before any handler or other middleware reads them. From any other peer they are
ignored: anyone can send the headers, and believing them would let a client pretend to be on
TLS or come from elsewhere.

Of a list, the entry the nearest proxy appended (the last) says the scheme and host; the
client is the rightmost address of the chain that is not itself a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler, Middleware

from backend.core.settings import Network

log = logging.getLogger(__name__)

Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

_SCHEMES = frozenset({"http", "https"})
# A host name or an address, with an optional port: what an Origin header can carry.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")


def _address(text: str | None) -> Address | None:
    if not text:
        return None
    text = text.strip().strip('"')
    if text.startswith("["):  # RFC 7239 quotes IPv6 as "[2001:db8::1]:port"
        text = text[1 : text.find("]")] if "]" in text else text
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: Address | None, networks: Sequence[Network]) -> bool:
    return address is not None and any(address in network for network in networks)


def _client(chain: Sequence[str], networks: Sequence[Network]) -> str | None:
    """The rightmost address that is not a trusted proxy (or the leftmost, if all are)."""
    addresses = [_address(item) for item in chain]
    if not addresses or any(a is None for a in addresses):
        return None
    for address in reversed(addresses):
        if not _trusted(address, networks):
            return str(address)
    return str(addresses[0])


def _last(values: str | None) -> str | None:
    if not values:
        return None
    return values.split(",")[-1].strip() or None


class PublicView(NamedTuple):
    """What the proxy says, each part only where it said something well-formed."""

    scheme: str | None = None
    host: str | None = None
    remote: str | None = None


def public_view(request: web.Request, networks: Sequence[Network]) -> PublicView:
    """What the trusted proxy in front says; nothing when the peer is not one."""
    if not _trusted(_address(request.remote), networks):
        return PublicView()
    scheme = host = remote = None
    if hdrs.FORWARDED in request.headers:
        elements = request.forwarded
        if elements:
            scheme, host = elements[-1].get("proto"), elements[-1].get("host")
        remote = _client([str(e.get("for", "")) for e in elements], networks)
    else:
        scheme = _last(request.headers.get(hdrs.X_FORWARDED_PROTO))
        host = _last(request.headers.get(hdrs.X_FORWARDED_HOST))
        chain = request.headers.get(hdrs.X_FORWARDED_FOR)
        remote = _client(chain.split(","), networks) if chain else None
    return PublicView(
        scheme=scheme.lower() if scheme is not None and scheme.lower() in _SCHEMES else None,
        host=host if host is not None and _HOST.fullmatch(host) else None,
        remote=remote,
    )


def forwarded_middleware(networks: Sequence[Network]) -> Middleware:
    """The middleware for `make_app`; it must run before every other one."""
    trusted = tuple(networks)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not trusted:
            return await handler(request)
        view = public_view(request, trusted)
        if view != PublicView():
            request = request.clone(
                scheme=view.scheme or request.scheme,
                host=view.host or request.host,
                remote=view.remote or request.remote or "",
            )
        return await handler(request)

    return middleware
