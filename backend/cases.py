"""The case store: sealed reports written exactly once, moved through the status machine.

Invariants:
- a report is stored at most once: unique on its idempotency key and on its case id, written
  with INSERT ... ON CONFLICT DO NOTHING, so a redelivered stream entry changes nothing;
- a status changes only along `models.ALLOWED_TRANSITIONS`, by one conditional UPDATE, so two
  counselors never both claim a case; each change writes its audit link in the same transaction;
- a purged case has no wrapped data key and no ciphertext left: it is unreadable with any key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, delete, func, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit
from backend.audit import AuditAction
from backend.core.conversation import AGE_NOT_SAID
from backend.core.errors import (
    N_,
    CaseNotFoundError,
    CaseTransitionError,
    CaseWorkError,
    LegalHoldError,
    OutcomeRequiredError,
)
from backend.core.sealing import Envelope, RoutingHeader
from backend.models import (
    ALLOWED_TRANSITIONS,
    Case,
    CaseNote,
    CaseReferral,
    CaseReply,
    CaseStatus,
    Outcome,
    Receipt,
    TakedownRequest,
    TranscriptEntry,
    utcnow,
)


@dataclass(frozen=True)
class CaseSummary:
    """What the queue shows: routing facts only, nothing the victim said."""

    id: str
    status: str
    priority: int
    category: str
    language: str
    channel: str
    received_at: datetime
    claimed_by: int | None = None
    status_changed_at: datetime | None = None
    # The victim blocked the bot: replies will not reach them (`Case.victim_unreachable_at`).
    victim_unreachable_at: datetime | None = None


_OPEN_CLAIM = (CaseStatus.CLAIMED.value, CaseStatus.ACTIVE.value)
# CaseSummary's fields, in order, as Case columns.
_SUMMARY_COLUMNS = (
    "id",
    "status",
    "priority",
    "category",
    "language",
    "channel",
    "received_at",
    "claimed_by",
    "status_changed_at",
    "victim_unreachable_at",
)


class CaseRepository(Protocol):
    """The port the intake, the console and retention use; `CaseStore` is its SQL adapter."""

    async def store_many(self, reports: Sequence[tuple[str, Envelope]]) -> list[str]: ...
    async def get(self, case_id: str) -> Case: ...
    async def transition(
        self,
        case_id: str,
        to: CaseStatus,
        actor: str,
        *,
        counselor_id: int | None = None,
        outcome: Outcome | None = None,
    ) -> None: ...
    async def shred(self, case_id: str, actor: str, reason: str) -> bool: ...
    async def mark_victim_unreachable(self, case_ids: Sequence[str]) -> int: ...
    async def raise_priority(self, case_ids: Sequence[str], priority: int) -> int: ...
    async def mark_erase_requested(self, case_ids: Sequence[str]) -> int: ...
    async def join_handoff(self, envelope: Envelope) -> bool: ...
    async def attach_receipts(self, receipts: Sequence[tuple[str, str, str]]) -> int: ...
    async def stored_case_ids(self, case_ids: Sequence[str]) -> set[str]: ...


def _predecessors(to: CaseStatus) -> list[str]:
    return [s.value for s, nexts in ALLOWED_TRANSITIONS.items() if to in nexts]


class CaseStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    def _insert(self) -> Any:  # the two dialects' insert() share no public base type
        return pg_insert if self._engine.dialect.name == "postgresql" else sqlite_insert

    async def store_sealed(self, idempotency_key: str, envelope: Envelope) -> bool:
        """Insert a sealed report once; True if it was new, False if it was already stored."""
        return bool(await self.store_many([(idempotency_key, envelope)]))

    async def store_many(self, reports: Sequence[tuple[str, Envelope]]) -> list[str]:
        """Insert a batch in one statement and one transaction; the ids that were new.

        One multi-row INSERT per stream batch is what lets intake keep up with a burst; a
        replayed entry hits either unique key and is skipped, never stored twice.
        """
        rows: list[dict[str, object]] = []
        seen_keys: set[str] = set()
        seen_ids: set[str] = set()
        now = utcnow()
        for idempotency_key, envelope in reports:
            header = envelope.header
            if idempotency_key in seen_keys or header.case_id in seen_ids:
                continue
            seen_keys.add(idempotency_key)
            seen_ids.add(header.case_id)
            rows.append(
                {
                    "id": header.case_id,
                    "idempotency_key": idempotency_key,
                    "received_at": now,
                    "status_changed_at": now,
                    "status": CaseStatus.QUEUED.value,
                    "priority": header.priority,
                    "language": header.language,
                    "channel": header.channel,
                    "category": header.category,
                    "key_id": header.key_id,
                    "created_at": header.created_at,
                    "header": envelope.header_bytes,
                    "wrapped_key": envelope.wrapped_key,
                    "nonce": envelope.nonce,
                    "ciphertext": envelope.ciphertext,
                    "follows": header.follows or None,
                    "age_group": header.age_group or AGE_NOT_SAID,
                }
            )
        if not rows:
            return []
        statement = (
            self._insert()(Case).values(rows).on_conflict_do_nothing().returning(col(Case.id))
        )
        async with self._engine.begin() as conn:
            result = await conn.execute(statement)
            return [row[0] for row in result]

    async def transition(
        self,
        case_id: str,
        to: CaseStatus,
        actor: str,
        *,
        counselor_id: int | None = None,
        holder: int | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        """Move a case to `to` if the machine allows it from its current status; audited.

        Claiming records `counselor_id`; the conditional UPDATE (a compare-and-set on the status,
        re-checked by PostgreSQL on the locked row and serialised by SQLite) makes a claim atomic.
        With `holder`, a claimed or active case moves only if that counselor holds it (a queued
        one holds nobody): a counselor works on their own cases, a supervisor passes None.
        Closing needs an `outcome` (OutcomeRequiredError without one); reopening clears it.
        """
        if to is CaseStatus.PURGED:
            raise CaseTransitionError("purge a case with shred(), which destroys its data key")
        if to is CaseStatus.CLOSED and outcome is None:
            raise OutcomeRequiredError("closing a case needs an outcome")
        values: dict[str, object] = {"status": to.value, "status_changed_at": utcnow()}
        detail = f"to {to.value}"
        if to is CaseStatus.CLAIMED:
            values["claimed_by"] = counselor_id
        elif to is CaseStatus.QUEUED:
            values["claimed_by"] = None
            values["outcome"] = None
        elif to is CaseStatus.CLOSED and outcome is not None:
            values["outcome"] = outcome.value
            detail += f" ({outcome.value})"
        action = AuditAction.CLAIM if to is CaseStatus.CLAIMED else AuditAction.STATUS
        await self._move(
            case_id,
            _predecessors(to),
            to,
            values=values,
            actor=actor,
            action=action,
            holder=holder,
            detail=detail,
        )

    async def release(self, case_id: str, actor: str, *, holder: int | None = None) -> None:
        """A claimed case back to the queue (not an active one: its chat has begun; transfer
        it instead). `holder` as in `transition`."""
        values: dict[str, object] = {
            "status": CaseStatus.QUEUED.value,
            "status_changed_at": utcnow(),
            "claimed_by": None,
        }
        await self._move(
            case_id,
            [CaseStatus.CLAIMED.value],
            CaseStatus.QUEUED,
            values=values,
            actor=actor,
            action=AuditAction.RELEASE,
            holder=holder,
        )

    async def _move(
        self,
        case_id: str,
        sources: list[str],
        to: CaseStatus,
        *,
        values: dict[str, object],
        actor: str,
        action: AuditAction,
        holder: int | None,
        detail: str | None = None,
    ) -> None:
        """One conditional UPDATE from one of `sources` to `to`, and its audit link."""
        conditions = [col(Case.id) == case_id, col(Case.status).in_(sources)]
        if holder is not None:
            conditions.append(or_(col(Case.claimed_by) == holder, col(Case.claimed_by).is_(None)))

        async def work(conn: AsyncConnection) -> str | None:
            result = await conn.execute(
                update(Case).where(*conditions).values(**values).returning(col(Case.id))
            )
            if result.first() is None:
                return await self._status_of(conn, case_id)
            await audit.append(conn, actor, action, case_id, detail or f"to {to.value}")
            return None

        refused_from = await audit.with_audit(self._engine, work)
        if refused_from is not None:
            raise CaseTransitionError(f"{case_id}: {refused_from} cannot become {to.value}")

    async def transfer(
        self, case_id: str, to_counselor: int, actor: str, *, holder: int | None = None
    ) -> int:
        """Hand a claimed or active case to another counselor; the one who held it.

        A compare-and-set on the holder read in the same transaction: a case that changed hands
        meanwhile is refused, not taken from whoever has it now. With `holder`, only that
        counselor's own case moves (a supervisor passes None).
        """

        async def work(conn: AsyncConnection) -> int | str:
            row = (
                await conn.execute(
                    select(col(Case.status), col(Case.claimed_by)).where(col(Case.id) == case_id)
                )
            ).first()
            if row is None:
                raise CaseNotFoundError(case_id)
            status, current = str(row[0]), row[1]
            if status not in _OPEN_CLAIM or current is None:
                return f"{status} cannot be transferred"
            if holder is not None and current != holder:
                return "held by another counselor"
            if current == to_counselor:
                return "already held by that counselor"
            result = await conn.execute(
                update(Case)
                .where(
                    col(Case.id) == case_id,
                    col(Case.status).in_(_OPEN_CLAIM),
                    col(Case.claimed_by) == current,
                )
                .values(claimed_by=to_counselor)
                .returning(col(Case.id))
            )
            if result.first() is None:
                return "changed meanwhile"
            detail = f"from counselor:{current} to counselor:{to_counselor}"
            await audit.append(conn, actor, AuditAction.TRANSFER, case_id, detail)
            return int(current)

        outcome = await audit.with_audit(self._engine, work)
        if isinstance(outcome, str):
            raise CaseTransitionError(f"{case_id}: {outcome}")
        return outcome

    async def mark_victim_unreachable(self, case_ids: Sequence[str]) -> int:
        """Flag cases whose victim blocked the bot (the first time counts); how many changed.
        Unknown ids (a case not stored, or purged since) are skipped."""
        if not case_ids:
            return 0
        statement = (
            update(Case)
            .where(
                col(Case.id).in_(list(case_ids)),
                col(Case.victim_unreachable_at).is_(None),
                col(Case.status) != CaseStatus.PURGED.value,
            )
            .values(victim_unreachable_at=utcnow())
            .returning(col(Case.id))
        )
        async with self._engine.begin() as conn:
            return len((await conn.execute(statement)).all())

    async def raise_priority(self, case_ids: Sequence[str], priority: int) -> int:
        """Raise cases to `priority` (triage read danger in the victim's later words); how many
        rose. Never lowers one; purged and unknown cases are skipped."""
        if not case_ids:
            return 0
        statement = (
            update(Case)
            .where(
                col(Case.id).in_(list(case_ids)),
                col(Case.priority) < priority,
                col(Case.status) != CaseStatus.PURGED.value,
            )
            .values(priority=priority)
            .returning(col(Case.id))
        )
        async with self._engine.begin() as conn:
            return len((await conn.execute(statement)).all())

    async def join_handoff(self, envelope: Envelope) -> bool:
        """Attach a handoff request to the case it joins (the conversation's report, or its
        earlier request; issue 18); False when that case is not stored (yet), or is shredded.

        The case keeps its category and its report; it rises to the request's priority (never
        lower), and a closed case goes back to the queue, for the victim is asking again. The
        request's envelope replaces an earlier one (the same conversation: the same reply key),
        and the same request delivered twice changes nothing, so intake may retry it."""
        case_id = envelope.header.case_id
        sealed = envelope.to_bytes()

        async def work(conn: AsyncConnection) -> bool:
            row = (
                await conn.execute(
                    select(col(Case.status), col(Case.handoff_envelope), col(Case.priority)).where(
                        col(Case.id) == case_id
                    )
                )
            ).first()
            if row is None or row[0] == CaseStatus.PURGED.value:
                return False
            if row[1] == sealed:
                return True
            values: dict[str, object] = {
                "handoff_envelope": sealed,
                "priority": max(int(row[2]), envelope.header.priority),
            }
            detail = "the victim asked for a counselor"
            if row[0] == CaseStatus.CLOSED.value:
                values.update(
                    status=CaseStatus.QUEUED.value,
                    status_changed_at=utcnow(),
                    claimed_by=None,
                    outcome=None,
                )
                detail += "; reopened"
            await conn.execute(update(Case).where(col(Case.id) == case_id).values(**values))
            await audit.append(conn, "victim", AuditAction.HANDOFF_JOIN, case_id, detail)
            return True

        return await audit.with_audit(self._engine, work)

    async def mark_erase_requested(self, case_ids: Sequence[str]) -> int:
        """The victim asked to erase these cases (with her receipt); how many were marked now.
        Audited, so the request shows in the case's history; purged ones are skipped."""
        marked = 0

        async def work(conn: AsyncConnection) -> int:
            found = await conn.execute(
                update(Case)
                .where(
                    col(Case.id).in_(list(case_ids)),
                    col(Case.erase_requested_at).is_(None),
                    col(Case.status) != CaseStatus.PURGED.value,
                )
                .values(erase_requested_at=utcnow())
                .returning(col(Case.id))
            )
            ids = [row[0] for row in found.all()]
            for case_id in ids:
                await audit.append(conn, "victim", AuditAction.ERASE_REQUEST, case_id)
            return len(ids)

        if case_ids:
            marked = await audit.with_audit(self._engine, work)
        return marked

    async def set_legal_hold(self, case_id: str, actor: str, reason: str) -> None:
        """Keep the case from any shredding (a supervisor's, the CLI's, retention's) until
        released; audited with the reason."""
        reason = " ".join(reason.split())[:200]
        if not reason:
            raise CaseWorkError(N_("a legal hold needs a reason"))

        async def work(conn: AsyncConnection) -> None:
            status = await self._status_of(conn, case_id)
            if status == CaseStatus.PURGED.value:
                raise CaseTransitionError("the case is already shredded")
            await conn.execute(
                update(Case).where(col(Case.id) == case_id).values(legal_hold_reason=reason)
            )
            await audit.append(conn, actor, AuditAction.LEGAL_HOLD, case_id, reason)

        await audit.with_audit(self._engine, work)

    async def release_legal_hold(self, case_id: str, actor: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            await self._status_of(conn, case_id)
            await conn.execute(
                update(Case).where(col(Case.id) == case_id).values(legal_hold_reason=None)
            )
            await audit.append(conn, actor, AuditAction.HOLD_RELEASE, case_id)

        await audit.with_audit(self._engine, work)

    async def erase_requests(self) -> Sequence[Case]:
        """Cases a victim asked to erase that are not shredded yet, oldest request first."""
        query = (
            select(Case)
            .where(
                col(Case.erase_requested_at).is_not(None),
                col(Case.status) != CaseStatus.PURGED.value,
            )
            .order_by(col(Case.erase_requested_at))
        )
        async with AsyncSession(self._engine) as session:
            return (await session.exec(query)).all()

    async def attach_receipts(self, receipts: Sequence[tuple[str, str, str]]) -> int:
        """Keep (code digest, case id, digest scheme) the bot issued, so the console finds a case
        by its code; how many were kept. A case not stored (or purged) gets none. A digest already
        kept moves to the newer case, as the bot's own lookup does (a conversation's code names
        its latest case)."""
        kept = 0
        async with self._engine.begin() as conn:
            for code_digest, case_id, scheme in receipts:
                status = (
                    await conn.execute(select(col(Case.status)).where(col(Case.id) == case_id))
                ).scalar_one_or_none()
                if status is None or status == CaseStatus.PURGED.value:
                    continue
                statement = self._insert()(Receipt).values(
                    digest=code_digest, case_id=case_id, digest_scheme=scheme
                )
                await conn.execute(
                    statement.on_conflict_do_update(
                        index_elements=[col(Receipt.digest)],
                        set_={"case_id": case_id, "issued_at": utcnow(), "digest_scheme": scheme},
                    )
                )
                kept += 1
        return kept

    async def _status_of(self, conn: AsyncConnection, case_id: str) -> str:
        row = (await conn.execute(select(col(Case.status)).where(col(Case.id) == case_id))).first()
        if row is None:
            raise CaseNotFoundError(case_id)
        return str(row[0])

    async def shred(self, case_id: str, actor: str, reason: str) -> bool:
        """Crypto-shred a case: destroy its wrapped data key and body, drop its receipts.

        True if it was shredded now, False if it already was. The routing facts stay, so
        counts and the audit trail still add up.
        """

        async def work(conn: AsyncConnection) -> bool:
            result = await conn.execute(
                update(Case)
                .where(
                    col(Case.id) == case_id,
                    col(Case.status) != CaseStatus.PURGED.value,
                    col(Case.legal_hold_reason).is_(None),
                )
                .values(
                    status=CaseStatus.PURGED.value,
                    status_changed_at=utcnow(),
                    wrapped_key=None,
                    ciphertext=b"",
                    handoff_envelope=None,
                    claimed_by=None,
                )
                .returning(col(Case.id))
            )
            if result.first() is None:
                await self._status_of(conn, case_id)  # CaseNotFoundError if there is none
                held = await conn.execute(
                    select(col(Case.legal_hold_reason)).where(col(Case.id) == case_id)
                )
                if held.scalar_one_or_none() is not None:
                    raise LegalHoldError(case_id)
                return False
            await conn.execute(delete(Receipt).where(col(Receipt.case_id) == case_id))
            # Sealed under the data key just destroyed, so unreadable already; gone all the same.
            for table in (CaseNote, CaseReferral, CaseReply, TakedownRequest, TranscriptEntry):
                await conn.execute(delete(table).where(col(table.case_id) == case_id))
            await audit.append(conn, actor, AuditAction.PURGE, case_id, reason)
            return True

        return await audit.with_audit(self._engine, work)

    async def record(self, actor: str, action: AuditAction, case_id: str, detail: str = "") -> None:
        """An audit link for what changes nothing in the store: an unseal, an export."""
        await audit.record(self._engine, actor, action, case_id, detail)

    async def expired(
        self, retention: Mapping[CaseStatus, timedelta], now: datetime, limit: int
    ) -> list[str]:
        """Ids of cases that have sat in a status longer than that status' retention."""
        clauses = [
            and_(col(Case.status) == status.value, col(Case.status_changed_at) < now - keep)
            for status, keep in retention.items()
            if status is not CaseStatus.PURGED
        ]
        if not clauses:
            return []
        # A case under a legal hold stays, whatever its age.
        held = col(Case.legal_hold_reason).is_(None)
        query = select(col(Case.id)).where(or_(*clauses), held).limit(limit)
        async with self._engine.connect() as conn:
            return [row[0] for row in await conn.execute(query)]

    async def list_open(self) -> Sequence[CaseSummary]:
        return await self._list(
            col(Case.status).not_in([CaseStatus.CLOSED.value, CaseStatus.PURGED.value])
        )

    async def list_waiting(self) -> Sequence[CaseSummary]:
        """The queue: cases nobody holds, most urgent first, then longest waiting first."""
        return await self._list(col(Case.status) == CaseStatus.QUEUED.value)

    async def list_held(self, counselor_id: int | None = None) -> Sequence[CaseSummary]:
        """Claimed and active cases, of one counselor or of everyone."""
        held = col(Case.status).in_(_OPEN_CLAIM)
        if counselor_id is None:
            return await self._list(held)
        return await self._list(and_(held, col(Case.claimed_by) == counselor_id))

    async def _list(self, condition: Any) -> Sequence[CaseSummary]:
        # The routing columns only: a list never loads a sealed body.
        query = (
            select(*(col(getattr(Case, name)) for name in _SUMMARY_COLUMNS))
            .where(condition)
            .order_by(col(Case.priority).desc(), col(Case.received_at))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [CaseSummary(*row) for row in rows]

    async def get(self, case_id: str) -> Case:
        async with AsyncSession(self._engine) as session:
            case = await session.get(Case, case_id)
        if case is None:
            raise CaseNotFoundError(case_id)
        return case

    async def count(self) -> int:
        async with AsyncSession(self._engine) as session:
            return (await session.exec(select(func.count()).select_from(Case))).one()

    async def stored_case_ids(self, case_ids: Sequence[str]) -> set[str]:
        """Which of these cases are stored, in any status (a purged one too): intake holds an
        event about a case not stored yet until it is (issue 14)."""
        if not case_ids:
            return set()
        statement = select(col(Case.id)).where(col(Case.id).in_(list(set(case_ids))))
        async with self._engine.connect() as conn:
            return {str(row[0]) for row in (await conn.execute(statement)).all()}


def envelope_of(case: Case) -> Envelope:
    """Rebuild the sealed envelope of a stored case, to open it in a counselor's session."""
    if case.wrapped_key is None:
        raise CaseNotFoundError(f"{case.id} was erased")
    return Envelope(
        header=RoutingHeader.from_bytes(case.header),
        header_bytes=case.header,
        wrapped_key=case.wrapped_key,
        nonce=case.nonce,
        ciphertext=case.ciphertext,
    )
