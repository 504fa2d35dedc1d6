"""The work on an opened case: sealed notes, referrals with consent, replies, its history.

What a counselor writes is sealed under the case's own data key (the key its report is sealed
with, itself wrapped to the centre key), with a fresh nonce and bound to the table, the case and
the record id as associated data, so a row copied to another case or table does not open. Only a
session holding the centre private key can write or read it; crypto-shredding the case (its
wrapped data key destroyed) makes all of it unreadable with the report, in one step.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit
from backend.audit import AuditAction
from backend.cases import envelope_of
from backend.core import replies
from backend.core.errors import N_, CaseWorkError, Phrase, SealingError
from backend.core.sealing import NONCE_BYTES, unwrap_data_key
from backend.models import AuditEntry, Case, CaseNote, CaseReferral, CaseReply, utcnow

MAX_TEXT_CHARS = 8000
# How the victim's consent to a referral was obtained.
CONSENT_METHODS = ("in_chat", "by_phone", "in_person", "in_writing", "guardian")

R = TypeVar("R", bound=SQLModel)


def new_record_id() -> str:
    return secrets.token_hex(16)


class CaseKey:
    """The unwrapped data key of one case, in memory for one request; never stored or logged."""

    def __init__(self, case_id: str, data_key: bytes) -> None:
        self.case_id = case_id
        self._aead = ChaCha20Poly1305(data_key)

    def __repr__(self) -> str:
        return f"CaseKey({self.case_id}, <key hidden>)"

    def _aad(self, kind: str, record_id: str) -> bytes:
        return f"hotline/v1/{kind}/{self.case_id}/{record_id}".encode()

    def seal(self, kind: str, record_id: str, plain: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain.encode(), self._aad(kind, record_id))

    def open(self, kind: str, record_id: str, sealed: bytes) -> str | None:
        try:
            plain = self._aead.decrypt(
                sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], self._aad(kind, record_id)
            )
        except (InvalidTag, ValueError):
            return None
        return plain.decode()


def case_key(case: Case, private_keys: dict[str, X25519PrivateKey]) -> CaseKey:
    """The case's data key with the session's centre keys; SealingError if they cannot open it,
    CaseNotFoundError if the case was erased."""
    private_key = private_keys.get(case.key_id)
    if private_key is None:
        raise SealingError("this session holds no key for the case")
    return CaseKey(case.id, unwrap_data_key(envelope_of(case), private_key))


def checked_text(text: str, what: str, *, required: bool = True) -> str:
    """`what` is a text marked with `N_` ("the note"): the console says it in its language."""
    text = text.strip()
    if required and not text:
        raise CaseWorkError(N_("%(what)s is empty"), what=Phrase(what))
    if len(text) > MAX_TEXT_CHARS:
        raise CaseWorkError(
            N_("%(what)s is longer than %(n)s characters"), what=Phrase(what), n=MAX_TEXT_CHARS
        )
    return text


@dataclass(frozen=True)
class Note:
    id: str
    author_id: int
    created_at: datetime
    text: str


@dataclass(frozen=True)
class Referral:
    id: str
    author_id: int
    created_at: datetime
    service_id: str
    consent: bool
    consent_method: str
    detail: str


@dataclass(frozen=True)
class Reply:
    id: str
    author_id: int
    created_at: datetime
    text: str


@dataclass(frozen=True)
class HistoryEntry:
    at: str
    actor: str
    action: str
    detail: str


def actor_of(counselor_id: int) -> str:
    return f"counselor:{counselor_id}"


class CaseWork:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def _add(
        self, row: SQLModel, actor: str, action: AuditAction, case_id: str, detail: str = ""
    ) -> None:
        """Insert one record and its audit link in one transaction."""

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(insert(type(row)).values(**row.model_dump()))
            await audit.append(conn, actor, action, case_id, detail)

        await audit.with_audit(self._engine, work)

    async def _rows(self, table: type[R], case_id: str) -> Sequence[R]:
        query = (
            select(table)
            .where(col(table.case_id) == case_id)  # type: ignore[attr-defined]  # R is bound to the tables
            .order_by(col(table.created_at))  # type: ignore[attr-defined]  # R: every table has it
        )
        async with AsyncSession(self._engine) as session:
            return (await session.exec(query)).all()

    async def add_note(self, key: CaseKey, author_id: int, text: str) -> str:
        text = checked_text(text, N_("the note"))
        note_id = new_record_id()
        row = CaseNote(
            id=note_id,
            case_id=key.case_id,
            author_id=author_id,
            created_at=utcnow(),
            sealed=key.seal("note", note_id, text),
        )
        await self._add(row, actor_of(author_id), AuditAction.NOTE, key.case_id, note_id)
        return note_id

    async def notes(self, key: CaseKey) -> list[Note]:
        return [
            Note(r.id, r.author_id, r.created_at, key.open("note", r.id, r.sealed) or "?")
            for r in await self._rows(CaseNote, key.case_id)
        ]

    async def add_referral(
        self,
        key: CaseKey,
        author_id: int,
        *,
        service_id: str,
        services: frozenset[str],
        consent: bool,
        consent_method: str,
        detail: str,
    ) -> str:
        if service_id not in services:
            raise CaseWorkError(N_("no such service in the resource directory"))
        if consent_method not in CONSENT_METHODS:
            raise CaseWorkError(N_("say how the consent was obtained"))
        detail = checked_text(detail, N_("the detail"), required=False)
        referral_id = new_record_id()
        row = CaseReferral(
            id=referral_id,
            case_id=key.case_id,
            author_id=author_id,
            created_at=utcnow(),
            service_id=service_id,
            consent=consent,
            consent_method=consent_method,
            sealed=key.seal("referral", referral_id, detail),
        )
        summary = f"{service_id} consent={'yes' if consent else 'no'} ({consent_method})"
        await self._add(row, actor_of(author_id), AuditAction.REFERRAL, key.case_id, summary)
        return referral_id

    async def referrals(self, key: CaseKey) -> list[Referral]:
        return [
            Referral(
                r.id,
                r.author_id,
                r.created_at,
                r.service_id,
                r.consent,
                r.consent_method,
                key.open("referral", r.id, r.sealed) or "",
            )
            for r in await self._rows(CaseReferral, key.case_id)
        ]

    async def add_reply(
        self, key: CaseKey, author_id: int, text: str, victim_key: X25519PublicKey
    ) -> bytes:
        """Store a reply for the returning victim; the copy sealed to them, for delivery."""
        text = checked_text(text, N_("the reply"))
        reply_id = new_record_id()
        for_victim = replies.seal_for_victim(text, victim_key, key.case_id)
        row = CaseReply(
            id=reply_id,
            case_id=key.case_id,
            author_id=author_id,
            created_at=utcnow(),
            sealed=key.seal("reply", reply_id, text),
            for_victim=for_victim,
        )
        await self._add(row, actor_of(author_id), AuditAction.REPLY, key.case_id, reply_id)
        return for_victim

    async def replies(self, key: CaseKey) -> list[Reply]:
        return [
            Reply(r.id, r.author_id, r.created_at, key.open("reply", r.id, r.sealed) or "?")
            for r in await self._rows(CaseReply, key.case_id)
        ]

    async def history(self, case_id: str) -> list[HistoryEntry]:
        """Every audit link about the case, oldest first: claims, status changes, unseals..."""
        query = (
            select(AuditEntry)
            .where(col(AuditEntry.subject) == case_id)
            .order_by(col(AuditEntry.seq))
        )
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()
        return [HistoryEntry(r.at, r.actor, r.action, r.detail) for r in rows]

    async def follow_ups(self, case_id: str) -> Sequence[Case]:
        """The requests a victim sent later with this case's receipt, oldest first."""
        query = select(Case).where(col(Case.follows) == case_id).order_by(col(Case.received_at))
        async with AsyncSession(self._engine) as session:
            return (await session.exec(query)).all()
