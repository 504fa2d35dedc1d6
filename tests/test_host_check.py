"""Issue 18: a request under a host name that is not ours is refused before anything trusts it.

Before, any Host was served, and the console's origin check compared the Origin with that same
Host: a page under an attacker's name re-resolved to this server (DNS rebinding) passed it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.errors import SettingsError
from backend.core.settings import Settings
from backend.host_check import REFUSED
from tests.conftest import Pair, RunningHotline, start_hotline

PUBLIC = "https://hotline.example"


async def _sign_in(hotline: RunningHotline, host: str, origin: str) -> int:
    response = await hotline.client.post(
        "/console/login",
        data={"username": "admin", "password": hotline.first_password},
        headers={"Host": host, "Origin": origin},
        allow_redirects=False,
    )
    return response.status


async def test_a_foreign_host_name_is_refused_before_the_origin_check(
    hotline: RunningHotline,
) -> None:
    rebound = "attacker.example:8080"
    # The Origin matches the Host, as it does for a rebinding page: only the host check stops it.
    assert await _sign_in(hotline, rebound, f"http://{rebound}") == 421
    for path in ("/chat", "/console", "/healthz"):
        response = await hotline.client.get(path, headers={"Host": rebound})
        assert response.status == 421
        assert await response.text() == REFUSED
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    turn = await hotline.client.post(
        "/chat/api/turn", json={"token": "t" * 43, "text": "/start"}, headers={"Host": rebound}
    )
    assert turn.status == 421
    # The bound address, and on a loopback bind any loopback name, is ours.
    port = hotline.client.port
    for own in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST."):
        assert (await hotline.client.get("/chat", headers={"Host": own})).status == 200, own
    assert await _sign_in(hotline, f"localhost:{port}", f"http://localhost:{port}") == 303


async def test_behind_a_proxy_only_the_public_host_is_served(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    env = {"HOTLINE_PUBLIC_URL": PUBLIC, "HOTLINE_TRUSTED_PROXIES": "127.0.0.1"}
    async with start_hotline(pair, tmp_path, env) as hotline:
        proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
        ours = await hotline.client.get(
            "/chat", headers=proxied | {"X-Forwarded-Host": "hotline.example"}
        )
        assert ours.status == 200
        other = await hotline.client.get(
            "/chat", headers=proxied | {"X-Forwarded-Host": "attacker.example"}
        )
        assert other.status == 421
        signed_in = await hotline.client.post(
            "/console/login",
            data={"username": "admin", "password": hotline.first_password},
            headers=proxied
            | {"X-Forwarded-Host": "attacker.example", "Origin": "https://attacker.example"},
            allow_redirects=False,
        )
        assert signed_in.status == 421


async def test_on_a_wildcard_bind_addresses_are_served_and_names_are_not(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    wildcard = {"HOTLINE_HTTP_HOST": "0.0.0.0"}  # noqa: S104 - the bind under test, not a real one
    async with start_hotline(pair, tmp_path, wildcard) as hotline:
        for address in ("10.1.2.3:8080", "[2001:db8::5]", "127.0.0.1"):
            response = await hotline.client.get("/healthz", headers={"Host": address})
            assert response.status == 200, address
        response = await hotline.client.get("/healthz", headers={"Host": "attacker.example"})
        assert response.status == 421


def test_a_bad_public_url_is_named(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^HOTLINE_PUBLIC_URL: "):
        Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_PUBLIC_URL": "hotline"})
    settings = Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_PUBLIC_URL": PUBLIC})
    assert settings.public_url == PUBLIC
