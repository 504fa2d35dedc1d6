"""Takedown tracking: every request across cases, re-checks overdue first, then due today, then
later; filtered by state and by the (sealed) platform, each opened case audited."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from backend.models import Role
from tests.conftest import RunningHotline
from tests.test_case_work import inject_report, post
from tests.test_console import sign_in_and_change_password, wait_for_cases
from tests.test_console_queue import audit_trail
from tests.test_takedown import _account, _as

FIELDS = {"abuse_contact": "abuse@site.example", "description": "Posted without consent."}


async def _tracked(hotline: RunningHotline, query: str = "") -> list[str]:
    page = await (await hotline.client.get(f"/console/takedowns{query}")).text()
    return re.findall(r'data-takedown="([0-9a-f]+)"', page)


async def test_overdue_rechecks_come_first(hotline: RunningHotline) -> None:
    await sign_in_and_change_password(hotline, "a long new passphrase")
    await _account(hotline, "counselor-lee", Role.COUNSELOR)
    await _account(hotline, "supervisor-kim", Role.SUPERVISOR)
    for n in range(4):
        await inject_report(hotline, f"case-{n}", {"category": "filming", "url": f"https://s/{n}"})
    cases = await wait_for_cases(hotline, 4)
    soon = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    plan = [  # platform, re-check after sending (None: left a draft)
        ("Site B", "2030-01-02"),
        ("Site A", None),
        ("Site A", "2020-01-02"),
        ("Site B", soon),
    ]
    ids = []
    for case, (platform, recheck) in zip(cases, plan, strict=True):
        csrf = await _as(hotline, "counselor-lee", case["id"])
        status, body = await post(
            hotline, f"/api/cases/{case['id']}/takedowns", csrf, {"language": "ko"}
        )
        assert status == 200
        base = f"/api/takedowns/{body['id']}"
        ids.append(body["id"])
        draft = await (await hotline.client.get(base)).json()
        edit = {**draft["fields"], **FIELDS, "platform": platform}
        assert (await post(hotline, base + "/edit", csrf, edit))[0] == 200
        if recheck is None:
            continue
        assert (await post(hotline, base + "/submit", csrf, {}))[0] == 200
        kim = await _as(hotline, "supervisor-kim", case["id"])
        assert (await post(hotline, base + "/approve", kim, {}))[0] == 200
        csrf = await _as(hotline, "counselor-lee", case["id"])
        sent = {"next_check_at": recheck}
        assert (await post(hotline, base + "/sent", csrf, sent))[0] == 200

    later, draft, overdue, due = ids
    assert await _tracked(hotline) == [overdue, due, later, draft]
    page = await (await hotline.client.get("/console/takedowns")).text()
    assert page.count('class="recheck-overdue"') == 1 and "re-check due today" in page
    assert await _tracked(hotline, "?state=draft") == [draft]
    assert await _tracked(hotline, "?platform=Site+B") == [due, later]
    assert await _tracked(hotline, "?state=sent&platform=Site+A") == [overdue]
    assert (await hotline.client.get("/console/takedowns?state=lost")).status == 400
    # The platform is sealed: listing it opened each case, and said so in the audit log.
    trail = await audit_trail(hotline, cases[0]["id"])
    assert any(action == "unseal" and detail == "takedown tracking" for _a, action, detail in trail)
