"""Evidence reaches the case with its chain of custody (issue 12, point 3), from a Telegram
upload to the case page, the takedown draft's text, the kept screenshot shown to the case's
counselor, and the evidence manifest bound into the audit log.

The whole composed app (bot and backend roles) against the fake Bot API: the door fetches and
hashes the file, the engine makes its record, the report carries it sealed, intake stores it,
the console opens it. Nothing is injected.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import audit
from backend.core.evidence_records import manifest_digest
from bot.telegram.evidence import pdq_hex
from tests.conftest import Pair, start_hotline
from tests.fake_telegram import ApiCall, FakeTelegram
from tests.live_chat_support import add_counselor, sign_in
from tests.telegram_support import TOKEN, Victim, matches
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture
from tests.test_case_work import post, work_of
from tests.test_console import sign_in_and_change_password, wait_for_cases
from tests.test_telegram_evidence import _at_the_evidence_choice, _small_picture

pytestmark = pytest.mark.crypto


async def _report_with(victim: Victim, purpose: str, content: bytes) -> None:
    """Through the report flow on Telegram, one picture for `purpose`, then send."""
    choice = await _at_the_evidence_choice(victim)
    ask: ApiCall
    if purpose == "screenshots":
        (consent,) = await victim.press(choice, "screenshots", replies=1)
        (ask,) = await victim.press(consent, "agree", replies=1)
    else:
        (ask,) = await victim.press(choice, purpose, replies=1)
    await victim.send("photo", content=content, replies=1)
    (refer_center,) = await victim.press(ask, "done", replies=1)
    (refer_police,) = await victim.press(refer_center, "yes", replies=1)
    report, _feedback = await victim.press(refer_police, "no", replies=2)
    assert matches(report.params["text"], "report.received")


async def _draft_text(hotline: Any, case_id: str, csrf: str) -> str:
    status, made = await post(hotline, f"/api/cases/{case_id}/takedowns", csrf, {"language": "en"})
    assert status == 200, made
    draft: dict[str, Any] = await (await hotline.client.get(f"/api/takedowns/{made['id']}")).json()
    return str(draft["text"])


@pytest.mark.parametrize(
    ("purpose", "recorded"), [("match", "match"), ("fingerprints", "hash_only")]
)
async def test_a_telegram_upload_reaches_the_case_page_and_the_takedown_draft(
    pair: Pair,
    *,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    telegram: FakeTelegram,
    purpose: str,
    recorded: str,
) -> None:
    env = {"HOTLINE_TELEGRAM_TOKEN": TOKEN, "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url}
    async with start_hotline(pair, tmp_path, env) as hotline:
        content = _small_picture(5)
        await _report_with(Victim(telegram, "en"), purpose, content)
        await sign_in_and_change_password(hotline, "a long new passphrase")
        (case,) = await wait_for_cases(hotline, 1)
        work = await work_of(hotline, case["id"])
        sha256 = hashlib.sha256(content).hexdigest()
        pdq = pdq_hex(content) if purpose == "match" else ""
        (record,) = work["evidence"]
        received = record.pop("received_at")
        assert received.endswith("Z") and received[:2] == "20", "the time received, in UTC"
        assert record == {
            "kind": "photo",
            "purpose": recorded,
            "sha256": sha256,
            "pdq": pdq,
            "size_bytes": len(content),
            "mime_type": "image/jpeg",
            "channel": "telegram",
            "sealed_index": None,
        }
        page = await (await hotline.client.get(f"/console/cases/{case['id']}")).text()
        assert sha256 in page and received in page and "Export evidence" in page

        text = await _draft_text(hotline, case["id"], work["csrf_token"])
        assert f"photo SHA-256 {sha256}" in text
        assert f"{len(content)} bytes" in text and "image/jpeg" in text
        assert f"received {received} via telegram" in text
        perceptual = pdq_hex(content)
        assert perceptual is not None
        assert (f"PDQ {perceptual}" in text) is (purpose == "match"), "PDQ only when asked"


async def test_a_kept_screenshot_is_shown_to_its_counselor_and_the_evidence_exported(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, telegram: FakeTelegram
) -> None:
    env = {"HOTLINE_TELEGRAM_TOKEN": TOKEN, "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url}
    async with start_hotline(pair, tmp_path, env) as hotline:
        content = _small_picture(7)
        await _report_with(Victim(telegram, "en"), "screenshots", content)
        await sign_in_and_change_password(hotline, "a long new passphrase")
        (case,) = await wait_for_cases(hotline, 1)
        case_id = case["id"]
        await add_counselor(hotline, "lee")
        await add_counselor(hotline, "kim")
        lee, kim = await sign_in(hotline, "lee"), await sign_in(hotline, "kim")
        client = hotline.client
        client.session.cookie_jar.clear()
        status, _ = await post_as(hotline, lee.api_headers(), f"/api/cases/{case_id}/claim")
        assert status == 200

        path = f"/console/cases/{case_id}/evidence/0"
        other = await client.get(path, headers=kim.api_headers())
        assert other.status == 403, "only the counselor holding the case"
        shown = await client.get(path, headers=lee.api_headers())
        assert shown.status == 200
        assert await shown.read() == content
        assert shown.headers["Content-Disposition"].startswith("inline")
        assert shown.headers["Cache-Control"] == "no-store"
        assert shown.content_type == "image/jpeg"
        history = (
            await (await client.get(f"/api/cases/{case_id}/work", headers=lee.api_headers())).json()
        )["history"]
        assert any(h["action"] == "unseal" and h["detail"] == "evidence:0" for h in history)

        exported = await client.get(
            f"/api/cases/{case_id}/evidence/export", headers=lee.api_headers()
        )
        assert exported.status == 200
        assert exported.headers["Cache-Control"] == "no-store"
        body = await exported.json()
        document = body["manifest"]
        (record,) = document["records"]
        assert record["purpose"] == "screenshot" and record["sealed_index"] == 0
        assert record["sha256"] == hashlib.sha256(content).hexdigest()
        assert any(link["detail"] == "evidence:0" for link in document["audit_links"])
        assert manifest_digest(document) == body["sha256"], "the receiver can check the digest"
        link = body["audit_link"]
        assert link["action"] == "export" and link["detail"].endswith(body["sha256"])
        verdict = await audit.verify(engine)
        assert verdict.intact, "the manifest's link sits in an intact chain"


async def post_as(hotline: Any, headers: dict[str, str], path: str) -> tuple[int, Any]:
    response = await hotline.client.post(path, json={}, headers=headers)
    return response.status, await response.json()
