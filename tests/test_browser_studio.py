"""The flows studio in Debian's Chromium, driven by Playwright, against `hotline up` (issue 15).

An administrator (two-factor) changes a Korean text, sees the lint error at its line, fixes it,
tries it in the sandbox panel and publishes; a victim in the web chat meets the new text in a
new conversation while one begun before keeps the old; the administrator rolls back.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import chromium, replace_one_time_password, turn_on_two_factor, up_env
from tests.conftest import first_start_secret
from tests.locales import texts_of
from tests.test_e2e import Up

pytestmark = pytest.mark.browser

KO = texts_of("ko")
PASSWORD = "a studio browser passphrase"  # noqa: S105 - test account only
OLD_AGE = KO["report.age"]
NEW_AGE = "나이대를 알려 주세요. 꼭 맞는 도움을 찾으려고 여쭤봐요."
BROKEN_AGE = "나이대를 알려 주세요: 꼭 맞는 도움을 찾으려고 여쭤봐요."


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def _administrator(page: Page, up: Up) -> None:
    """The first administrator: new password, two-factor turned on (the studio needs it)."""
    one_time = first_start_secret(up.output, "one-time password")
    await replace_one_time_password(page, up.base, one_time, PASSWORD)
    await turn_on_two_factor(page, up.base, PASSWORD)


async def _victim_at_category(browser: Browser, base: str) -> Page:
    page = await (await browser.new_context(locale="ko-KR")).new_page()
    await page.goto(base + "/chat")
    await page.get_by_role("button", name=KO["common.agree"]).click()
    await page.get_by_role("button", name=KO["category.filming"]).wait_for()
    return page


async def _edit(page: Page, old: str, new: str) -> None:
    area = page.locator("#studio-text")
    await area.fill((await area.input_value()).replace(old, new))
    await page.get_by_role("button", name="Save to draft").click()
    await page.wait_for_url("**/console/studio?file=locales/ko.yaml")


async def test_edit_check_fix_try_publish_and_roll_back(browser: Browser, tmp_path: Path) -> None:
    up = Up(up_env(tmp_path, {"HOTLINE_CONSOLE_REQUIRE_TOTP": "true"}), tmp_path / "up.log")
    try:
        await up.wait_ready()
        early = await _victim_at_category(browser, up.base)
        admin = await browser.new_page()
        await _administrator(admin, up)
        await admin.goto(up.base + "/console/studio?file=locales/ko.yaml")
        source = await admin.locator("#studio-text").input_value()
        line = source.splitlines().index(f"  age: {OLD_AGE}") + 1

        await _edit(admin, OLD_AGE, BROKEN_AGE)
        await admin.get_by_role("button", name="Check").click()
        finding = admin.locator("#studio-findings tr.error", has_text="locales/ko.yaml")
        await expect(finding.locator("td").nth(0)).to_have_text("F000")
        await expect(finding.locator("td").nth(2)).to_have_text(str(line))
        await finding.get_by_role("link", name=str(line)).click()
        await admin.wait_for_url(re.compile(rf"line={line}$"))
        selected = await admin.locator("#studio-text").evaluate(
            "a => a.value.slice(a.selectionStart, a.selectionEnd)"
        )
        assert selected == f"  age: {BROKEN_AGE}", "the editor shows the finding's line"

        await _edit(admin, BROKEN_AGE, NEW_AGE)
        await admin.get_by_role("button", name="Check").click()
        await expect(admin.locator("#studio-findings-title")).to_contain_text("ready to publish")

        panel = admin.locator("#try")
        await expect(panel).to_contain_text("TEST: nothing reaches the queue or a counselor")
        await panel.get_by_role("button", name="Start again").click()
        await panel.get_by_role("button", name=KO["common.agree"]).click()
        await panel.get_by_role("button", name=KO["category.filming"]).click()
        await expect(panel.locator("#try-lines li.try-bot").last).to_contain_text(NEW_AGE)

        await admin.locator(".studio-publish").get_by_label("Message").fill("kinder age question")
        await admin.get_by_role("button", name="Publish", exact=True).click()
        await expect(admin.locator("#studio-notice")).to_have_text("Published version 2.")

        late = await _victim_at_category(browser, up.base)
        await late.get_by_role("button", name=KO["category.filming"]).click()
        await expect(late.locator("#log li.bot").last).to_have_text(NEW_AGE)
        await early.get_by_role("button", name=KO["category.filming"]).click()
        await expect(early.locator("#log li.bot").last).to_have_text(OLD_AGE)

        await admin.get_by_role("button", name="Roll back to 1").click()
        await expect(admin.locator("#studio-notice")).to_have_text("Version 1 is published again.")
        after = await _victim_at_category(browser, up.base)
        await after.get_by_role("button", name=KO["category.filming"]).click()
        await expect(after.locator("#log li.bot").last).to_have_text(OLD_AGE)

        # The diagram: Mermaid from our own origin draws under the console's CSP.
        blocked: list[str] = []
        admin.on(
            "console", lambda m: blocked.append(m.text) if "Content Security" in m.text else None
        )
        await admin.goto(up.base + "/console/studio")
        await admin.get_by_role("button", name="Diagram").click()
        await expect(admin.locator("#studio-diagram svg")).to_be_visible()
        # Mermaid's own inline styles are refused (style-src 'self'); its script never is.
        assert not [b for b in blocked if "'script-src" in b], blocked
    finally:
        assert up.stop() == 0
