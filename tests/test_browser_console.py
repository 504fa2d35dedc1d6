"""The counselor console in Debian's Chromium, driven by Playwright: two counselors claiming one
case at once, a victim's HTML and script rendered inert, a cross-site form post refused.

The composed app runs in-process on a real port (embedded pair only: the store and queue are
tested on both pairs elsewhere; here the browser is what is under test).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from playwright.async_api import Browser, BrowserContext, Page
from redis.asyncio import Redis

from backend.console.app_keys import cases_key, counselors_key, keyring_key
from backend.embedded_redis import EmbeddedRedis
from backend.models import Role
from tests.browser import chromium
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.test_console import report
from tests.test_console_queue import PASSWORD, add_case

pytestmark = pytest.mark.browser

# Each would set a flag on the page if it ever ran.
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "<script>window.__pwned=2</script>"
HOSTILE_CATEGORY = "<img src=x onerror=__pwned=3>"  # fits the 32-character column


@dataclass
class Console:
    hotline: RunningHotline
    base: str
    browser: Browser

    async def signed_in(self, username: str, role: Role = Role.COUNSELOR) -> Page:
        """A new browser context (own cookies) with `username` signed in, at the queue."""
        app = self.hotline.client.app
        added = await app[counselors_key].add(username, PASSWORD, role, must_change_password=False)
        assert added.id is not None
        # The centre key, wrapped for them as `hotline counselor add` does, so cases open.
        keyring = app[keyring_key]
        centre = await keyring.unwrap_with_recovery(self.hotline.recovery_key)
        await keyring.grant(added.id, PASSWORD, centre)
        context: BrowserContext = await self.browser.new_context()
        page = await context.new_page()
        await page.goto(self.base + "/console/login")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(self.base + "/console")
        return page


@pytest.fixture
async def console(tmp_path: Path, embedded_redis: EmbeddedRedis) -> AsyncIterator[Console]:
    pair = Pair("embedded", f"sqlite:///{tmp_path / 'console.sqlite3'}", embedded_redis.url)
    redis = Redis.from_url(pair.redis_url)
    await redis.flushdb()
    await redis.aclose()
    async with start_hotline(pair, tmp_path, {}) as hotline, chromium() as browser:
        yield Console(hotline, str(hotline.client.make_url("")).rstrip("/"), browser)


async def test_two_browsers_claim_one_case_and_one_wins(console: Console) -> None:
    case_id = await add_case(console.hotline, 1, timedelta(minutes=1))
    pages = [await console.signed_in("kim"), await console.signed_in("lee")]
    for page in pages:
        await page.goto(f"{console.base}/console/cases/{case_id}")
    await asyncio.gather(*(p.get_by_role("button", name="Claim").click() for p in pages))
    outcomes = []
    for page in pages:
        lost, won = page.locator("#claim-lost"), page.get_by_text("You hold this case")
        await lost.or_(won).wait_for()
        outcomes.append("lost" if await lost.count() else "won")
    assert sorted(outcomes) == ["lost", "won"]
    loser = pages[outcomes.index("lost")]
    assert "Another counselor took this case" in await loser.locator("#claim-lost").inner_text()
    case = await console.hotline.client.app[cases_key].get(case_id)
    assert case.status == "claimed"


async def test_a_victims_html_and_script_stay_text(console: Console) -> None:
    await report(console.hotline, f"He sent {IMG} and {SCRIPT} to everyone")
    cases = console.hotline.client.app[cases_key]
    for _ in range(250):
        if waiting := await cases.list_waiting():
            break
        await asyncio.sleep(0.02)
    (reported,) = waiting
    page = await console.signed_in("kim")
    # Both arrive after the page was loaded: the live queue shows them without a reload.
    hostile = await add_case(console.hotline, 2, timedelta(0), category=HOSTILE_CATEGORY)
    late = await add_case(console.hotline, 1, timedelta(minutes=20))
    row = page.locator(f'tr[data-case="{hostile}"]')
    await row.locator(".sla", has_text="left").wait_for()
    # `add_case` stores the case, then dates it back: a poll between the two shows it on time
    # until the next poll, so the row is awaited as missed rather than read at once.
    missed = page.locator(f'tr[data-case="{late}"]')
    await page.locator(f'tr[data-case="{late}"].sla-missed').wait_for()
    assert await missed.get_attribute("class") == "priority-1 sla-missed"
    assert (await missed.locator(".sla").inner_text()).startswith("SLA missed by 5 min")
    assert await row.locator("td").nth(2).inner_text() == HOSTILE_CATEGORY
    assert await page.locator("#queue img, #queue script").count() == 0
    await page.goto(f"{console.base}/console/cases/{reported.id}")
    answers = await page.locator(".answers").inner_text()
    assert f"He sent {IMG} and {SCRIPT} to everyone" in answers
    assert await page.locator(".answers img, .answers script").count() == 0
    await page.goto(f"{console.base}/console/cases/{hostile}")
    assert HOSTILE_CATEGORY in await page.locator("main").inner_text()
    assert await page.evaluate("window.__pwned") is None, "no payload ran"


async def test_a_form_posted_from_another_origin_is_refused(console: Console) -> None:
    case_id = await add_case(console.hotline, 1, timedelta(0))
    page = await console.signed_in("kim")
    await page.goto(f"{console.base}/console/cases/{case_id}")
    await page.get_by_role("button", name="Claim").click()
    await page.get_by_text("You hold this case").wait_for()
    # Even with the right CSRF token (which another site could not read), our origin is needed.
    token = await page.locator('input[name="csrf"]').first.get_attribute("value")
    target = f"{console.base}/console/cases/{case_id}/status"

    async def attack(_request: web.Request) -> web.Response:
        body = (
            f'<form method="post" action="{target}">'
            f'<input name="csrf" value="{token}"><input name="to" value="closed"></form>'
            "<script>document.forms[0].submit()</script>"
        )
        return web.Response(text=body, content_type="text/html")

    other = web.Application()
    other.router.add_get("/", attack)
    async with TestServer(other) as server:
        assert server.port != console.hotline.client.port, "another origin"
        async with page.expect_response(target) as answered:
            await page.goto(str(server.make_url("/")))
        response = await answered.value
        assert response.status == 403
        assert await response.text() == "cross-site request refused"
    case = await console.hotline.client.app[cases_key].get(case_id)
    assert case.status == "claimed", "nothing changed"
