"""The victims' web chat in Debian's Chromium, driven by Playwright, against `hotline up`."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, Request, Route, ViewportSize

from backend.core import receipt_codes as receipts
from tests.browser import chromium, up_env
from tests.conftest import first_start_secret
from tests.locales import texts_of
from tests.test_e2e import Counselor, Up

pytestmark = pytest.mark.browser

SAFE_PAGE_PREFIX = "https://www.google.com/"


KO = texts_of("ko")
EN = texts_of("en")
DETAILS = "A man filmed me in the gym changing room. BROWSER-CANARY-5e1d"
PHONE = ViewportSize(width=375, height=740)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return up_env(tmp_path)


async def _open_chat(browser: Browser, base: str) -> Page:
    page = await browser.new_page(locale="ko-KR")
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


async def _focused(page: Page) -> str:
    return str(
        await page.evaluate("document.activeElement.id || document.activeElement.textContent")
    )


async def test_a_whole_report_on_a_phone_with_the_receipt_copied(
    browser: Browser, env: dict[str, str], tmp_path: Path
) -> None:
    up = Up(env, tmp_path / "hotline.log")
    try:
        await up.wait_ready()
        context = await browser.new_context(
            viewport=PHONE, locale="ko-KR", permissions=["clipboard-read", "clipboard-write"]
        )
        requested: list[str] = []

        def record(request: Request) -> None:
            requested.append(request.url)

        context.on("request", record)
        page = await context.new_page()
        response = await page.goto(up.base + "/chat")
        assert response is not None
        assert "default-src 'none'" in response.headers["content-security-policy"]
        await page.get_by_role("button", name=KO["common.agree"]).wait_for()

        # A phone: nothing wider than the screen. A keyboard: focus waits on the first choice,
        # and Tab reaches every control, the text box included.
        width = await page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], width
        assert await _focused(page) == KO["common.agree"]
        reached = set()
        for _ in range(8):
            await page.keyboard.press("Tab")
            reached.add(await _focused(page))
        assert {"language", "quick-exit", KO["common.decline"], "message"} <= reached, reached
        assert "보내기 / Send" in reached, reached

        await page.get_by_label("언어 / Language").select_option("en")
        assert await page.evaluate("document.documentElement.lang") == "en"
        await page.get_by_role("button", name=KO["common.agree"]).click()
        await page.get_by_role("button", name=EN["category.filming"]).click()
        await page.get_by_role("button", name=EN["age_band.18_plus"]).click()
        await page.locator("#log li.bot", has_text=EN["report.details"]).wait_for()
        assert await _focused(page) == "message", "a question without choices: the text box"
        await page.keyboard.type(DETAILS)
        await page.keyboard.press("Enter")
        await page.get_by_role("button", name=EN["common.send_now"]).click()

        received = page.locator("#log li.bot", has_text=EN["report.received"].split("{")[0])
        await received.wait_for()
        code = await received.locator(".receipt-code").inner_text()
        assert receipts.normalise(code), code
        assert code in await received.inner_text()
        assert await _focused(page) == EN["feedback.helpful"], "the next question's first choice"
        await page.keyboard.press("Shift+Tab")
        assert await _focused(page) == "복사 / Copy", "the copy button is one key away"
        await page.keyboard.press("Enter")
        await received.get_by_role("status").filter(has_text="Copied").wait_for()
        assert await page.evaluate("navigator.clipboard.readText()") == code

        # Without the Clipboard API (plain http on a LAN address) the code is selected instead.
        await page.evaluate(
            "Object.defineProperty(navigator, 'clipboard', {value: undefined});"
            "navigator.clipboard === undefined || (() => { throw new Error('still there'); })()"
        )
        await received.get_by_role("button", name="복사 / Copy").click()
        assert await page.evaluate("getSelection().toString()") == code
        said = re.compile("Copied|Selected")  # whether the old copy command is still allowed
        await received.get_by_role("status").filter(has_text=said).wait_for()

        await page.get_by_role("button", name=EN["feedback.helpful"]).click()
        await page.locator("#log li.bot", has_text=EN["feedback.thanks"]).wait_for()
        assert requested, "requests were recorded"
        assert [url for url in requested if not url.startswith(up.base + "/")] == []

        # The centre has the case; what the victim wrote is read only by unsealing it.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as http:
            counselor = Counselor(http, up.base)
            new_password = "a browser test passphrase"  # noqa: S105 - test account only
            await counselor.sign_in(
                first_start_secret(up.output, "one-time password"), new_password
            )
            (case,) = await counselor.cases(1)
            assert case["category"] == "filming"
            assert DETAILS not in str(case)
            assert DETAILS in await counselor.open(case["id"])
        await context.close()
    finally:
        assert up.stop() == 0
    for path in (tmp_path / "data").rglob("*"):
        if path.is_file():
            assert DETAILS.encode() not in path.read_bytes(), path


WIDE_PHONE = ViewportSize(width=412, height=780)
EXIT_RED = (0xB3, 0x26, 0x1E)


async def test_the_exit_button_stays_on_screen_in_a_long_conversation(
    browser: Browser, env: dict[str, str], tmp_path: Path
) -> None:
    """Issue 18: on a phone the header scrolled away after about five messages, and with it
    the only visible way out."""
    up = Up(env, tmp_path / "hotline.log")
    try:
        await up.wait_ready()
        page = await browser.new_page(viewport=WIDE_PHONE, locale="ko-KR")
        await page.goto(up.base + "/chat")
        await page.get_by_role("button", name=KO["common.agree"]).wait_for()
        box = page.locator("#message")
        for n in range(12):  # each is answered: the log grows far past one screen
            await box.fill(f"message {n}: still here, and the page is long now")
            await box.press("Enter")
            await page.locator("#log li.bot").nth(n + 2).wait_for()
        assert await page.evaluate("document.documentElement.scrollHeight") > 3 * 780
        assert await page.evaluate("window.scrollY") > 0, "scrolled down to the newest message"
        exit_button = page.get_by_role("button", name="나가기 / Exit")
        where = await exit_button.bounding_box()
        assert where is not None
        assert where["y"] >= 0 and where["y"] + where["height"] <= 780, where
        assert where["x"] + where["width"] <= 412, "no sideways scroll needed to reach it"
        centre = (where["x"] + where["width"] / 2, where["y"] + where["height"] / 2)
        on_top = await page.evaluate(
            "([x, y]) => document.elementFromPoint(x, y)?.id", list(centre)
        )
        assert on_top == "quick-exit", "nothing covers it"
        shot = tmp_path / "long-conversation-412px.png"
        await page.screenshot(path=str(shot))
        with Image.open(shot) as image:
            pixel = image.convert("RGB").getpixel((int(where["x"]) + 5, int(centre[1])))
        assert pixel == EXIT_RED, f"the screenshot shows the red Exit button there: {pixel}"

        async def harmless(route: Route) -> None:
            await route.fulfill(body="<title>날씨</title>weather", content_type="text/html")

        await page.route(SAFE_PAGE_PREFIX + "**", harmless)
        await page.keyboard.press("Escape")
        await page.wait_for_url(SAFE_PAGE_PREFIX + "**")
    finally:
        assert up.stop() == 0
