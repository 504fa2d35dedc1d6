"""The flows studio over HTTP (issue 15): a draft saved per administrator, checked with findings
at their line, diffed, tested with coverage, tried in a sandbox that reaches no queue, published
only when it passes, and rolled back in one step."""

from __future__ import annotations

import hashlib
import html
import re
from importlib import resources
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col

from backend import totp
from backend.console.app_keys import counselors_key
from backend.console.i18n import COOKIE_NAME as LANGUAGE_COOKIE
from backend.core import redis_keys
from backend.flow_versions import FlowVersionStore
from backend.models import AuditEntry, Role
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.live_chat_support import PASSWORD, add_counselor, sign_in
from tests.test_console_access import sign_in_with_code

OLD_AGE_KO = "나이대를 알려 주세요. 알맞은 도움을 안내하려고 여쭤봐요."
NEW_AGE_KO = "나이대를 알려 주세요. 꼭 맞는 도움을 찾으려고 여쭤봐요."
BROKEN_AGE_KO = "나이대를 알려 주세요: 알맞은 도움을 안내하려고 여쭤봐요."


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None, page
    return found.group(1)


async def _administrator(hotline: RunningHotline) -> None:
    boss = await add_counselor(hotline, "boss", Role.ADMINISTRATOR)
    secret = totp.new_secret()
    await hotline.client.app[counselors_key].enable_totp(boss, PASSWORD, secret, 0)
    await sign_in_with_code(hotline.client, "boss", secret, PASSWORD)


async def _turn(hotline: RunningHotline, token: str, **turn: str) -> list[str]:
    response = await hotline.client.post("/chat/api/turn", json={"token": token, **turn})
    assert response.status == 200, await response.text()
    return [m["text"] for m in (await response.json())["messages"]]


async def _age_question(hotline: RunningHotline, token: str) -> list[str]:
    await _turn(hotline, token, text="/start", language="ko")
    await _turn(hotline, token, button="agree")
    return await _turn(hotline, token, button="filming")


async def test_edit_check_diff_test_try_publish_and_roll_back(
    hotline: RunningHotline, redis: Redis
) -> None:
    client = hotline.client
    await _administrator(hotline)
    page = await (await client.get("/console/studio?file=locales/ko.yaml")).text()
    assert "No draft" in page and OLD_AGE_KO in page
    csrf = _csrf(page)
    ko = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.DOTALL)
    assert ko is not None
    original = ko.group(1).replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&")
    original = original.replace("&lt;", "<").replace("&gt;", ">")
    line = original.splitlines().index(f"  age: {OLD_AGE_KO}") + 1

    # A broken edit: saved to the draft only; Check names the file, its line and a column.
    broken = original.replace(OLD_AGE_KO, BROKEN_AGE_KO)
    saved = await client.post(
        "/console/studio/save",
        data={"csrf": csrf, "file": "locales/ko.yaml", "text": broken},
        allow_redirects=False,
    )
    assert saved.status == 303
    early = await _age_question(hotline, "e" * 43)
    assert early == [OLD_AGE_KO], "a draft never reaches a victim"
    checked = await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    row = re.search(
        r"<td>F000</td><td>locales/ko.yaml</td>\s*<td><a href=\"[^\"]*line=(\d+)\">\d+</a></td>\s*"
        r"<td>(\d+)</td>",
        checked,
    )
    assert row is not None, checked
    assert int(row.group(1)) == line and int(row.group(2)) > 1
    refused = await client.post("/console/studio/publish", data={"csrf": csrf, "message": "x"})
    assert refused.status == 409 and "does not pass" in await refused.text()

    # Fixed: checks clean, diffs against the published version, tests with coverage.
    fixed = original.replace(OLD_AGE_KO, NEW_AGE_KO)
    await client.post(
        "/console/studio/save", data={"csrf": csrf, "file": "locales/ko.yaml", "text": fixed}
    )
    checked = await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    assert "ready to publish" in checked
    diff = await (await client.get("/console/studio/diff")).text()
    assert f"-  age: {OLD_AGE_KO}" in diff and f"+  age: {NEW_AGE_KO}" in diff
    tested = await (await client.post("/console/studio/test", data={"csrf": csrf})).text()
    assert re.search(r"\d+ passed, 0 failed", tested) and 'id="studio-coverage"' in tested

    # Try it: the draft's words, marked as a test; a handoff there reaches nobody.
    await client.post("/console/studio/try", data={"csrf": csrf, "restart": "1"})
    await client.post("/console/studio/try", data={"csrf": csrf, "button": "agree"})
    tried = await client.post("/console/studio/try", data={"csrf": csrf, "button": "filming"})
    page = await tried.text()
    assert NEW_AGE_KO in page and "TEST: nothing reaches the queue" in page
    await client.post("/console/studio/try", data={"csrf": csrf, "text": "/human"})
    page = await (await client.get("/console/studio")).text()
    assert "TEST: would RequestHandoff (not carried out)" in page
    assert await redis.xlen(redis_keys.REPORTS_STREAM) == 0, "no report, no handoff"
    assert await redis.zcard(redis_keys.HANDOFF_QUEUE) == 0

    published = await client.post(
        "/console/studio/publish", data={"csrf": csrf, "message": "kinder age question"}
    )
    assert published.status == 200 and "Published version 2" in await published.text()
    late = "l" * 43
    for _ in range(300):
        if await _age_question(hotline, late) == [NEW_AGE_KO]:
            break
        await _turn(hotline, late, text="/exit")
    assert await _age_question(hotline, "n" * 43) == [NEW_AGE_KO]
    assert await _turn(hotline, "e" * 43, button="18_plus") != [], "the old one goes on"

    back = await client.post("/console/studio/rollback/1", data={"csrf": csrf})
    assert back.status == 200 and "Version 1 is published again" in await back.text()
    versions = await (await client.get("/console/studio")).text()
    assert re.search(r'data-version="1">\s*<td>1 \(published\)', versions)


