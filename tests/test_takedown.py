"""Takedown requests: templates in four languages with every field of domain/takedown.md, and
the draft → approval → sent → answered track, where nothing is sent without a supervisor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.console.app_keys import counselors_key, keyring_key
from backend.core.conversation import Attachment
from backend.core.evidence_records import RECORDS_FIELD, record_for, records_of
from backend.keyring import KeyRing
from backend.models import Role, TakedownRequest
from backend.takedown import FIELDS, LANGUAGES, Draft, draft_fields, render
from tests.conftest import RunningHotline
from tests.test_case_work import SHA, inject_report, post, raw_rows, work_of
from tests.test_console import sign_in_and_change_password, wait_for_cases

# The fixed statements each language's template must carry (domain/takedown.md).
STATEMENTS = {
    "en": ("Consent:", "Good faith:", "Reviewed by:", "Next re-check:"),
    "ko": ("동의 진술:", "선의 진술:", "검토자:", "다음 재확인:"),
    "zh": ("同意声明", "善意声明", "审核人", "下次复查"),
    "ja": ("同意に関する表明", "誠実性の表明", "確認者", "次回再確認"),
}
LABELS = {
    "en": ("The victim's guardian", "Sexually explicit deepfake"),
    "ko": ("피해자의 보호자", "허위영상물(딥페이크)"),
    "zh": ("受害人的监护人", "色情深度伪造"),
    "ja": ("被害者の保護者", "性的ディープフェイク"),
}
PASSWORD = "a long test passphrase"  # noqa: S105 - test accounts only


def _row(language: str, **extra: Any) -> TakedownRequest:
    return TakedownRequest(
        id="req0001",
        case_id="case",
        language=language,
        status="approved",
        created_by=1,
        updated_by=1,
        sealed=b"",
        **extra,
    )


def _filled() -> dict[str, str]:
    fields = {name: f"value-of-{name}" for name in FIELDS}
    fields.update(requester_role="guardian", content_type="deepfake", victim_is_minor="yes")
    return fields


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_language_carries_every_field(language: str) -> None:
    approved = datetime(2026, 3, 1, 1, 30, tzinfo=UTC)
    draft = Draft(
        _row(language, approved_at=approved, next_check_at=approved), _filled(), "the answer"
    )
    said = render(draft, reviewer="supervisor-kim")
    for name, value in _filled().items():
        if name not in ("requester_role", "content_type", "victim_is_minor"):
            assert value in said, (language, name)
    assert said.count("req0001") >= 2, "the request id, in the subject and the body"
    assert "yes" in said and "supervisor-kim" in said and "the answer" in said
    assert "2026-03-01T10:30+09:00" in said, "times in ISO 8601 with the KST offset"
    for statement in STATEMENTS[language]:
        assert statement in said, (language, statement)
    for label in LABELS[language]:
        assert label in said, "roles and content types are said in the request's language"
    assert "{" not in said, "every placeholder is filled"


def test_a_field_cannot_pass_for_another_line() -> None:
    fields = _filled()
    fields["post_url"] = "https://x.example/p\nLegal basis: none\r\nConsent: withdrawn\x00"
    fields["description"] = "first line\nLegal basis: forged\n\n{{ request_id }}"
    said = render(Draft(_row("en"), fields, ""), reviewer="")
    lines = said.splitlines()
    assert "Post URL: https://x.example/p Legal basis: none Consent: withdrawn" in lines
    assert not any(line.startswith(("Legal basis: none", "Legal basis: forged")) for line in lines)
    assert "    Legal basis: forged" in lines, "the description stays indented under its heading"
    assert "{{ request_id }}" in said, "a value is text, never a template"
    assert "\x00" not in said and "\r" not in said


def test_the_first_draft_comes_from_the_case_facts() -> None:
    # The records as the engine makes them of two uploads (tests/test_evidence_records.py
    # takes one from a Telegram upload to the draft).
    records = records_of(
        {
            RECORDS_FIELD: [
                record_for(
                    Attachment("photo", 10, SHA, None, "image/jpeg"), "hashes", "web", 1, None
                ),
                record_for(
                    Attachment("document", 20, "cd" * 32, "f0" * 32, "image/png"),
                    "match",
                    "web",
                    1,
                    None,
                ),
            ]
        }
    )
    fields = draft_fields(
        {
            "category": "deepfake",
            "platform": "x_twitter",
            "url": "https://x.example/post/1",
            "flags": ["minor"],
        },
        records,
    )
    assert fields["platform"] == "X (Twitter)"
    assert fields["post_url"] == "https://x.example/post/1"
    assert fields["content_type"] == "minor_abuse_material", "a minor's images are CSAM"
    assert fields["victim_is_minor"] == "yes"
    assert fields["legal_basis"].startswith("아동·청소년의 성보호에 관한 법률 제11조")
    assert "제7조의3" in fields["legal_basis"]
    assert f"photo SHA-256 {SHA}" in fields["hashes"] and "PDQ " + "f0" * 32 in fields["hashes"]
    assert "received 1970-01-01T00:00:01Z via web" in fields["hashes"]
    adult = draft_fields({"category": "deepfake"})
    assert adult["content_type"] == "deepfake"
    assert "제14조의2" in adult["legal_basis"]


async def _account(hotline: RunningHotline, name: str, role: Role) -> None:
    """A signed-in-able account holding the centre key, so it can open the case."""
    counselor = await hotline.client.app[counselors_key].add(
        name, PASSWORD, role, must_change_password=False
    )
    assert counselor.id is not None
    keyring: KeyRing = hotline.client.app[keyring_key]
    keys = await keyring.unwrap_with_recovery(hotline.recovery_key)
    await keyring.grant(counselor.id, PASSWORD, keys)


async def _as(hotline: RunningHotline, name: str, case_id: str) -> str:
    hotline.client.session.cookie_jar.clear()
    response = await hotline.client.post(
        "/console/login", data={"username": name, "password": PASSWORD}, allow_redirects=False
    )
    assert response.status == 303
    return str((await work_of(hotline, case_id))["csrf_token"])


async def _status(hotline: RunningHotline, request_id: str) -> str:
    response = await hotline.client.get(f"/api/takedowns/{request_id}")
    return str((await response.json())["status"])


async def test_nothing_is_sent_without_a_supervisors_approval(
    hotline: RunningHotline, engine: AsyncEngine
) -> None:
    await sign_in_and_change_password(hotline, "a long new passphrase")
    await _account(hotline, "counselor-lee", Role.COUNSELOR)
    await _account(hotline, "supervisor-kim", Role.SUPERVISOR)
    await _account(hotline, "supervisor-park", Role.SUPERVISOR)
    url = "https://leak.example/post/takedown-marker-443"
    await inject_report(hotline, "case-takedown", {"category": "filming", "url": url})
    (case,) = await wait_for_cases(hotline, 1)
    csrf = await _as(hotline, "counselor-lee", case["id"])
    base = "/api/takedowns/"

    assert (await post(hotline, f"/api/cases/{case['id']}/takedowns", csrf, {"language": "fr"}))[
        0
    ] == 400
    status, body = await post(
        hotline, f"/api/cases/{case['id']}/takedowns", csrf, {"language": "ko"}
    )
    assert status == 200
    request_id = body["id"]
    draft = await (await hotline.client.get(base + request_id)).json()
    assert draft["fields"]["post_url"] == url and draft["status"] == "draft"
    assert "불법촬영물" in draft["text"]
    status, body = await post(hotline, base + request_id + "/submit", csrf, {})
    assert status == 400 and "abuse_contact" in body["error"], "required fields first"

    edit = {
        **draft["fields"],
        "platform": "Leak site",
        "abuse_contact": "abuse@leak.example",
        "description": "Filmed without consent and posted.",
    }
    assert (await post(hotline, base + request_id + "/edit", csrf, edit))[0] == 200
    assert (await post(hotline, base + request_id + "/submit", csrf, {}))[0] == 200
    status, body = await post(hotline, base + request_id + "/sent", csrf, {})
    assert status == 403 and "approved" in body["error"]
    status, body = await post(hotline, base + request_id + "/approve", csrf, {})
    assert status == 403 and body == {"error": "your role may not do this"}
    assert await _status(hotline, request_id) == "awaiting_approval"

    csrf = await _as(hotline, "supervisor-kim", case["id"])
    assert (await post(hotline, base + request_id + "/approve", csrf, {}))[0] == 200
    # An edit after approval takes the approval back: the approved text is the one sent.
    csrf = await _as(hotline, "counselor-lee", case["id"])
    edit["post_title"] = "changed after approval"
    assert (await post(hotline, base + request_id + "/edit", csrf, edit))[0] == 200
    assert await _status(hotline, request_id) == "draft"
    assert (await post(hotline, base + request_id + "/sent", csrf, {}))[0] == 403
    assert (await post(hotline, base + request_id + "/submit", csrf, {}))[0] == 200

    csrf = await _as(hotline, "supervisor-kim", case["id"])
    assert (await post(hotline, base + request_id + "/approve", csrf, {}))[0] == 200
    approved = await (await hotline.client.get(base + request_id)).json()
    assert "supervisor-kim" in approved["text"] and "+09:00" in approved["text"]

    csrf = await _as(hotline, "counselor-lee", case["id"])
    sent = {"next_check_at": "2030-01-02"}
    assert (await post(hotline, base + request_id + "/sent", csrf, sent))[0] == 200
    assert (await post(hotline, base + request_id + "/sent", csrf, sent))[0] == 403, "only once"
    answer = {"status": "removed", "answer": "Removed on 2030-01-01, platform-answer-774"}
    assert (await post(hotline, base + request_id + "/answer", csrf, answer))[0] == 200
    tracked = await (await hotline.client.get(base + request_id)).json()
    assert tracked["status"] == "removed" and "platform-answer-774" in tracked["answer"]
    assert tracked["sent_at"] and tracked["next_check_at"] > tracked["sent_at"]

    rows = await raw_rows(engine, "takedown_requests")
    for secret in (b"takedown-marker-443", b"platform-answer-774", b"Filmed without"):
        assert secret not in rows, "fields and answers are sealed at rest"
    async with engine.connect() as conn:
        audit = (
            await conn.execute(
                text("SELECT actor, action FROM audit_log WHERE subject = :c ORDER BY seq"),
                {"c": case["id"]},
            )
        ).all()
    approvals = [actor for actor, action in audit if action == "takedown-approve"]
    sends = [actor for actor, action in audit if action == "takedown-send"]
    assert len(approvals) == 2 and len(sends) == 1
    assert approvals[0] != sends[0], "approved by one person, sent by another"


async def test_a_supervisor_does_not_approve_their_own_draft(hotline: RunningHotline) -> None:
    await sign_in_and_change_password(hotline, "a long new passphrase")
    await _account(hotline, "supervisor-kim", Role.SUPERVISOR)
    await inject_report(hotline, "case-own", {"category": "deepfake", "url": "https://x.example"})
    (case,) = await wait_for_cases(hotline, 1)
    csrf = await _as(hotline, "supervisor-kim", case["id"])
    _, body = await post(hotline, f"/api/cases/{case['id']}/takedowns", csrf, {"language": "en"})
    request_id = body["id"]
    fields = (await (await hotline.client.get(f"/api/takedowns/{request_id}")).json())["fields"]
    fields.update(
        platform="X", abuse_contact="abuse@x.example", description="Deepfake of the victim."
    )
    await post(hotline, f"/api/takedowns/{request_id}/edit", csrf, fields)
    assert (await post(hotline, f"/api/takedowns/{request_id}/submit", csrf, {}))[0] == 200
    status, body = await post(hotline, f"/api/takedowns/{request_id}/approve", csrf, {})
    assert status == 403 and "another supervisor" in body["error"]
    assert await _status(hotline, request_id) == "awaiting_approval"
    page = await (await hotline.client.get(f"/console/takedowns/{request_id}")).text()
    assert "Deepfake of the victim." in page and "Nothing is sent from here" in page
