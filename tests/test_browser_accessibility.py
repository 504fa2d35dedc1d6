"""Accessibility in Debian's Chromium: axe-core on every console page and the web chat finds no
serious or critical violation, in Korean and in English; a case is claimed and closed with the
keyboard alone.

axe-core is vendored (`tests/vendor/axe-core/`, MPL-2.0) and handed to the page as a file of our
own origin, so it runs under the console's unchanged CSP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, Route
from redis.asyncio import Redis

from backend import totp
from backend.console.app_keys import cases_key, counselors_key
from backend.core.shifts import ShiftBoard
from backend.embedded_redis import EmbeddedRedis
from backend.models import Role
from backend.web import redis_key
from tests.browser import chromium
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.live_chat_support import PASSWORD as LIVE_PASSWORD
from tests.live_chat_support import add_counselor
from tests.locales import texts_of
from tests.test_browser_console_korean import _account
from tests.test_console import report
from tests.test_console_queue import PASSWORD

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"
AXE_PATH = "/console/static/axe.min.js"
EN = texts_of("en")


@pytest.fixture
async def korean(tmp_path: Path, embedded_redis: EmbeddedRedis) -> AsyncIterator[RunningHotline]:
    pair = Pair("embedded", f"sqlite:///{tmp_path / 'a11y.sqlite3'}", embedded_redis.url)
    redis = Redis.from_url(pair.redis_url)
    await redis.flushdb()
    await redis.aclose()
    async with start_hotline(pair, tmp_path, {"HOTLINE_CONSOLE_LANGUAGE": ""}) as hotline:
        yield hotline


async def _serve_axe(route: Route) -> None:
    await route.fulfill(body=AXE.read_bytes(), content_type="text/javascript")


async def serious_violations(page: Page) -> list[dict[str, Any]]:
    """axe-core's serious and critical findings on the page as it stands."""
    await page.add_script_tag(url=AXE_PATH)
    result: dict[str, Any] = await page.evaluate(
        "axe.run(document, { resultTypes: ['violations'] })"
    )
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]][:3]}
        for v in result["violations"]
        if v["impact"] in {"serious", "critical"}
    ]


async def test_no_serious_violation_on_any_page(korean: RunningHotline) -> None:
    for n in range(2):
        await report(korean, f"deepfake report {n}", category="deepfake")
    cases = korean.client.app[cases_key]
    for _ in range(250):
        if len(waiting := await cases.list_waiting()) == 2:
            break
        await asyncio.sleep(0.02)
    held, queued = waiting[0].id, waiting[1].id
    await _account(korean, "supervisor-kim", Role.SUPERVISOR)
    base = str(korean.client.make_url("")).rstrip("/")
    found: dict[str, list[dict[str, Any]]] = {}
    async with chromium() as browser:
        context = await browser.new_context(locale="ko-KR")
        await context.route(base + AXE_PATH, _serve_axe)
        page = await context.new_page()

        async def check(path: str, label: str | None = None) -> None:
            if path:
                await page.goto(base + path)
            if violations := await serious_violations(page):
                found[label or path] = violations

        await check("/chat")
        await check("/console/login")
        await page.get_by_label("사용자 이름").fill("supervisor-kim")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="로그인").click()
        await page.wait_for_url(base + "/console")
        await check("", "/console")
        await page.goto(f"{base}/console/cases/{held}")
        await page.get_by_role("button", name="맡기").click()
        await page.get_by_text("내가 맡은 사건입니다").wait_for()
        await check("", "/console/cases/<claimed>")
        await page.get_by_role("button", name="삭제 요청서 작성").click()
        await page.get_by_role("heading", name="본문").wait_for()
        await check("", "/console/takedowns/<draft>")
        for path in (
            f"/console/cases/{queued}",
            f"/console/cases/{held}/transfer",
            "/console/statistics",
            "/console/archive",
            "/console/takedowns",
            "/console/supervision",
            "/console/blocks",
            "/console/receipts/lookup",
            "/console/two-factor",
            "/console/password",
        ):
            await check(path)
        await page.get_by_role("button", name="English").click()
        await check("/console", "/console (English)")
        await check(f"/console/cases/{held}", "/console/cases/<claimed> (English)")
        await context.close()
        # The administrators' pages, behind a two-factor sign-in.
        await _account(korean, "admin-park", Role.ADMINISTRATOR)
        admin = await korean.client.app[counselors_key].by_username("admin-park")
        assert admin is not None and admin.id is not None
        secret = totp.new_secret()
        await korean.client.app[counselors_key].enable_totp(admin.id, PASSWORD, secret, 0)
        context = await browser.new_context(locale="ko-KR")
        await context.route(base + AXE_PATH, _serve_axe)
        page = await context.new_page()
        await page.goto(base + "/console/login")
        await page.get_by_label("사용자 이름").fill("admin-park")
        await page.get_by_label("비밀번호").fill(PASSWORD)
        await page.get_by_role("button", name="로그인").click()
        await page.get_by_label("코드").fill(totp.code_at_step(secret, totp.step_at(time.time())))
        await page.get_by_role("button", name="계속").click()
        await page.wait_for_url(base + "/console")
        for path in (
            "/console/accounts",
            "/console/studio",
            "/console/studio?file=locales/ko.yaml",
            "/console/studio/diagram?flow=report",
        ):
            await check(path)
        await context.close()
    assert not found, found


