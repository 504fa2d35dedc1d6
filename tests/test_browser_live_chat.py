"""The live chat in Debian's Chromium, driven by Playwright, both sides real: a victim in the web
chat page (one tab) and a counselor in the console (another), the composed app's own relay
between them.

The victim walks to a counselor as a victim does (/help, "Talk to a counselor"); the counselor
goes on shift, claims the case and starts the chat from the case page. Each side's words appear
on the other's page without a reload: the console's over its WebSocket, the victim's through
chat_live.js's long poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import cast

import pytest
from playwright.async_api import Browser, Page, Route, expect

from backend.console import live
from backend.core import redis_keys as streams
from backend.core.shifts import ShiftBoard
from backend.web import redis_key
from tests.browser import chromium
from tests.conftest import RunningHotline
from tests.live_chat_support import PASSWORD, add_counselor
from tests.locales import texts_of

# The pages are the same on every storage pair; the pairs' own behaviour is covered by the API
# tests (tests/test_live_chat_through_the_bot.py), so the browser runs once.
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("pair", ["embedded"], indirect=True)]

EN = texts_of("en")
KO = texts_of("ko")
PAYLOADS = [
    "<script>window.__pwned = 1</script>",
    '<img src="x" onerror="window.__pwned = 1">',
    "</li><b>bold?</b>",
]
SAFE_PAGE_PREFIX = "https://www.google.com/"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


def _watch(page: Page, problems: list[str]) -> None:
    # A CSP refusal or a script error shows here; the browser's own favicon request does not.
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type == "error" and "favicon" not in (m.location.get("url") or "")
            else None
        ),
    )


async def _sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/console/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/console")


async def _victim_says(victim: Page, text: str) -> None:
    await victim.get_by_label("메시지 / Message").fill(text)
    await victim.keyboard.press("Enter")


async def _queued_case(hotline: RunningHotline) -> str:
    redis = hotline.client.app[redis_key]
    for _ in range(250):
        queued = cast(list[bytes], await redis.zrange(streams.HANDOFF_QUEUE, 0, -1))
        if queued:
            (case_id,) = queued
            return case_id.decode()
        await asyncio.sleep(0.02)
    raise AssertionError("no handoff reached the queue")


async def test_a_live_chat_both_ways_between_a_web_chat_page_and_the_console(
    browser: Browser, hotline: RunningHotline
) -> None:
    app = hotline.client.app
    base = str(hotline.client.make_url("/")).rstrip("/")
    alice = await add_counselor(hotline, "alice")
    await ShiftBoard(app[redis_key]).start(alice)
    problems: list[str] = []

    # Tab 1: the victim, in English, asks for a counselor the way the menu offers it.
    victim = await (await browser.new_context(locale="ko-KR")).new_page()
    _watch(victim, problems)
    await victim.goto(base + "/chat")
    await victim.get_by_role("button", name=KO["common.agree"]).wait_for()
    await victim.get_by_label("언어 / Language").select_option("en")
    await _victim_says(victim, "/help")
    await victim.get_by_role("button", name=EN["help.counselor"]).click()
    told = victim.locator("#log li.bot")
    await expect(told.filter(has_text=EN["live.how_web"])).to_have_count(1)
    case_id = await _queued_case(hotline)

    # Tab 2: the counselor claims the case and starts the chat.
    console = await (await browser.new_context()).new_page()
    _watch(console, problems)
    await _sign_in(console, base)
    await console.goto(f"{base}/console/cases/{case_id}")
    await console.get_by_role("button", name="Claim").click()
    panel = console.locator("#live-chat")
    state = panel.locator(".chat-state")
    await panel.get_by_role("button", name="Start chat").click()
    await expect(state).to_have_text("The chat is on.")
    await expect(told.filter(has_text=EN["live.joined"])).to_have_count(1)

    # The victim's words, markup included, reach the console as text and run nothing there.
    for text in PAYLOADS:
        await _victim_says(victim, text)
    victim_lines = panel.locator(".chat-lines li.victim .text")
    await expect(victim_lines).to_have_text(PAYLOADS)
    assert await console.evaluate("window.__pwned") is None, "no payload ran"
    assert await panel.locator(".chat-lines img, .chat-lines script, .chat-lines b").count() == 0

    # A canned response in the victim's language, sent: it appears in her page by itself and
    # is marked delivered in the console once her page has it.
    await expect(panel.locator("select.chat-canned optgroup").first).to_have_attribute(
        "label", "en"
    )
    await panel.get_by_label("Canned response").select_option(label="Safety check")
    canned = await panel.get_by_label("Message").input_value()
    await panel.get_by_role("button", name="Send").click()
    mine = panel.locator(".chat-lines li.counselor")
    await expect(mine.locator(".text")).to_have_text([canned])
    await expect(told.filter(has_text=f"{EN['live.counselor']}: {canned}")).to_have_count(1)
    await expect(mine.locator(".delivery")).to_have_text(["delivered"])
    assert await victim.evaluate("window.__pwned") is None

    # The console's connection drops; it reconnects and shows what came meanwhile, once.
    await live.close_sockets(app)
    await _victim_says(victim, "said while away")
    await expect(victim_lines).to_have_text([*PAYLOADS, "said while away"])
    await expect(state).to_have_text("The chat is on.")

    # The victim's quick exit: her tab leaves, and the console says she left.
    await victim.route(SAFE_PAGE_PREFIX + "**", _harmless)
    await victim.get_by_role("button", name="나가기 / Exit").click()
    await victim.wait_for_url(SAFE_PAGE_PREFIX + "**")
    await expect(state).to_contain_text("The victim left the chat.")
    await expect(panel.get_by_label("Message")).to_be_disabled()
    await expect(panel.get_by_role("button", name="Send")).to_be_disabled()
    await expect(panel.get_by_role("button", name="Start chat")).to_be_hidden()
    assert problems == [], problems


async def _harmless(route: Route) -> None:
    await route.fulfill(body="<title>weather</title>weather", content_type="text/html")
