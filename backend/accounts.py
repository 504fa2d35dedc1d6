"""Administering counselor accounts: list, add, change a role, deactivate, reset.

An administrator's signed-in session holds the centre private keys, so adding or resetting an
account wraps them for a new one-time password (shown once). Deactivating an account takes
everything from it in one transaction: no sign-in (the row stays, for the audit log's actors),
no key wraps, and the cases it held back in the queue; its sessions are ended by the caller,
in Redis, right after. The last active administrator can be neither deactivated nor demoted,
so the centre can never lock itself out of its own administration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col

from backend import audit, passwords
from backend.audit import AuditAction
from backend.core.errors import N_, HotlineError
from backend.counselors import CounselorStore
from backend.keyring import KeyRing, counselor_holder
from backend.models import Case, CaseStatus, Counselor, Role, WrappedPrivateKey, utcnow

USERNAME_MAX = 64


class AccountError(HotlineError):
    """An account change was refused: unknown account, a taken name, or the last administrator."""


@dataclass(frozen=True)
class Account:
    id: int
    username: str
    role: str
    active: bool
    two_factor: bool
    created_at: datetime


@dataclass(frozen=True)
class Deactivated:
    """What a deactivation moved: the cases back in the queue (for the waiting line)."""

    requeued: list[str]


class AccountAdmin:
    def __init__(self, engine: AsyncEngine, counselors: CounselorStore, keyring: KeyRing) -> None:
        self._engine = engine
        self._counselors = counselors
        self._keyring = keyring

    async def accounts(self) -> list[Account]:
        query = select(
            col(Counselor.id),
            col(Counselor.username),
            col(Counselor.role),
            col(Counselor.active),
            col(Counselor.totp_secret).is_not(None),
            col(Counselor.created_at),
        ).order_by(col(Counselor.username))
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Account(cast(int, r[0]), r[1], r[2], bool(r[3]), bool(r[4]), r[5]) for r in rows]

    async def add(
        self, username: str, role: Role, private_keys: dict[str, X25519PrivateKey], actor: str
    ) -> tuple[Account, str]:
        """A new account and its one-time password (to show once, never stored in clear)."""
        username = username.strip()
        if not username or len(username) > USERNAME_MAX or not username.isprintable():
            raise AccountError(N_("a username is 1 to %(n)s printable characters"), n=USERNAME_MAX)
        password = passwords.one_time_password()
        try:
            added = await self._counselors.add(username, password, role, must_change_password=True)
        except IntegrityError:
            raise AccountError(N_("an account named “%(name)s” exists"), name=username) from None
        if added.id is None:  # pragma: no cover - the database assigns it on commit
            raise AccountError(N_("the account was not stored"))
        await self._keyring.grant(added.id, password, private_keys)
        await audit.record(
            self._engine, actor, AuditAction.ACCOUNT_ADD, f"counselor:{added.id}", role.value
        )
        return Account(added.id, username, role.value, True, False, added.created_at), password

    async def change_role(self, counselor_id: int, role: Role, actor: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            current = await _active_role(conn, counselor_id)
            if current == Role.ADMINISTRATOR.value and role is not Role.ADMINISTRATOR:
                await _not_the_last_administrator(conn)
            await conn.execute(
                update(Counselor).where(col(Counselor.id) == counselor_id).values(role=role.value)
            )
            await audit.append(
                conn, actor, AuditAction.ACCOUNT_ROLE, f"counselor:{counselor_id}", role.value
            )

        await audit.with_audit(self._engine, work)

    async def deactivate(self, counselor_id: int, actor: str) -> Deactivated:
        """No sign-in, no key wraps, the cases back in the queue; all or nothing."""

        async def work(conn: AsyncConnection) -> list[str]:
            current = await _active_role(conn, counselor_id)
            if current == Role.ADMINISTRATOR.value:
                await _not_the_last_administrator(conn)
            await conn.execute(
                update(Counselor).where(col(Counselor.id) == counselor_id).values(active=False)
            )
            await conn.execute(
                delete(WrappedPrivateKey).where(
                    col(WrappedPrivateKey.holder) == counselor_holder(counselor_id)
                )
            )
            held = (
                await conn.execute(
                    update(Case)
                    .where(
                        col(Case.claimed_by) == counselor_id,
                        col(Case.status).in_([CaseStatus.CLAIMED.value, CaseStatus.ACTIVE.value]),
                    )
                    .values(
                        status=CaseStatus.QUEUED.value,
                        status_changed_at=utcnow(),
                        claimed_by=None,
                    )
                    .returning(col(Case.id))
                )
            ).all()
            requeued = sorted(str(row[0]) for row in held)
            await audit.append(
                conn,
                actor,
                AuditAction.ACCOUNT_DEACTIVATE,
                f"counselor:{counselor_id}",
                f"{len(requeued)} case(s) back to the queue",
            )
            for case_id in requeued:
                await audit.append(conn, actor, AuditAction.RELEASE, case_id, "account deactivated")
            return requeued

        return Deactivated(await audit.with_audit(self._engine, work))

    async def reset(
        self, counselor_id: int, private_keys: dict[str, X25519PrivateKey], actor: str
    ) -> str:
        """A new one-time password, the keys wrapped for it, two-factor off until they enrol."""
        async with self._engine.connect() as conn:
            await _active_role(conn, counselor_id)
        password = passwords.one_time_password()
        wraps = self._keyring.wraps_for(private_keys, password)
        await self._counselors.reset(counselor_id, password, wraps, actor)
        return password


async def _active_role(conn: AsyncConnection, counselor_id: int) -> str:
    row = (
        await conn.execute(
            select(col(Counselor.role)).where(
                col(Counselor.id) == counselor_id, col(Counselor.active).is_(True)
            )
        )
    ).first()
    if row is None:
        raise AccountError(N_("no such active account"))
    return str(row[0])


async def _not_the_last_administrator(conn: AsyncConnection) -> None:
    # FOR UPDATE: two administrators demoting each other at once on PostgreSQL are serialised
    # here, and the second sees the first's change (SQLite serialises every writer anyway).
    admins = (
        await conn.execute(
            select(col(Counselor.id))
            .where(col(Counselor.role) == Role.ADMINISTRATOR.value, col(Counselor.active).is_(True))
            .with_for_update()
        )
    ).all()
    if len(admins) <= 1:
        raise AccountError(N_("the last administrator can be neither removed nor demoted"))