_FOCUSED = """() => {
  const e = document.activeElement;
  if (!e || e === document.body) return "";
  const label = e.labels && e.labels[0] ? e.labels[0].innerText : "";
  return (e.getAttribute("aria-label") || label || e.innerText || e.value || "").trim();
}"""


async def tab_to(page: Page, name: str, limit: int = 120) -> None:
    """Tab until the focused control is named `name` (its text, label or aria-label)."""
    for _ in range(limit):
        await page.keyboard.press("Tab")
        if (await page.evaluate(_FOCUSED)).startswith(name):
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")


async def test_claim_chat_and_close_by_keyboard_alone(korean: RunningHotline) -> None:
    app = korean.client.app
    base = str(korean.client.make_url("")).rstrip("/")
    counselor_id = await add_counselor(korean, "alice")
    await ShiftBoard(app[redis_key]).start(counselor_id)
    async with chromium() as browser:
        # The victim asks for a counselor in the web chat (her side is not under test here).
        victim = await (await browser.new_context(locale="en-US")).new_page()
        await victim.goto(base + "/chat")
        await victim.get_by_role("button", name=EN["common.agree"]).wait_for()
        await victim.get_by_label("메시지 / Message").fill("/help")
        await victim.keyboard.press("Enter")
        await victim.get_by_role("button", name=EN["help.counselor"]).click()
        told = victim.locator("#log li.bot")
        await told.filter(has_text=EN["live.how_web"]).wait_for()

        console = await (await browser.new_context(locale="ko-KR")).new_page()
        await console.goto(base + "/console/login")
        await tab_to(console, "사용자 이름")
        await console.keyboard.type("alice")
        await tab_to(console, "비밀번호")
        await console.keyboard.type(LIVE_PASSWORD)
        await console.keyboard.press("Enter")
        await console.wait_for_url(base + "/console")
        case = (await app[cases_key].list_waiting())[0].id
        await console.locator(f'tr[data-case="{case}"]').wait_for()
        await tab_to(console, case[:8])
        await console.keyboard.press("Enter")
        await console.wait_for_url(f"{base}/console/cases/{case}")

        await tab_to(console, "맡기")
        await console.keyboard.press("Enter")
        await console.get_by_text("내가 맡은 사건입니다").wait_for()
        await console.locator(".chat-start:visible").wait_for()
        await tab_to(console, "대화 시작")
        await console.keyboard.press("Enter")
        await console.get_by_text("대화 중입니다.").wait_for()
        await told.filter(has_text=EN["live.joined"]).wait_for()
        await tab_to(console, "메시지")
        await console.keyboard.type("typed without a mouse")
        await tab_to(console, "보내기")
        await console.keyboard.press("Enter")
        await told.filter(has_text="typed without a mouse").wait_for()

        await tab_to(console, "결과")
        await console.keyboard.press("ArrowDown")
        await tab_to(console, "이 결과로 종결")
        await console.keyboard.press("Enter")
        await console.get_by_text("결과: ").wait_for()
        assert (await app[cases_key].get(case)).status == "closed"