def _findings(page: str) -> list[tuple[str, str, str]]:
    """(code, file, message) of each row of the studio's findings table."""
    rows = re.findall(
        r"<td>([FW]\d{3})</td><td>([^<]*)</td>\s*<td><a [^>]*>\d+</a></td>\s*<td>\d+</td>"
        r"<td>([^<]*)</td>",
        page,
    )
    return [(code, file, html.unescape(message)) for code, file, message in rows]


async def test_a_korean_administrator_reads_the_linter_in_korean(hotline: RunningHotline) -> None:
    """The linter's findings, a YAML error's frame and the publish refusal's reasons are said in
    the administrator's language, with the file, step and key names as they are; an English
    console reads the English the CLI prints (issue 16)."""
    client = hotline.client
    await _administrator(hotline)
    client.session.cookie_jar.update_cookies({LANGUAGE_COOKIE: "ko"})
    page = await (await client.get("/console/studio?file=report.flow.yaml")).text()
    csrf = _csrf(page)
    area = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.DOTALL)
    assert area is not None
    flow = html.unescape(area.group(1))
    assert "    next: consent\n" in flow
    await client.post(
        "/console/studio/save",
        data={
            "csrf": csrf,
            "file": "report.flow.yaml",
            "text": flow.replace("    next: consent\n", "    next: nowhere\n", 1),
        },
    )
    korean = _findings(
        await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    )
    assert (
        "F001",
        "report.flow.yaml",
        "report: 단계 'welcome'이(가) 없는 단계 'nowhere'(으)로 갑니다",
    ) in korean, korean
    assert (
        "W100",
        "resources.yaml",
        "자원 'seoul_center'은(는) 아직 확인되지 않았습니다",
    ) in korean
    assert not [m for _c, _f, m in korean if "step" in m or "resource" in m], korean
    refused = html.unescape(
        await (
            await client.post("/console/studio/publish", data={"csrf": csrf, "message": "x"})
        ).text()
    )
    assert (
        "report.flow.yaml:36: F001 report: 단계 'welcome'이(가) 없는 단계 'nowhere'(으)로 갑니다"
        in refused
    )

    # Broken YAML: a Korean frame round the parser's own (English) words and its column.
    ko = await (await client.get("/console/studio?file=locales/ko.yaml")).text()
    area = re.search(r"<textarea[^>]*>(.*?)</textarea>", ko, re.DOTALL)
    assert area is not None
    await client.post(
        "/console/studio/save",
        data={
            "csrf": csrf,
            "file": "locales/ko.yaml",
            "text": html.unescape(area.group(1)).replace(OLD_AGE_KO, BROKEN_AGE_KO),
        },
    )
    [(code, file, message)] = _findings(
        await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    )
    assert (code, file) == ("F000", "locales/ko.yaml")
    assert message.startswith("올바른 YAML이 아닙니다 (mapping values are not allowed"), message

    client.session.cookie_jar.update_cookies({LANGUAGE_COOKIE: "en"})
    [(_code, _file, english)] = _findings(
        await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    )
    assert english.startswith("not valid YAML (mapping values are not allowed"), english
    await client.post(
        "/console/studio/save",
        data={"csrf": csrf, "file": "locales/ko.yaml", "text": html.unescape(area.group(1))},
    )
    english_findings = _findings(
        await (await client.post("/console/studio/check", data={"csrf": csrf})).text()
    )
    assert (
        "F001",
        "report.flow.yaml",
        "report: step 'welcome' goes to unknown 'nowhere'",
    ) in english_findings, english_findings

    # A dialog table's failing row and what "Try it" would do, in Korean; keys as they are.
    client.session.cookie_jar.update_cookies({LANGUAGE_COOKIE: "ko"})
    await client.post(
        "/console/studio/save", data={"csrf": csrf, "file": "report.flow.yaml", "text": flow}
    )
    table = await (await client.get("/console/studio?file=tests/report.test.yaml")).text()
    area = re.search(r"<textarea[^>]*>(.*?)</textarea>", table, re.DOTALL)
    assert area is not None
    rows = html.unescape(area.group(1))
    assert "bot: [report.category]" in rows
    await client.post(
        "/console/studio/save",
        data={
            "csrf": csrf,
            "file": "tests/report.test.yaml",
            "text": rows.replace("bot: [report.category]", "bot: [report.nothing]", 1),
        },
    )
    tested = html.unescape(
        await (await client.post("/console/studio/test", data={"csrf": csrf})).text()
    )
    assert re.search(
        r"tests/report\.test\.yaml:\d+: '[^']+' 2번째 줄: "
        r"봇이 \['report\.category'\]을\(를\) 말했지만 \['report\.nothing'\]을\(를\) 기대했습니다",
        tested,
    ), tested
    await client.post("/console/studio/try", data={"csrf": csrf, "restart": "1"})
    await client.post("/console/studio/try", data={"csrf": csrf, "text": "/human"})
    tried = html.unescape(await (await client.get("/console/studio")).text())
    assert "테스트: RequestHandoff 실행 예정 (실제로 하지 않음)" in tried
    assert "TEST: would" not in tried


