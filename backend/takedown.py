"""Takedown requests: drafted from the case facts, edited by a counselor, approved by a
supervisor, marked sent by a person, tracked until the platform has answered.

Nothing here sends anything: "sent" is a person saying they sent it. The pattern is Seoul's
(domain/takedown.md): draft, human approval, send, track. Invariants:
- a request is marked sent only from `approved`, and approved only by a supervisor (or an
  administrator) who neither wrote nor last edited it; any edit takes the approval back;
- every step is one conditional UPDATE with its audit link, so two people cannot both move it;
- the fields (URLs, uploader, description, hashes) and the platform's answer are sealed under the
  case's data key (backend/case_work.py); status, people and dates are plain, for tracking.

The text is rendered from the templates in `takedown_templates/<language>.txt` (Jinja2 without
autoescape, since the output is plain text). Every field is flattened to one line before it
reaches the template, so a value cannot start a line of its own and pass for another field; the
description, the one field of several lines, is indented under its heading.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jinja2
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit
from backend.audit import AuditAction
from backend.case_work import CaseKey, actor_of, checked_text, new_record_id
from backend.core.errors import N_, ApprovalRequiredError, CaseWorkError
from backend.core.evidence_records import EvidenceRecord
from backend.models import Role, TakedownRequest, TakedownStatus, utcnow

LANGUAGES = ("ko", "en", "zh", "ja")
KST = timezone(timedelta(hours=9), "KST")
# When to look again whether the content is still up, unless the counselor says otherwise.
RECHECK_AFTER = {
    TakedownStatus.SENT: timedelta(days=3),
    TakedownStatus.ANSWERED: timedelta(days=3),
    TakedownStatus.REFUSED: timedelta(days=7),
    # Removed content is re-uploaded: the centre monitors (domain/evidence.md).
    TakedownStatus.REMOVED: timedelta(days=30),
}
REQUESTER_ROLES = ("victim", "guardian", "designated_organisation")
CONTENT_TYPES = (
    "illegal_filming",
    "non_consensual_distribution",
    "deepfake",
    "minor_abuse_material",
)
# The fields a counselor edits, in the order the form shows them.
FIELDS = (
    "requester_role",
    "platform",
    "abuse_contact",
    "post_url",
    "media_url",
    "post_title",
    "uploader_handle",
    "uploader_id",
    "uploader_profile_url",
    "first_seen_at",
    "captured_at",
    "content_type",
    "victim_is_minor",
    "description",
    "legal_basis",
    "platform_policy",
    "hashes",
    "evidence_refs",
)
# What a request cannot go to a supervisor without.
REQUIRED = (
    "requester_role",
    "platform",
    "abuse_contact",
    "post_url",
    "content_type",
    "victim_is_minor",
    "description",
    "legal_basis",
)
# Room for the evidence lines of every file a report can carry (23, about 250 characters each).
_MAX_FIELD_CHARS = 8000
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u0085]")
_SPACE = re.compile(r"\s+")

# What the report's answers say, turned into the request's vocabulary (domain/categories.md).
_CONTENT_TYPE_BY_CATEGORY = {
    "filming": "illegal_filming",
    "distribution": "non_consensual_distribution",
    "sextortion": "non_consensual_distribution",
    "personal_info": "non_consensual_distribution",
    "deepfake": "deepfake",
    "minor_images": "minor_abuse_material",
}
_SPECIAL_ACT = "성폭력범죄의 처벌 등에 관한 특례법"
_YOUTH_ACT = "아동·청소년의 성보호에 관한 법률"
_DELETION = "성폭력방지 및 피해자보호 등에 관한 법률 제7조의3 (deletion support)"
_ARTICLE_BY_CATEGORY = {
    "filming": f"{_SPECIAL_ACT} 제14조",
    "distribution": f"{_SPECIAL_ACT} 제14조",
    "deepfake": f"{_SPECIAL_ACT} 제14조의2",
    "sextortion": f"{_SPECIAL_ACT} 제14조의3",
    "harassment": f"{_SPECIAL_ACT} 제13조",
    "minor_images": f"{_YOUTH_ACT} 제11조",
    "grooming": f"{_YOUTH_ACT} 제11조",
}
_PLATFORMS = {
    "telegram": "Telegram",
    "kakaotalk": "KakaoTalk",
    "instagram": "Instagram",
    "x_twitter": "X (Twitter)",
    "discord": "Discord",
}
# Takedown status machine: from -> the statuses it may go to.
_NEXT: dict[TakedownStatus, frozenset[TakedownStatus]] = {
    TakedownStatus.DRAFT: frozenset({TakedownStatus.AWAITING_APPROVAL, TakedownStatus.WITHDRAWN}),
    TakedownStatus.AWAITING_APPROVAL: frozenset(
        {TakedownStatus.APPROVED, TakedownStatus.DRAFT, TakedownStatus.WITHDRAWN}
    ),
    TakedownStatus.APPROVED: frozenset({TakedownStatus.SENT, TakedownStatus.WITHDRAWN}),
    TakedownStatus.SENT: frozenset(
        {TakedownStatus.ANSWERED, TakedownStatus.REMOVED, TakedownStatus.REFUSED}
    ),
    TakedownStatus.ANSWERED: frozenset(
        {TakedownStatus.ANSWERED, TakedownStatus.REMOVED, TakedownStatus.REFUSED}
    ),
    TakedownStatus.REFUSED: frozenset(
        {TakedownStatus.ANSWERED, TakedownStatus.REMOVED, TakedownStatus.REFUSED}
    ),
    TakedownStatus.REMOVED: frozenset(
        {TakedownStatus.ANSWERED, TakedownStatus.REMOVED, TakedownStatus.REFUSED}
    ),
    TakedownStatus.WITHDRAWN: frozenset(),
}
ANSWERS = (TakedownStatus.ANSWERED, TakedownStatus.REMOVED, TakedownStatus.REFUSED)
_EDITABLE = (TakedownStatus.DRAFT, TakedownStatus.AWAITING_APPROVAL, TakedownStatus.APPROVED)
_APPROVER_RANK = {Role.SUPERVISOR.value, Role.ADMINISTRATOR.value}


def one_line(value: object) -> str:
    """A field's value as one line of plain text: no control characters, no line breaks."""
    return _SPACE.sub(" ", _CONTROL.sub(" ", "" if value is None else str(value))).strip()


