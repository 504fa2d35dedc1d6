"""Two-factor sign-in over HTTP: enrolment, the code step, replay, the lock, the requirement."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import totp
from backend.console.app_keys import counselors_key
from backend.models import AuditEntry, Counselor
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import csrf_of, login, sign_in_and_change_password

PASSWORD = "a long enough passphrase"  # noqa: S105 - test account only


def code(secret: bytes, steps_ahead: int = 0) -> str:
    """The code for now, or a later step still inside the ±1 window (one not yet used)."""
    return totp.code_at_step(secret, totp.step_at(time.time()) + steps_ahead)


def secret_of(page: str) -> bytes:
    match = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', page)
    assert match is not None, page
    text = match.group(1)
    return base64.b32decode(text + "=" * (-len(text) % 8))


async def enrol(hotline: RunningHotline, *, probe: bool = True) -> bytes:
    """Turn two-factor on through the page; `probe` first tries a wrong password and code."""
    page = await (await hotline.client.get("/console/two-factor")).text()
    secret = secret_of(page)
    assert "otpauth://totp/hotline:admin?secret=" in page
    again = await (await hotline.client.get("/console/two-factor")).text()
    assert secret_of(again) == secret, "a reload shows the same secret"
    assert '<img id="totp-qr" src="/console/two-factor/qr.svg"' in page, "a QR code from our origin"
    qr = await hotline.client.get("/console/two-factor/qr.svg")
    assert qr.status == 200 and qr.content_type == "image/svg+xml"
    assert qr.headers["Cache-Control"] == "no-store"
    assert (await qr.text()).startswith("<svg")
    form = {"csrf": csrf_of(page), "password": PASSWORD, "code": code(secret)}
    if probe:
        await _probe(hotline, form, secret)
    done = await hotline.client.post("/console/two-factor", data=form, allow_redirects=False)
    assert done.status == 303, await done.text()
    assert done.headers["Location"] == "/console"
    return secret


async def _probe(hotline: RunningHotline, form: dict[str, str], secret: bytes) -> None:
    wrong_password = await hotline.client.post(
        "/console/two-factor", data=form | {"password": "not the password"}
    )
    assert wrong_password.status == 401
    wrong_code = await hotline.client.post(
        "/console/two-factor",
        data=form | {"code": code(secret, 5)},
    )
    assert wrong_code.status == 400


async def sign_out(hotline: RunningHotline) -> None:
    hotline.client.session.cookie_jar.clear()


async def submit_code(hotline: RunningHotline, value: str) -> int:
    page = await hotline.client.get("/console/login/code")
    assert page.status == 200
    response = await hotline.client.post(
        "/console/login/code",
        data={"csrf": csrf_of(await page.text()), "code": value},
        allow_redirects=False,
    )
    return response.status


async def counselor_row(hotline: RunningHotline) -> Counselor:
    counselor = await hotline.client.app[counselors_key].authenticate("admin", PASSWORD)
    return counselor


async def audit_actions(engine: AsyncEngine) -> list[str]:
    async with AsyncSession(engine) as session:
        rows = (await session.exec(select(AuditEntry).order_by(col(AuditEntry.seq)))).all()
    return [row.action for row in rows]


async def test_enrol_then_sign_in_takes_the_code_once(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await sign_in_and_change_password(hotline, PASSWORD)
    secret = await enrol(hotline)
    row = await counselor_row(hotline)
    assert row.totp_secret is not None
    assert secret not in row.totp_secret and totp.to_base32(secret).encode() not in row.totp_secret
    assert "totp-enable" in await audit_actions(engine)

    await sign_out(hotline)
    response = await login(hotline, PASSWORD)
    assert (response.status, response.headers["Location"]) == (303, "/console/login/code")
    assert "hotline_console" not in response.cookies, "no session before the code"
    assert (await hotline.client.get("/api/cases")).status == 401
    listing = await hotline.client.get("/console", allow_redirects=False)
    assert listing.headers["Location"] == "/console/login"
    assert await submit_code(hotline, code(secret, 5)) == 401
    assert (await hotline.client.get("/api/cases")).status == 401

    good = code(secret, 1)
    assert await submit_code(hotline, good) == 303
    assert (await hotline.client.get("/api/cases")).status == 200
    assert (await hotline.client.get("/console/login/code")).status == 401, "pending is gone"

    await sign_out(hotline)
    await login(hotline, PASSWORD)
    assert await submit_code(hotline, good) == 401, "a used code is refused (replay)"
    assert (await hotline.client.get("/api/cases")).status == 401


async def test_wrong_codes_count_toward_the_lock(hotline: RunningHotline) -> None:
    await sign_in_and_change_password(hotline, PASSWORD)
    secret = await enrol(hotline, probe=False)
    for _ in range(5):  # HOTLINE_LOGIN_MAX_FAILURES: the right password never resets the count
        await sign_out(hotline)
        assert (await login(hotline, PASSWORD)).status == 303
        assert await submit_code(hotline, code(secret, 7)) == 401
    await sign_out(hotline)
    assert (await login(hotline, PASSWORD)).status == 429, "locked, right password or not"


async def test_a_code_page_without_a_pending_sign_in_refuses(hotline: RunningHotline) -> None:
    assert (await hotline.client.get("/console/login/code")).status == 401
    response = await hotline.client.post("/console/login/code", data={"code": "123456"})
    assert response.status == 401


async def test_password_change_reseals_the_secret_and_disable_turns_it_off(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await sign_in_and_change_password(hotline, PASSWORD)
    secret = await enrol(hotline)
    page = await (await hotline.client.get("/console/password")).text()
    new = "the next long passphrase"
    changed = await hotline.client.post(
        "/console/password",
        data={
            "csrf": csrf_of(page),
            "current_password": PASSWORD,
            "new_password": new,
            "repeat_password": new,
        },
        allow_redirects=False,
    )
    assert changed.status == 303
    row = await hotline.client.app[counselors_key].authenticate("admin", new)
    assert row.id is not None and row.totp_secret is not None
    assert totp.open_secret(row.totp_secret, row.id, new) == secret

    await sign_out(hotline)
    assert (await login(hotline, new)).headers["Location"] == "/console/login/code"
    assert await submit_code(hotline, code(secret, 1)) == 303
    page = await (await hotline.client.get("/console/two-factor")).text()
    assert "is on" in page
    wrong = await hotline.client.post(
        "/console/two-factor/disable", data={"csrf": csrf_of(page), "password": "nope nope"}
    )
    assert wrong.status == 401
    off = await hotline.client.post(
        "/console/two-factor/disable",
        data={"csrf": csrf_of(page), "password": new},
        allow_redirects=False,
    )
    assert off.status == 303
    assert "totp-disable" in await audit_actions(engine)
    await sign_out(hotline)
    assert (await login(hotline, new)).headers["Location"] == "/console"


@pytest.fixture
async def strict_hotline(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> AsyncIterator[RunningHotline]:
    async with start_hotline(pair, tmp_path, {"HOTLINE_CONSOLE_REQUIRE_TOTP": "true"}) as running:
        yield running


async def test_an_administrator_can_require_two_factor(strict_hotline: RunningHotline) -> None:
    hotline = strict_hotline
    await sign_in_and_change_password(hotline, PASSWORD)
    for path in ("/console", "/console/cases/anything"):
        response = await hotline.client.get(path, allow_redirects=False)
        assert response.headers["Location"] == "/console/two-factor", path
    assert (await hotline.client.get("/api/cases")).status == 401
    await sign_out(hotline)
    response = await login(hotline, PASSWORD)
    assert response.headers["Location"] == "/console/two-factor", "sent to enrolment"
    page = await (await hotline.client.get("/console/two-factor")).text()
    assert "requires two-factor" in page
    secret = await enrol(hotline)
    assert (await hotline.client.get("/api/cases")).status == 200
    page = await (await hotline.client.get("/console/two-factor")).text()
    assert "/console/two-factor/disable" not in page
    refused = await hotline.client.post(
        "/console/two-factor/disable", data={"csrf": csrf_of(page), "password": PASSWORD}
    )
    assert refused.status == 403
    row = await counselor_row(hotline)
    assert row.id is not None and row.totp_secret is not None
    assert totp.open_secret(row.totp_secret, row.id, PASSWORD) == secret
