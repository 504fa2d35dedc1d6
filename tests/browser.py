"""What every browser test shares: Debian's Chromium with the flags this machine needs, the
environment for a `hotline up` on a port of its own that a test can restart on the same port, and
the first administrator's way through the console's sign-in pages, kept in one place so that a
change to those pages (such as the current password the change form asks for) reaches every
browser test at once."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

from backend import totp
from tests.conftest import (
    ENGLISH_CONSOLE_ENV,
    FAST_KDF_ENV,
    FIRST_START_ENV,
    QUICK_STOP_ENV,
    ROOMY_LIMITS_ENV,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


def up_env(tmp_path: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    fixed = {"HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_HTTP_PORT": str(port)}
    return (
        clean
        | FAST_KDF_ENV
        | ENGLISH_CONSOLE_ENV
        | FIRST_START_ENV
        | ROOMY_LIMITS_ENV
        | QUICK_STOP_ENV
        | fixed
        | (extra or {})
    )


async def replace_one_time_password(page: Page, base: str, one_time: str, password: str) -> None:
    """Sign in as the first administrator and replace the one-time password; the page is left
    wherever the console sends an administrator next (enrolment when two-factor is required)."""
    await page.goto(base + "/console")
    await page.get_by_label("Username").fill("admin")
    await page.get_by_label("Password").fill(one_time)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url("**/console/password")
    await page.get_by_label("Current password").fill(one_time)
    await page.get_by_label("New password").fill(password)
    await page.get_by_label("Repeat it").fill(password)
    await page.get_by_role("button", name="Save").click()


def totp_code(secret: bytes, steps_ahead: int = 0) -> str:
    return totp.code_at_step(secret, totp.step_at(time.time()) + steps_ahead)


async def turn_on_two_factor(page: Page, base: str, password: str) -> bytes:
    """Enrol on the page the console sent the administrator to, with this step's code; returns
    the secret, so that a later sign-in can compute the next step's code."""
    await page.wait_for_url("**/console/two-factor")
    text = (await page.locator("#totp-secret").inner_text()).strip()
    secret = base64.b32decode(text + "=" * (-len(text) % 8))
    await page.get_by_label("Password").fill(password)
    await page.get_by_label("Code").fill(totp_code(secret))
    await page.get_by_role("button", name="Turn on").click()
    await page.wait_for_url(base + "/console")
    return secret
