"""The audit log: append-only and hash-chained, so a changed, deleted or reordered row shows.

Every unseal, claim, export, status change and deletion writes one link, in the same
transaction as the change it records (a change without its link, or the reverse, never
commits). Each link's hash covers its own fields and the previous link's hash; `verify` walks
the chain and names the first link that does not hold.

What the chain cannot show on its own: the newest links cut off the end. Anyone who needs that
keeps a copy of the head hash elsewhere (`hotline audit verify` prints it).

Links hold actors ("counselor:7", "system:retention") and opaque case ids; never anything a
victim said.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from backend.models import AuditEntry

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
# Two nodes appending at once collide on the unique seq/prev_hash; the loser retries after a
# random pause that grows, so a crowd of appenders spreads out instead of colliding again.
APPEND_ATTEMPTS = 12
APPEND_BACKOFF_S = 0.002

T = TypeVar("T")


class AuditAction(StrEnum):
    UNSEAL = "unseal"
    CLAIM = "claim"
    EXPORT = "export"
    STATUS = "status"
    PURGE = "purge"
    KEY_ROTATE = "key-rotate"
    KEY_GRANT = "key-grant"
    TOTP_ENABLE = "totp-enable"
    TOTP_DISABLE = "totp-disable"
    ACCOUNT_RESET = "account-reset"
    NOTE = "note"
    REFERRAL = "referral"
    REPLY = "reply"
    TAKEDOWN_DRAFT = "takedown-draft"
    TAKEDOWN_EDIT = "takedown-edit"
    TAKEDOWN_SUBMIT = "takedown-submit"
    TAKEDOWN_APPROVE = "takedown-approve"
    TAKEDOWN_RETURN = "takedown-return"
    TAKEDOWN_SEND = "takedown-send"
    TAKEDOWN_ANSWER = "takedown-answer"
    RELEASE = "release"
    TRANSFER = "transfer"
    SHIFT_START = "shift-start"
    SHIFT_END = "shift-end"
    RECEIPT_LOOKUP = "receipt-lookup"
    FLOWS_PUBLISH = "flows-publish"
    FLOWS_ROLLBACK = "flows-rollback"
    FLOWS_APPROVE = "flows-approve"
    ACCOUNT_ADD = "account-add"
    ACCOUNT_ROLE = "account-role"
    ACCOUNT_DEACTIVATE = "account-deactivate"
    LOGIN_UNLOCK = "login-unlock"
    BLOCK = "block"
    UNBLOCK = "unblock"
    ERASE_REQUEST = "erase-request"
    HANDOFF_JOIN = "handoff-join"
    LEGAL_HOLD = "legal-hold"
    HOLD_RELEASE = "hold-release"


def link_hash(entry: AuditEntry) -> str:
    """The hash of one link: its own fields and the previous link's hash, canonically encoded."""
    canonical = json.dumps(
        [
            entry.prev_hash,
            entry.seq,
            entry.at,
            entry.actor,
            entry.action,
            entry.subject,
            entry.detail,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


async def append(
    conn: AsyncConnection, actor: str, action: AuditAction, subject: str, detail: str = ""
) -> None:
    """Add one link inside the caller's transaction (run it through `with_audit`)."""
    head = (
        await conn.execute(
            select(col(AuditEntry.seq), col(AuditEntry.hash))
            .order_by(col(AuditEntry.seq).desc())
            .limit(1)
        )
    ).first()
    seq, prev = (head[0] + 1, head[1]) if head is not None else (1, GENESIS_HASH)
    entry = AuditEntry(
        seq=seq,
        at=datetime.now(UTC).isoformat(timespec="microseconds"),
        actor=actor,
        action=action.value,
        subject=subject,
        detail=detail,
        prev_hash=prev,
        hash="",
    )
    entry.hash = link_hash(entry)
    await conn.execute(insert(AuditEntry).values(**entry.model_dump()))


async def with_audit(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """Run `work` (a change plus its `append`) in one transaction, retrying a lost append race.

    `work` must be safe to run again: its changes are rolled back with the failed link.
    """
    for attempt in range(APPEND_ATTEMPTS):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except IntegrityError:
            if attempt == APPEND_ATTEMPTS - 1:
                raise
            log.info("audit: another node appended first; retrying")
            await asyncio.sleep(random.uniform(0, APPEND_BACKOFF_S * 2 ** min(attempt, 6)))  # noqa: S311 - spreading retries, not a secret
    raise AssertionError("unreachable")  # pragma: no cover


async def record(
    engine: AsyncEngine, actor: str, action: AuditAction, subject: str, detail: str = ""
) -> None:
    """Append one link on its own (an unseal or an export changes nothing else)."""

    async def work(conn: AsyncConnection) -> None:
        await append(conn, actor, action, subject, detail)

    await with_audit(engine, work)


@dataclass(frozen=True)
class Verdict:
    links: int
    head_hash: str
    first_broken: int | None = None
    reason: str = ""

    @property
    def intact(self) -> bool:
        return self.first_broken is None


async def verify(engine: AsyncEngine) -> Verdict:
    """Walk the chain from the start; report the first link that does not hold, and why."""
    expected_seq, prev = 1, GENESIS_HASH
    async with engine.connect() as conn:
        rows = await conn.stream(select(AuditEntry).order_by(col(AuditEntry.seq)))
        try:
            async for row in rows:
                entry = AuditEntry.model_validate(row._mapping)
                reason = ""
                if entry.seq != expected_seq:
                    reason, entry.seq = "link is missing (deleted)", expected_seq
                elif entry.prev_hash != prev:
                    reason = "does not follow the link before (moved or inserted)"
                elif link_hash(entry) != entry.hash:
                    reason = "was changed"
                if reason:
                    return Verdict(expected_seq - 1, prev, entry.seq, reason)
                expected_seq, prev = expected_seq + 1, entry.hash
        finally:
            # A server-side cursor left open on an early return would outlive the connection.
            await rows.close()
    return Verdict(expected_seq - 1, prev)
