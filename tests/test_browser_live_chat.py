"""The live chat panel in Debian's Chromium, driven by Playwright, against the composed app.

The victim's side speaks the protocol the bot relay speaks: lines through `LiveChat.from_victim`,
the counselor's lines taken from the outbox and opened with the conversation's reply key, and
delivery events written back. (The same chat through a real bot door is added once the relay
is merged.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, Page, expect

from backend.console import live
from backend.handoff import Event, EventKind, LiveChat, OutboxItem, OutboxKind, Sender, new_line
from backend.web import redis_key
from tests.browser import chromium
from tests.conftest import RunningHotline
from tests.live_chat_support import PASSWORD, add_counselor, centre_keys, handed_off_case

# The panel is the same on every storage pair; the pairs' own behaviour is covered by the API
# tests, so the browser runs once.
pytestmark = [pytest.mark.browser, pytest.mark.parametrize("pair", ["embedded"], indirect=True)]

PAYLOADS = [
    "<script>window.__pwned = 1</script>",
    '<img src="x" onerror="window.__pwned = 1">',
    "</li><b>bold?</b>",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _outbox(bot: LiveChat) -> OutboxItem:
    (item,) = await bot.next_for_victims("bot-browser", block_ms=5000)
    await bot.ack(item)
    return item


async def _sign_in(page: Page, base: str) -> None:
    await page.goto(base + "/console/login")
    await page.get_by_label("Username").fill("alice")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.wait_for_url(base + "/console")


async def test_a_live_chat_both_ways_with_inert_victim_text(
    browser: Browser, hotline: RunningHotline
) -> None:
    app = hotline.client.app
    base = str(hotline.client.make_url("/")).rstrip("/")
    handoff = await handed_off_case(hotline, await add_counselor(hotline, "alice"))
    centre = next(iter((await centre_keys(hotline)).values())).public_key()
    bot = LiveChat(app[redis_key])
    await bot.ensure_relay_group()

    page = await browser.new_page()
    problems: list[str] = []
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
    await _sign_in(page, base)
    await page.goto(f"{base}/console/cases/{handoff.case_id}")
    panel = page.locator("#live-chat")
    state = panel.locator(".chat-state")
    await expect(state).to_have_text("The chat has not started.")
    await expect(panel.get_by_label("Message")).to_be_disabled()

    await panel.get_by_role("button", name="Start chat").click()
    await expect(state).to_have_text("The chat is on.")
    assert (await _outbox(bot)).kind is OutboxKind.JOINED

    for text in PAYLOADS:
        await bot.from_victim(handoff.case_id, new_line(Sender.VICTIM, text), centre)
    victim_lines = panel.locator(".chat-lines li.victim .text")
    await expect(victim_lines).to_have_text(PAYLOADS)
    assert await page.evaluate("window.__pwned") is None, "no payload ran"
    assert await panel.locator(".chat-lines img, .chat-lines script, .chat-lines b").count() == 0

    # A canned response in the victim's language (Korean) first, then sent.
    options = panel.locator("select.chat-canned optgroup")
    await expect(options.first).to_have_attribute("label", "ko")
    await panel.get_by_label("Canned response").select_option(label="안전 확인")
    canned = await panel.get_by_label("Message").input_value()
    assert "112" in canned
    await panel.get_by_role("button", name="Send").click()
    mine = panel.locator(".chat-lines li.counselor")
    await expect(mine.locator(".text")).to_have_text([canned])
    await expect(mine.locator(".delivery")).to_have_text(["sent"])
    await expect(panel.get_by_label("Message")).to_have_value("")
    line = bot.line_for_victim(await _outbox(bot), handoff.reply)
    assert line.text == canned
    await bot.event(
        handoff.case_id, Event(EventKind.DELIVERED, Sender.VICTIM, time.time(), line.id)
    )
    await expect(mine.locator(".delivery")).to_have_text(["delivered"])

    await panel.get_by_label("Message").fill("Kakao waits for the victim's next message")
    await panel.get_by_role("button", name="Send").click()
    held = bot.line_for_victim(await _outbox(bot), handoff.reply)
    await bot.event(handoff.case_id, Event(EventKind.HELD, Sender.VICTIM, time.time(), held.id))
    await expect(mine.locator(".delivery")).to_have_text(
        ["delivered", "waiting for the victim's app"]
    )

    # The connection drops; the page reconnects and shows what came meanwhile, once.
    await live.close_sockets(app)
    await bot.from_victim(handoff.case_id, new_line(Sender.VICTIM, "said while away"), centre)
    await expect(victim_lines).to_have_text([*PAYLOADS, "said while away"])
    await expect(state).to_have_text("The chat is on.")
    await expect(mine).to_have_count(2)

    # The victim leaves (quick exit): the panel says so and takes no more input.
    await bot.event(handoff.case_id, Event(EventKind.ENDED, Sender.VICTIM, time.time()))
    await expect(state).to_contain_text("The victim left the chat.")
    await expect(panel.get_by_label("Message")).to_be_disabled()
    await expect(panel.get_by_role("button", name="Send")).to_be_disabled()
    await expect(panel.get_by_role("button", name="Start chat")).to_be_hidden()
    assert problems == [], problems
