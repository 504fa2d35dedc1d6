"""The victims' web chat in Debian's Chromium, driven by Playwright, against `hotline up`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, Route

from tests.browser import chromium, up_env
from tests.locales import texts_of
from tests.test_e2e import Up

pytestmark = pytest.mark.browser

SAFE_PAGE_PREFIX = "https://www.google.com/"


KO = texts_of("ko")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return up_env(tmp_path)


async def _open_chat(browser: Browser, base: str) -> Page:
    page = await browser.new_page()
    await page.goto(base + "/chat")
    await page.get_by_role("button", name=KO["common.agree"]).wait_for()
    return page


async def test_quick_exit_leaves_no_trace(
    browser: Browser, env: dict[str, str], tmp_path: Path
) -> None:
    up = Up(env, tmp_path / "hotline.log")
    try:
        await up.wait_ready()
        page = await _open_chat(browser, up.base)
        stored = await page.evaluate("Object.keys(sessionStorage)")
        assert stored == ["t"], "nothing but the conversation token is kept in the tab"
        history_before = await page.evaluate("history.length")

        async def harmless(route: Route) -> None:
            await route.fulfill(body="<title>날씨</title>weather", content_type="text/html")

        await page.route(SAFE_PAGE_PREFIX + "**", harmless)
        await page.keyboard.press("Escape")
        await page.wait_for_url(SAFE_PAGE_PREFIX + "**")
        assert await page.evaluate("history.length") == history_before, "the chat was replaced"
        await page.go_back()  # to whatever the tab showed before the chat, never the chat
        assert "/chat" not in page.url
        context = page.context
        assert await context.cookies() == []
        assert (await context.storage_state())["origins"] == []
    finally:
        assert up.stop() == 0


async def test_quick_exit_button_works_too(
    browser: Browser, env: dict[str, str], tmp_path: Path
) -> None:
    up = Up(env, tmp_path / "hotline.log")
    try:
        await up.wait_ready()
        page = await _open_chat(browser, up.base)
        await page.route(SAFE_PAGE_PREFIX + "**", lambda route: route.fulfill(body="weather"))
        await page.get_by_role("button", name="나가기 / Exit").click()
        await page.wait_for_url(SAFE_PAGE_PREFIX + "**")
    finally:
        assert up.stop() == 0


async def test_a_message_sent_while_the_server_restarts_is_delivered_once(
    browser: Browser, env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "hotline.log"
    up = Up(env, log)
    await up.wait_ready()
    page = await _open_chat(browser, up.base)
    await page.get_by_role("button", name=KO["common.agree"]).click()
    category = page.get_by_role("button", name=KO["category.deepfake"])
    await category.wait_for()
    assert up.stop() == 0

    await category.click()  # the server is down: the turn waits and is retried
    await page.get_by_role("status").filter(has_text="Reconnecting").wait_for()
    again = Up(env, log)
    try:
        await again.wait_ready()
        details = page.locator("#log li.bot", has_text=KO["report.age"])
        await details.wait_for(timeout=20_000)
        assert await details.count() == 1
        assert await page.get_by_role("status").is_hidden()
    finally:
        assert again.stop() == 0
