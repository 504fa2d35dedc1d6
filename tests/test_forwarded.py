"""Behind a TLS-terminating proxy: its headers are believed from a trusted peer only."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.errors import SettingsError
from backend.core.settings import Settings, parse_networks
from backend.forwarded import forwarded_middleware
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import csrf_of

PUBLIC = "https://console.example"
PROXIED = {
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "console.example",
    "X-Forwarded-For": "203.0.113.7",
}


async def _seen(trusted: str, headers: dict[str, str]) -> dict[str, object]:
    """What a handler behind the middleware sees of a request from 127.0.0.1."""

    async def echo(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "scheme": request.scheme,
                "host": request.host,
                "remote": request.remote,
                "secure": request.secure,
            }
        )

    app = web.Application(middlewares=[forwarded_middleware(parse_networks(trusted))])
    app.router.add_get("/", echo)
    async with TestClient(TestServer(app)) as client:
        seen: dict[str, object] = await (await client.get("/", headers=headers)).json()
        return seen


async def test_a_trusted_proxys_headers_give_the_public_request() -> None:
    seen = await _seen("127.0.0.0/8, 10.0.0.0/8", PROXIED)
    assert seen == {
        "scheme": "https",
        "host": "console.example",
        "remote": "203.0.113.7",
        "secure": True,
    }
    # A client's own X-Forwarded-For entries come first; the last untrusted address is theirs.
    chain = PROXIED | {"X-Forwarded-For": "198.51.100.1, 203.0.113.7, 10.1.2.3"}
    assert (await _seen("127.0.0.1, 10.0.0.0/8", chain))["remote"] == "203.0.113.7"
    standard = {
        "Forwarded": 'for=198.51.100.9;proto=http;host=spoofed.example, for="[2001:db8::1]:4711"'
        ";proto=https;host=console.example"
    }
    assert await _seen("127.0.0.1", standard) == {
        "scheme": "https",
        "host": "console.example",
        "remote": "2001:db8::1",
        "secure": True,
    }


async def test_headers_from_an_untrusted_peer_or_malformed_ones_are_ignored() -> None:
    for trusted in ("", "10.0.0.0/8"):
        seen = await _seen(trusted, PROXIED)
        assert seen["scheme"] == "http" and seen["secure"] is False
        assert seen["remote"] == "127.0.0.1"
        assert seen["host"] != "console.example"
    odd = {
        "X-Forwarded-Proto": "javascript",
        "X-Forwarded-Host": "evil.example/<script>",
        "X-Forwarded-For": "not-an-address",
    }
    seen = await _seen("127.0.0.1", odd)
    assert (seen["scheme"], seen["remote"]) == ("http", "127.0.0.1")
    assert "evil" not in str(seen["host"])


def test_a_bad_trusted_proxy_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^HOTLINE_TRUSTED_PROXIES: 'proxy\.internal'"):
        Settings.from_env(
            {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_TRUSTED_PROXIES": "proxy.internal"}
        )
    parsed = Settings.from_env(
        {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_TRUSTED_PROXIES": "127.0.0.1,10.0.0.0/8"}
    )
    assert [str(n) for n in parsed.trusted_proxies] == ["127.0.0.1/32", "10.0.0.0/8"]


async def _login(hotline: RunningHotline, headers: dict[str, str]) -> ClientResponse:
    return await hotline.client.post(
        "/console/login",
        data={"username": "admin", "password": hotline.first_password},
        headers=headers,
        allow_redirects=False,
    )


async def test_behind_a_trusted_proxy_the_console_works_over_https(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    # `redis` and `engine` give this test a clean pair, as the `hotline` fixture's.
    env = {"HOTLINE_TRUSTED_PROXIES": "127.0.0.1", "HOTLINE_PUBLIC_URL": PUBLIC}
    async with start_hotline(pair, tmp_path, env) as hotline:
        signed_in = await _login(hotline, PROXIED | {"Origin": PUBLIC})
        assert signed_in.status == 303
        assert "Secure" in signed_in.headers["Set-Cookie"]
        assert signed_in.headers["Strict-Transport-Security"] == "max-age=31536000"
        # A Secure cookie does not travel back over the test's plain HTTP: send it by hand.
        cookie = {"Cookie": f"hotline_console={signed_in.cookies['hotline_console'].value}"}
        page = await hotline.client.get("/console/password", headers=PROXIED | cookie)
        assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
        form = {
            "csrf": csrf_of(await page.text()),
            "current_password": hotline.first_password,
            "new_password": "a long new passphrase",
            "repeat_password": "a long new passphrase",
        }
        internal = f"http://{hotline.client.host}:{hotline.client.port}"
        refused = await hotline.client.post(
            "/console/password",
            data=form,
            headers=PROXIED | cookie | {"Origin": internal},
            allow_redirects=False,
        )
        assert refused.status == 403, "the public origin is https://console.example"
        changed = await hotline.client.post(
            "/console/password",
            data=form,
            headers=PROXIED | cookie | {"Origin": PUBLIC},
            allow_redirects=False,
        )
        assert changed.status == 303, await changed.text()
        assert "Secure" in changed.headers["Set-Cookie"]
        cookie = {"Cookie": f"hotline_console={changed.cookies['hotline_console'].value}"}
        # The live chat's upgrade compares the public origin too (then finds no such case).
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13"}
        upgrade |= {"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        socket = await hotline.client.get(
            "/console/cases/no-such-case/live",
            headers=PROXIED | cookie | upgrade | {"Origin": PUBLIC},
        )
        assert socket.status == 404
        cross = await hotline.client.get(
            "/console/cases/no-such-case/live",
            headers=PROXIED | cookie | upgrade | {"Origin": internal},
        )
        assert cross.status == 403


async def test_without_trusted_proxies_forwarded_headers_change_nothing(
    hotline: RunningHotline,
) -> None:
    signed_in = await _login(hotline, PROXIED)
    assert signed_in.status == 303
    assert "Secure" not in signed_in.headers["Set-Cookie"]
    assert "Strict-Transport-Security" not in signed_in.headers
    page = await hotline.client.get("/console/password", headers=PROXIED)
    assert "Strict-Transport-Security" not in page.headers
    form = {
        "csrf": csrf_of(await page.text()),
        "current_password": hotline.first_password,
        "new_password": "a long new passphrase",
        "repeat_password": "a long new passphrase",
    }
    spoofed = await hotline.client.post(
        "/console/password",
        data=form,
        headers=PROXIED | {"Origin": PUBLIC},
        allow_redirects=False,
    )
    assert spoofed.status == 403, "a client cannot make its own origin ours"