class Block(str):
    """Text already made safe to stand on several indented lines (the description)."""

    __slots__ = ()


def indented(text: str, prefix: str = "    ") -> Block:
    lines = [one_line(line) for line in _CONTROL.sub("\n", text).splitlines()]
    return Block("\n".join(prefix + line for line in lines if line))


def _finalize(value: object) -> str:
    return value if isinstance(value, Block) else one_line(value)


_templates = jinja2.Environment(
    loader=jinja2.PackageLoader("backend", "takedown_templates"),
    autoescape=False,  # noqa: S701 - plain text for a platform's form or e-mail, never HTML
    undefined=jinja2.StrictUndefined,
    finalize=_finalize,
    keep_trailing_newline=True,
)


def kst(moment: datetime | None) -> str:
    """ISO 8601 with the KST offset, as domain/takedown.md asks; "" for no time."""
    if moment is None:
        return ""
    if moment.tzinfo is None:  # the store keeps UTC in plain timestamp columns
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(KST).isoformat(timespec="minutes")


def draft_fields(
    answers: Mapping[str, Any], records: Sequence[EvidenceRecord] = ()
) -> dict[str, str]:
    """A first draft from the report's answers and its evidence records (issue 12: they
    never reached the draft before): what the victim told and gave, nothing made up."""
    category = str(answers.get("category", ""))
    flags = answers.get("flags")
    minor = isinstance(flags, list) and "minor" in flags
    content_type = _CONTENT_TYPE_BY_CATEGORY.get(category, "")
    if minor and content_type:
        content_type = "minor_abuse_material"  # 청소년성보호법 §11, whatever else it is
    article = _YOUTH_ACT + " 제11조" if content_type == "minor_abuse_material" else ""
    article = article or _ARTICLE_BY_CATEGORY.get(category, "")
    platform = str(answers.get("platform", ""))
    hashes = "; ".join(record.line() for record in records)
    fields = dict.fromkeys(FIELDS, "")
    fields.update(
        requester_role="victim",
        platform=_PLATFORMS.get(platform, ""),
        post_url=str(answers.get("url", "")),
        content_type=content_type,
        victim_is_minor="yes" if minor else "no",
        legal_basis="; ".join(a for a in (article, _DELETION) if a),
        hashes=hashes,
        evidence_refs=", ".join(
            f"file {i + 1} ({r.purpose}, SHA-256 {r.sha256[:12]}…)" for i, r in enumerate(records)
        ),
    )
    return fields


