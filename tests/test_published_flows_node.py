"""The composed node follows the published flows: the web chat, the console's referral list and
its canned responses all move with the pointer (issue 15)."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.flow_versions import FlowVersionStore
from tests.conftest import RunningHotline
from tests.test_case_work import inject_report, post, work_of
from tests.test_console import sign_in_and_change_password, wait_for_cases

OLD_AGE = "How old are you? We ask so we can point you to the right help."
NEW_AGE = "How old are you? (We ask only to find the right help for you.)"
NEW_SERVICE = """  - id: studio_test_centre
    name: {ko: 시험 센터, en: Studio test centre}
    needs: [all]
    ages: [all]
    languages: [ko, en]
    phone: ["02-000-0000"]
    verified: true
"""


async def _turn(hotline: RunningHotline, token: str, **turn: str) -> dict[str, Any]:
    response = await hotline.client.post("/chat/api/turn", json={"token": token, **turn})
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body


async def _to_age(hotline: RunningHotline, token: str) -> list[str]:
    await _turn(hotline, token, text="/start", language="en")
    await _turn(hotline, token, button="agree")
    said = await _turn(hotline, token, button="filming")
    return [m["text"] for m in said["messages"]]


async def test_a_new_conversation_gets_the_new_version_an_old_one_keeps_its_own(
    hotline: RunningHotline, engine: AsyncEngine, redis: Redis
) -> None:
    early = "e" * 43
    await _turn(hotline, early, text="/start", language="en")
    await _turn(hotline, early, button="agree")
    store = FlowVersionStore(engine, redis)
    files = await store.files(1)
    files["locales/en.yaml"] = files["locales/en.yaml"].replace(OLD_AGE, NEW_AGE)
    files["canned/en.yaml"] = files["canned/en.yaml"].replace("title: ", "title: New ", 1)
    files["resources.yaml"] = files["resources.yaml"].rstrip("\n") + "\n" + NEW_SERVICE
    await store.publish(files, "counselor:1", "kinder words")
    said: list[str] = []
    for _ in range(300):
        said = await _to_age(hotline, "l" * 43)
        if said == [NEW_AGE]:
            break
        await _turn(hotline, "l" * 43, text="/exit")
        await asyncio.sleep(0.02)
    assert said == [NEW_AGE]
    old = await _turn(hotline, early, button="deepfake")
    assert [m["text"] for m in old["messages"]] == [OLD_AGE]

    await sign_in_and_change_password(hotline, "a new long password 1")
    response = await hotline.client.get("/api/canned-responses?language=en")
    assert response.status == 200, await response.text()
    titles = [r["title"] for r in (await response.json())["responses"]]
    assert any(t.startswith("New ") for t in titles), titles
    # The referral list is the published resources': the new service is one a referral names.
    await inject_report(hotline, "case-referral", {"category": "deepfake"})
    (case,) = await wait_for_cases(hotline, 1)
    csrf = (await work_of(hotline, case["id"]))["csrf_token"]
    referral = {"service": "studio_test_centre", "consent": "yes", "consent_method": "in_chat"}
    status, body = await post(hotline, f"/api/cases/{case['id']}/referrals", csrf, referral)
    assert status == 200, body
