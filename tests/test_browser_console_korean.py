"""The Korean console in Debian's Chromium: signing in, the live queue (its script speaking
Korean too), the statistics page with its "<5" rule, the archive search, the language switch,
and no page scrolling sideways on a 412 px phone.

`HOTLINE_SCREENSHOTS=docs/screenshots` also saves the queue and the dashboard there, for the
README (`docs/screenshots/`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from playwright.async_api import Page, ViewportSize
from redis.asyncio import Redis

from backend.case_statistics import centre_today
from backend.console.app_keys import cases_key, counselors_key, keyring_key
from backend.embedded_redis import EmbeddedRedis
from backend.models import Role
from tests.browser import chromium
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import chat, report
from tests.test_console_queue import PASSWORD, add_case

pytestmark = pytest.mark.browser

DESKTOP: ViewportSize = {"width": 1280, "height": 860}
PHONE_WIDTH = 412


@pytest.fixture
async def korean(tmp_path: Path, embedded_redis: EmbeddedRedis) -> AsyncIterator[RunningHotline]:
    pair = Pair("embedded", f"sqlite:///{tmp_path / 'console.sqlite3'}", embedded_redis.url)
    redis = Redis.from_url(pair.redis_url)
    await redis.flushdb()
    await redis.aclose()
    # The centre's language as shipped: Korean.
    async with start_hotline(pair, tmp_path, {"HOTLINE_CONSOLE_LANGUAGE": ""}) as hotline:
        yield hotline


async def _account(hotline: RunningHotline, name: str, role: Role) -> None:
    app = hotline.client.app
    added = await app[counselors_key].add(name, PASSWORD, role, must_change_password=False)
    assert added.id is not None
    keyring = app[keyring_key]
    await keyring.grant(
        added.id, PASSWORD, await keyring.unwrap_with_recovery(hotline.recovery_key)
    )


async def _no_sideways_scroll(page: Page, url: str) -> None:
    await page.goto(url)
    wide = await page.evaluate("document.documentElement.scrollWidth")
    culprits = await page.evaluate(
        """(limit) => [...document.querySelectorAll("body *")]
        .filter((e) => e.getBoundingClientRect().right > limit)
        .slice(0, 5).map((e) => e.tagName + "." + e.className)""",
        PHONE_WIDTH,
    )
    assert wide <= PHONE_WIDTH, f"{url} is {wide} px wide on a {PHONE_WIDTH} px phone: {culprits}"


async def test_the_korean_console(korean: RunningHotline, tmp_path: Path) -> None:
    for n in range(6):
        await report(korean, f"deepfake report {n}", category="deepfake")
    for n in range(2):
        await report(korean, f"filming report {n}", category="filming")
    cases = korean.client.app[cases_key]
    for _ in range(250):
        if len(await cases.list_waiting()) == 8:
            break
        await asyncio.sleep(0.02)
    await _account(korean, "supervisor-kim", Role.SUPERVISOR)
    base = str(korean.client.make_url("")).rstrip("/")
    shots = Path(os.environ.get("HOTLINE_SCREENSHOTS") or tmp_path)
    today = centre_today().isoformat()

    async with chromium() as browser:
        context = await browser.new_context(viewport=DESKTOP, locale="ko-KR")
        page = await context.new_page()
        await page.goto(base + "/console/login")
        assert await page.get_attribute("html", "lang") == "ko"
        await page.get_by_label("사용자 이름").fill("supervisor-kim")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="로그인").click()
        await page.wait_for_url(base + "/console")
        await page.get_by_role("heading", name="대기 중인 사건").wait_for()
        # The queue's script ticks the SLA timers in Korean, from the page's catalog.
        await page.locator("#queue .sla", has_text="남음").first.wait_for()
        assert await page.locator("#queue tbody tr").count() == 8
        await page.screenshot(path=shots / "queue-ko.png")

        await page.get_by_role("link", name="통계").click()
        await page.get_by_label("나누는 기준").select_option("category")
        await page.get_by_role("button", name="보기").click()
        await page.get_by_role("heading", name="일별 사건 수").wait_for()
        row = page.locator("#per-day-table tr", has_text=today)
        # 8 in all: the total says only what the row tells, or it would give the "<5" away.
        assert await row.locator("td").all_inner_texts() == [today, "6", "<5", "≥7"]
        assert await page.locator("#day-chart rect").count() == 30
        # The split of the range: filming's 2 cases are a hollow bar labelled "<5".
        small = page.locator("#split-chart g.bar.small")
        assert await small.count() == 1
        assert await small.locator("title").text_content() == "filming: <5"
        assert await page.locator("#split-chart g.bar:not(.small) title").text_content() == (
            "deepfake: 6"
        )
        await page.screenshot(path=shots / "dashboard-ko.png", full_page=True)
        # Split by age group, named in Korean: every report here said 18 or over.
        await page.get_by_label("나누는 기준").select_option("age_group")
        await page.get_by_role("button", name="보기").click()
        await page.locator("#per-day-table th", has_text="성인").wait_for()
        row = page.locator("#per-day-table tr", has_text=today)
        assert await row.locator("td").all_inner_texts() == [today, "8", "8"]

        await page.goto(base + "/console/archive")
        await page.get_by_label("유형").select_option("filming")
        await page.get_by_role("button", name="검색").click()
        await page.get_by_text("사건 2건을 찾았습니다.").wait_for()
        assert await page.locator("#archive tbody tr").count() == 2

        await page.get_by_role("button", name="English").click()
        await page.get_by_role("heading", name="Archive").wait_for()
        assert await page.get_attribute("html", "lang") == "en"
        assert "category=filming" in page.url, "back on the same page"
        await page.goto(base + "/console")
        await page.get_by_role("heading", name="Waiting cases").wait_for()
        await page.get_by_role("button", name="한국어").click()
        await page.get_by_role("heading", name="대기 중인 사건").wait_for()

        case_id = (await cases.list_waiting())[0].id
        await page.set_viewport_size({"width": PHONE_WIDTH, "height": 900})
        for path in (
            "/console",
            f"/console/cases/{case_id}",
            "/console/statistics",
            "/console/archive",
            "/console/takedowns",
            "/console/supervision",
            "/chat",
        ):
            await _no_sideways_scroll(page, base + path)
        await context.close()


# Records what the alerts hand to the browser: the notifications shown and the tones started.
SPY = """
window.__notes = [];
window.__tones = 0;
const Original = window.Notification;
window.Notification = new Proxy(Original, {
  construct(target, args) {
    window.__notes.push(args[1] && args[1].body);
    return new target(...args);
  },
  get(target, name) {
    const v = target[name];
    return typeof v === "function" ? v.bind(target) : v;
  },
});
const oscillator = AudioContext.prototype.createOscillator;
AudioContext.prototype.createOscillator = function () {
  window.__tones += 1;
  return oscillator.call(this);
};
"""


async def test_urgent_cases_raise_a_banner_a_notification_and_a_tone(
    korean: RunningHotline,
) -> None:
    await _account(korean, "counselor-lee", Role.COUNSELOR)
    base = str(korean.client.make_url("")).rstrip("/")
    async with chromium() as browser:
        context = await browser.new_context(locale="ko-KR", permissions=["notifications"])
        await context.add_init_script(SPY)
        page = await context.new_page()
        await page.goto(base + "/console/login")
        await page.get_by_label("사용자 이름").fill("counselor-lee")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="로그인").click()
        await page.wait_for_url(base + "/console")
        banner = page.locator("#alerts")
        assert await banner.is_hidden(), "nothing urgent yet"
        await page.get_by_role("button", name="긴급 사건 알림과 소리 허용").click()
        await page.get_by_role("button", name="알림과 소리가 켜졌습니다").wait_for()

        # A victim writes words of self-harm in the web chat: triage makes it priority 3.
        await chat(korean, text="/start", language="en")
        await chat(korean, button="agree")
        await chat(korean, text="I want to die")
        await banner.get_by_text("새 긴급 사건(긴급도 3)").wait_for(timeout=20000)
        late = await add_case(korean, 1, timedelta(minutes=12))
        await banner.get_by_text(f"사건 {late[:8]}이(가) 곧 SLA를 넘깁니다").wait_for(timeout=20000)
        notes = await page.evaluate("window.__notes")
        assert any("긴급 사건" in n for n in notes) and any("SLA" in n for n in notes)
        assert await page.evaluate("window.__tones") >= 2
        await page.get_by_role("button", name="닫기").click()
        assert await banner.is_hidden()
        # Shown once per tab: another page does not ring again for the same cases.
        await page.goto(base + "/console/archive")
        await page.wait_for_timeout(500)
        assert await page.evaluate("window.__notes.length") == 0
        assert await banner.is_hidden()
        await context.close()
