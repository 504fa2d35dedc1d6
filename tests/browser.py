"""What every browser test shares: Debian's Chromium with the flags this machine needs, and the
environment for a `hotline up` on a port of its own that a test can restart on the same port."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, async_playwright

from tests.conftest import ENGLISH_CONSOLE_ENV, FAST_KDF_ENV, FIRST_START_ENV

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
    return clean | FAST_KDF_ENV | ENGLISH_CONSOLE_ENV | FIRST_START_ENV | fixed | (extra or {})
