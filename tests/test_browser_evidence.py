"""Evidence previews in Debian's Chromium (issue 16, counselor wellbeing): a screenshot a victim
kept as evidence through Telegram shows on the case page blurred behind a content warning, until
the counselor chooses to see it, by click or by keyboard; under the console's CSP (the script is
ours, nothing inline), with the view's audit link, and with axe-core finding nothing serious.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Locator
from redis.asyncio import Redis
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.console.app_keys import cases_key
from backend.embedded_redis import EmbeddedRedis
from backend.models import AuditEntry, Role
from backend.web import engine_key
from tests.browser import chromium
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import TOKEN, Victim
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture
from tests.test_browser_accessibility import AXE_PATH, _serve_axe, serious_violations
from tests.test_browser_console_korean import _account
from tests.test_console_queue import PASSWORD
from tests.test_evidence_records import _report_with
from tests.test_telegram_evidence import _small_picture

pytestmark = pytest.mark.browser


@pytest.fixture
async def korean(
    tmp_path: Path, embedded_redis: EmbeddedRedis, telegram: FakeTelegram
) -> AsyncIterator[RunningHotline]:
    pair = Pair("embedded", f"sqlite:///{tmp_path / 'evidence.sqlite3'}", embedded_redis.url)
    redis = Redis.from_url(pair.redis_url)
    await redis.flushdb()
    await redis.aclose()
    env = {
        "HOTLINE_CONSOLE_LANGUAGE": "",
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url,
    }
    async with start_hotline(pair, tmp_path, env) as hotline:
        yield hotline


async def _filter(image: Locator) -> str:
    value: str = await image.evaluate("(e) => getComputedStyle(e).filter")
    return value


async def _evidence_views(hotline: RunningHotline, case_id: str) -> int:
    query = select(AuditEntry).where(
        col(AuditEntry.subject) == case_id, col(AuditEntry.detail) == "evidence:0"
    )
    async with AsyncSession(hotline.client.app[engine_key]) as session:
        return len((await session.exec(query)).all())


async def test_a_screenshot_is_blurred_until_the_counselor_chooses_to_see_it(
    korean: RunningHotline, telegram: FakeTelegram
) -> None:
    await _report_with(Victim(telegram, "en"), "screenshots", _small_picture(7))
    cases = korean.client.app[cases_key]
    for _ in range(250):
        if waiting := await cases.list_waiting():
            break
        await asyncio.sleep(0.02)
    (case,) = waiting
    await _account(korean, "counselor-lee", Role.COUNSELOR)
    base = str(korean.client.make_url("")).rstrip("/")
    async with chromium() as browser:
        context = await browser.new_context(locale="ko-KR")
        await context.route(base + AXE_PATH, _serve_axe)
        page = await context.new_page()
        refused: list[str] = []
        page.on("console", lambda m: refused.append(m.text) if m.type == "error" else None)
        await page.goto(base + "/console/login")
        await page.get_by_label("사용자 이름").fill("counselor-lee")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="로그인").click()
        await page.wait_for_url(base + "/console")
        await page.goto(f"{base}/console/cases/{case.id}")
        await page.get_by_role("button", name="맡기").click()
        await page.get_by_text("내가 맡은 사건입니다").wait_for()

        preview = page.locator("#evidence figure.evidence-preview")
        image = preview.locator("img")
        await image.evaluate("(e) => e.decode()")
        assert await image.evaluate("(e) => e.naturalWidth") == 32, "the screenshot loaded"
        assert await preview.get_by_text("콘텐츠 경고").is_visible()
        assert (await _filter(image)).startswith("blur("), "blurred at first"
        # Loading the blurred preview is the view: audited as an unseal of that file.
        assert await _evidence_views(korean, case.id) == 1
        assert await serious_violations(page) == []

        show = preview.get_by_role("button", name="스크린샷 흐림 풀기")
        await show.click()
        assert await _filter(image) == "none", "revealed after the click"
        hide = preview.get_by_role("button", name="다시 흐리게")
        assert await hide.get_attribute("aria-pressed") == "true"
        # By keyboard: Enter blurs it again, Space reveals it.
        await hide.focus()
        await page.keyboard.press("Enter")
        assert (await _filter(image)).startswith("blur(")
        await preview.get_by_role("button", name="스크린샷 흐림 풀기").focus()
        await page.keyboard.press("Space")
        assert await _filter(image) == "none"
        assert await serious_violations(page) == []
        assert not [m for m in refused if "Content Security Policy" in m], refused
        await context.close()