def checked_fields(given: Mapping[str, str]) -> dict[str, str]:
    fields = {}
    for name in FIELDS:
        value = str(given.get(name, ""))
        if len(value) > _MAX_FIELD_CHARS:
            raise CaseWorkError(
                N_("%(what)s is longer than %(n)s characters"), what=name, n=_MAX_FIELD_CHARS
            )
        fields[name] = value.strip() if name == "description" else one_line(value)
    if fields["requester_role"] and fields["requester_role"] not in REQUESTER_ROLES:
        raise CaseWorkError(
            N_("requester_role must be one of %(choices)s"), choices=", ".join(REQUESTER_ROLES)
        )
    if fields["content_type"] and fields["content_type"] not in CONTENT_TYPES:
        raise CaseWorkError(
            N_("content_type must be one of %(choices)s"), choices=", ".join(CONTENT_TYPES)
        )
    if fields["victim_is_minor"] not in ("", "yes", "no"):
        raise CaseWorkError(N_("victim_is_minor must be yes or no"))
    return fields


def missing(fields: Mapping[str, str]) -> list[str]:
    return [name for name in REQUIRED if not fields.get(name)]


@dataclass(frozen=True)
class Draft:
    """One request opened in memory: the plain tracking facts and the unsealed fields."""

    row: TakedownRequest
    fields: dict[str, str]
    answer: str

    @property
    def status(self) -> str:
        return self.row.status


def render(draft: Draft, reviewer: str = "") -> str:
    """The request as plain text in its language, ready for a person to send."""
    row = draft.row
    values: dict[str, object] = dict(draft.fields)
    values.update(
        request_id=row.id,
        language=row.language,
        description=indented(draft.fields["description"]),
        reviewer=reviewer if row.approved_at is not None else "",
        approved_at=kst(row.approved_at),
        status=row.status,
        answer=draft.answer,
        next_check_at=kst(row.next_check_at),
    )
    return _templates.get_template(f"{row.language}.txt").render(**values)


class TakedownStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(
        self, key: CaseKey, author_id: int, language: str, fields: Mapping[str, str]
    ) -> str:
        if language not in LANGUAGES:
            raise CaseWorkError(
                N_("language must be one of %(choices)s"), choices=", ".join(LANGUAGES)
            )
        request_id = new_record_id()
        now = utcnow()
        row = TakedownRequest(
            id=request_id,
            case_id=key.case_id,
            language=language,
            status=TakedownStatus.DRAFT.value,
            created_by=author_id,
            created_at=now,
            updated_at=now,
            updated_by=author_id,
            sealed=key.seal("takedown", request_id, json.dumps(checked_fields(fields))),
        )

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(TakedownRequest.__table__.insert().values(**row.model_dump()))  # type: ignore[attr-defined]  # SQLModel types __table__ as a plain attribute
            await audit.append(
                conn, actor_of(author_id), AuditAction.TAKEDOWN_DRAFT, key.case_id, request_id
            )

        await audit.with_audit(self._engine, work)
        return request_id

    async def get(self, request_id: str) -> TakedownRequest:
        async with AsyncSession(self._engine) as session:
            row = await session.get(TakedownRequest, request_id)
        if row is None:
            raise CaseWorkError(N_("no such takedown request"))
        return row

    async def for_case(self, case_id: str) -> list[TakedownRequest]:
        query = (
            select(TakedownRequest)
            .where(col(TakedownRequest.case_id) == case_id)
            .order_by(col(TakedownRequest.created_at))
        )
        async with AsyncSession(self._engine) as session:
            return list((await session.exec(query)).all())

    @staticmethod
    def open(key: CaseKey, row: TakedownRequest) -> Draft:
        plain = key.open("takedown", row.id, row.sealed)
        fields = dict.fromkeys(FIELDS, "")
        if plain is not None:
            fields.update(json.loads(plain))
        answer = "" if row.answer is None else key.open("takedown-answer", row.id, row.answer)
        return Draft(row, fields, answer or "")

    async def _move(
        self,
        row: TakedownRequest,
        to: TakedownStatus,
        actor_id: int,
        action: AuditAction,
        values: Mapping[str, object],
        *,
        from_: tuple[TakedownStatus, ...] | None = None,
    ) -> None:
        """One conditional UPDATE from a status that allows `to`, with its audit link."""
        allowed = from_ or tuple(s for s, nexts in _NEXT.items() if to in nexts)

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(TakedownRequest)
                .where(
                    col(TakedownRequest.id) == row.id,
                    col(TakedownRequest.status).in_([s.value for s in allowed]),
                )
                .values(status=to.value, **values)
                .returning(col(TakedownRequest.id))
            )
            if result.first() is None:
                return False
            await audit.append(conn, actor_of(actor_id), action, row.case_id, f"{row.id} {to}")
            return True

        if not await audit.with_audit(self._engine, work):
            if to is TakedownStatus.SENT:
                raise ApprovalRequiredError(N_("only an approved request can be marked sent"))
            raise CaseWorkError(
                N_("a %(status)s request cannot become %(to)s; reload"),
                status=row.status,
                to=to.value,
            )

    async def edit(
        self, key: CaseKey, row: TakedownRequest, editor_id: int, fields: Mapping[str, str]
    ) -> None:
        """New fields; back to draft, so any approval given for the old text is gone."""
        sealed = key.seal("takedown", row.id, json.dumps(checked_fields(fields)))
        values = {
            "sealed": sealed,
            "updated_at": utcnow(),
            "updated_by": editor_id,
            "approved_by": None,
            "approved_at": None,
        }
        await self._move(
            row, TakedownStatus.DRAFT, editor_id, AuditAction.TAKEDOWN_EDIT, values, from_=_EDITABLE
        )

    async def submit(self, draft: Draft, actor_id: int) -> None:
        gaps = missing(draft.fields)
        if gaps:
            raise CaseWorkError(N_("fill in first: %(fields)s"), fields=", ".join(gaps))
        await self._move(
            draft.row, TakedownStatus.AWAITING_APPROVAL, actor_id, AuditAction.TAKEDOWN_SUBMIT, {}
        )

    async def approve(self, row: TakedownRequest, approver_id: int, approver_role: str) -> None:
        if approver_role not in _APPROVER_RANK:
            raise ApprovalRequiredError(N_("only a supervisor approves a takedown request"))
        if approver_id in (row.created_by, row.updated_by):
            raise ApprovalRequiredError(N_("another supervisor approves what you wrote or edited"))
        values = {"approved_by": approver_id, "approved_at": utcnow()}
        await self._move(
            row,
            TakedownStatus.APPROVED,
            approver_id,
            AuditAction.TAKEDOWN_APPROVE,
            values,
            from_=(TakedownStatus.AWAITING_APPROVAL,),
        )

    async def send_back(self, row: TakedownRequest, supervisor_id: int) -> None:
        await self._move(
            row,
            TakedownStatus.DRAFT,
            supervisor_id,
            AuditAction.TAKEDOWN_RETURN,
            {},
            from_=(TakedownStatus.AWAITING_APPROVAL,),
        )

    async def mark_sent(
        self, row: TakedownRequest, sender_id: int, next_check_at: datetime | None
    ) -> None:
        """A person sent the approved text; from now on it is tracked."""
        now = utcnow()
        values = {
            "sent_by": sender_id,
            "sent_at": now,
            "next_check_at": next_check_at or now + RECHECK_AFTER[TakedownStatus.SENT],
        }
        await self._move(
            row,
            TakedownStatus.SENT,
            sender_id,
            AuditAction.TAKEDOWN_SEND,
            values,
            from_=(TakedownStatus.APPROVED,),
        )

    async def record_answer(
        self,
        key: CaseKey,
        row: TakedownRequest,
        actor_id: int,
        *,
        to: TakedownStatus,
        answer: str,
        next_check_at: datetime | None,
    ) -> None:
        if to not in ANSWERS:
            raise CaseWorkError(N_("an answer is answered, removed or refused"))
        text = checked_text(answer, N_("the platform's answer"), required=False)
        values = {
            "answer": key.seal("takedown-answer", row.id, text),
            "next_check_at": next_check_at or utcnow() + RECHECK_AFTER[to],
            "updated_at": utcnow(),
        }
        await self._move(row, to, actor_id, AuditAction.TAKEDOWN_ANSWER, values)

    async def withdraw(self, row: TakedownRequest, actor_id: int) -> None:
        await self._move(row, TakedownStatus.WITHDRAWN, actor_id, AuditAction.TAKEDOWN_EDIT, {})
