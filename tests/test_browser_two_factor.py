"""Sign-in with two-factor in Debian's Chromium, driven by Playwright, against `hotline up`.

With two-factor required, the first administrator changes the one-time password, is sent to
enrolment, turns it on with a code computed here, signs out, and signs in again with the
password and a fresh code, reaching the case list.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser

from backend import totp
from tests.browser import chromium, up_env
from tests.conftest import first_start_secret
from tests.test_e2e import Up

pytestmark = pytest.mark.browser

PASSWORD = "a browser test passphrase"  # noqa: S105 - test account only


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def _env(tmp_path: Path) -> dict[str, str]:
    return up_env(tmp_path, {"HOTLINE_CONSOLE_REQUIRE_TOTP": "true"})


def _code(secret: bytes, steps_ahead: int = 0) -> str:
    return totp.code_at_step(secret, totp.step_at(time.time()) + steps_ahead)


async def test_sign_in_with_two_factor(browser: Browser, tmp_path: Path) -> None:
    up = Up(_env(tmp_path), tmp_path / "hotline.log")
    try:
        await up.wait_ready()
        first_password = first_start_secret(up.output, "one-time password")
        page = await browser.new_page()
        await page.goto(up.base + "/console")
        await page.get_by_label("Username").fill("admin")
        await page.get_by_label("Password").fill(first_password)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url("**/console/password")
        await page.get_by_label("Current password").fill(first_password)
        await page.get_by_label("New password").fill(PASSWORD)
        await page.get_by_label("Repeat it").fill(PASSWORD)
        await page.get_by_role("button", name="Save").click()

        await page.wait_for_url("**/console/two-factor")
        text = (await page.locator("#totp-secret").inner_text()).strip()
        secret = base64.b32decode(text + "=" * (-len(text) % 8))
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_label("Code").fill(_code(secret))
        await page.get_by_role("button", name="Turn on").click()
        await page.wait_for_url(up.base + "/console")
        await page.get_by_role("button", name="Sign out").click()
        await page.wait_for_url("**/console/login")

        await page.get_by_label("Username").fill("admin")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url("**/console/login/code")
        # The enrolment used this step's code; the next step's is good and not yet used.
        await page.get_by_label("Code").fill(_code(secret, 1))
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_url(up.base + "/console")
        assert await page.get_by_role("button", name="Sign out").is_visible()
        cookies = {c["name"]: c for c in await page.context.cookies()}
        assert "hotline_console_pending" not in cookies
        assert cookies["hotline_console"]["httpOnly"]
    finally:
        assert up.stop() == 0