async def test_a_counselor_or_supervisor_cannot_open_the_studio(hotline: RunningHotline) -> None:
    await add_counselor(hotline, "sup", Role.SUPERVISOR)
    signed = await sign_in(hotline, "sup")
    response = await hotline.client.get(
        "/console/studio", headers={"Cookie": signed.headers("")["Cookie"]}, allow_redirects=False
    )
    assert response.status == 403


async def test_the_diagram_is_served_from_our_origin(hotline: RunningHotline) -> None:
    await _administrator(hotline)
    page = await (await hotline.client.get("/console/studio/diagram?flow=report")).text()
    assert "stateDiagram-v2" in page
    assert '<script src="/console/static/vendor/mermaid.min.js"></script>' in page
    assert "https://" not in page, "nothing from another origin"
    script = await hotline.client.get("/console/static/vendor/mermaid.min.js")
    assert script.status == 200 and script.content_type == "text/javascript"
    body = await script.read()
    table = (resources.files("backend.console") / "static" / "vendor" / "README.md").read_text()
    assert hashlib.sha256(body).hexdigest() in table, "the vendored file is the one recorded"


async def test_with_approval_a_second_administrator_publishes(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    async with start_hotline(pair, tmp_path, {"HOTLINE_FLOWS_PUBLISH_APPROVAL": "true"}) as hotline:
        client, app = hotline.client, hotline.client.app
        await _administrator(hotline)
        second = await add_counselor(hotline, "second", Role.ADMINISTRATOR)
        second_secret = totp.new_secret()
        await app[counselors_key].enable_totp(second, PASSWORD, second_secret, 0)
        page = await (await client.get("/console/studio?file=locales/ko.yaml")).text()
        csrf = _csrf(page)
        area = re.search(r"<textarea[^>]*>(.*?)</textarea>", page, re.DOTALL)
        assert area is not None
        text = html.unescape(area.group(1)).replace(OLD_AGE_KO, NEW_AGE_KO)
        await client.post(
            "/console/studio/save", data={"csrf": csrf, "file": "locales/ko.yaml", "text": text}
        )
        asked = await client.post(
            "/console/studio/publish", data={"csrf": csrf, "message": "kinder"}
        )
        assert "Version 2 waits for a second administrator" in await asked.text()
        store = FlowVersionStore(engine)
        published = await store.published()
        assert published is not None and published.number == 1, "nothing live before approval"
        own = await client.post("/console/studio/approve/2", data={"csrf": csrf})
        assert own.status == 409 and "not the author" in await own.text()
        refused = await client.post("/console/studio/rollback/2", data={"csrf": csrf})
        assert refused.status == 409

        await sign_in_with_code(client, "second", second_secret, PASSWORD)
        page = await (await client.get("/console/studio")).text()
        assert "Approve and publish 2" in page
        done = await client.post("/console/studio/approve/2", data={"csrf": _csrf(page)})
        assert "Version 2 approved and published" in await done.text()
        published = await store.published()
        assert published is not None and published.number == 2
        async with engine.connect() as conn:
            rows = (await conn.execute(select(AuditEntry).order_by(col(AuditEntry.seq)))).all()
        assert [r.action for r in rows if r.action.startswith("flows-")] == [
            "flows-publish",
            "flows-publish",
            "flows-approve",
        ]
