"""Counselor accounts: Argon2id password hashes, roles, and the first administrator."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from argon2 import PasswordHasher
from sqlalchemy import delete, func, insert, or_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import audit, passwords, totp
from backend.audit import AuditAction
from backend.core.errors import AuthenticationError
from backend.core.settings import KdfCost
from backend.kdf_slots import KdfSlots
from backend.keyring import counselor_holder
from backend.models import Counselor, Role, WrappedPrivateKey

# Verified against when the username is unknown, so both failures take the same time.
_DUMMY_PASSWORD = "hotline-dummy-password"  # noqa: S105 - never a real credential


class CounselorStore:
    def __init__(self, engine: AsyncEngine, cost: KdfCost, slots: KdfSlots | None = None) -> None:
        self._engine = engine
        self._cost = cost
        self._slots = slots or KdfSlots(2)
        self._hasher: PasswordHasher = passwords.hasher(cost)
        self._dummy_hash = self._hasher.hash(_DUMMY_PASSWORD)

    async def add(
        self, username: str, password: str, role: Role, *, must_change_password: bool
    ) -> Counselor:
        counselor = Counselor(
            username=username,
            password_hash=self._hasher.hash(password),
            role=role.value,
            must_change_password=must_change_password,
        )
        async with AsyncSession(self._engine, expire_on_commit=False) as session:
            session.add(counselor)
            await session.commit()
        return counselor

    async def count(self) -> int:
        async with AsyncSession(self._engine) as session:
            return (await session.exec(select(func.count()).select_from(Counselor))).one()

    async def get(self, counselor_id: int) -> Counselor | None:
        async with AsyncSession(self._engine) as session:
            return await session.get(Counselor, counselor_id)

    async def authenticate(self, username: str, password: str) -> Counselor:
        async with AsyncSession(self._engine) as session:
            found = (
                await session.exec(select(Counselor).where(Counselor.username == username))
            ).first()
        # A deactivated account signs in no more; it costs a hash all the same.
        usable = found is not None and found.active
        stored = found.password_hash if found is not None and usable else self._dummy_hash
        right = await self._slots.run(passwords.verify, self._hasher, stored, password)
        if found is None or not usable or not right:
            raise AuthenticationError("login failed")
        return found

    async def change_password(
        self,
        counselor_id: int,
        password: str,
        wraps: dict[str, bytes],
        totp_secret: bytes | None = None,
    ) -> None:
        """Set a new password, the key wraps and the TOTP secret sealed for it, in one transaction.

        All or nothing: a new hash with old wraps or an old TOTP seal (or the reverse) would lock
        the counselor out of every sealed case, or out of their second factor.
        """
        holder = counselor_holder(counselor_id)
        password_hash = await self._slots.run(self._hasher.hash, password)
        sealed_totp = (
            None
            if totp_secret is None
            else await self._slots.run(
                totp.seal_secret, totp_secret, counselor_id, password, self._cost
            )
        )
        async with AsyncSession(self._engine) as session:
            counselor = await session.get(Counselor, counselor_id)
            if counselor is None:
                raise AuthenticationError("no such counselor")
            counselor.password_hash = password_hash
            counselor.must_change_password = False
            if sealed_totp is not None:
                counselor.totp_secret = sealed_totp
            session.add(counselor)
            existing = {
                row.key_id: row
                for row in (
                    await session.exec(
                        select(WrappedPrivateKey).where(WrappedPrivateKey.holder == holder)
                    )
                ).all()
            }
            for kid, blob in wraps.items():
                row = existing.get(kid) or WrappedPrivateKey(key_id=kid, holder=holder, blob=blob)
                row.blob = blob
                session.add(row)
            await session.commit()

    async def enable_totp(self, counselor_id: int, password: str, secret: bytes, step: int) -> None:
        """Store the secret sealed under `password`, with the confirming step already used."""
        sealed = await self._slots.run(totp.seal_secret, secret, counselor_id, password, self._cost)

        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                update(Counselor)
                .where(col(Counselor.id) == counselor_id)
                .values(totp_secret=sealed, totp_last_step=step)
            )
            await audit.append(
                conn, counselor_holder(counselor_id), AuditAction.TOTP_ENABLE, str(counselor_id)
            )

        await audit.with_audit(self._engine, work)

    async def disable_totp(self, counselor_id: int, actor: str) -> None:
        async def work(conn: AsyncConnection) -> None:
            await conn.execute(
                update(Counselor)
                .where(col(Counselor.id) == counselor_id)
                .values(totp_secret=None, totp_last_step=None)
            )
            await audit.append(conn, actor, AuditAction.TOTP_DISABLE, str(counselor_id))

        await audit.with_audit(self._engine, work)

    async def by_username(self, username: str) -> Counselor | None:
        async with AsyncSession(self._engine) as session:
            query = select(Counselor).where(Counselor.username == username)
            return (await session.exec(query)).first()

    async def reset(
        self, counselor_id: int, password: str, wraps: dict[str, bytes], actor: str
    ) -> None:
        """A lost password or authenticator: a new one-time password, the keys wrapped for it,
        two-factor off until the counselor enrols again, and an audit link, all or nothing.

        The old wraps go: they open under the old password, which may be what was lost (or
        stolen). The second factor goes too: its secret is sealed under the old password.
        """
        holder = counselor_holder(counselor_id)
        password_hash = await self._slots.run(self._hasher.hash, password)

        async def work(conn: AsyncConnection) -> None:
            changed = await conn.execute(
                update(Counselor)
                .where(col(Counselor.id) == counselor_id)
                .values(
                    password_hash=password_hash,
                    must_change_password=True,
                    totp_secret=None,
                    totp_last_step=None,
                )
            )
            if changed.rowcount != 1:
                raise AuthenticationError("no such counselor")
            await conn.execute(
                delete(WrappedPrivateKey).where(col(WrappedPrivateKey.holder) == holder)
            )
            for kid, blob in wraps.items():
                await conn.execute(
                    insert(WrappedPrivateKey).values(key_id=kid, holder=holder, blob=blob)
                )
            await audit.append(conn, actor, AuditAction.ACCOUNT_RESET, str(counselor_id))

        await audit.with_audit(self._engine, work)

    async def open_totp_secret(self, counselor: Counselor, password: str) -> bytes | None:
        """The counselor's TOTP secret, opened with their password off the event loop."""
        if counselor.totp_secret is None or counselor.id is None:
            return None
        return await self._slots.run(
            totp.open_secret, counselor.totp_secret, counselor.id, password
        )

    async def use_totp_step(self, counselor_id: int, step: int) -> bool:
        """Mark `step` used; False if it (or a later one) was used already: a replayed code."""
        async with self._engine.begin() as conn:
            result = await conn.execute(
                update(Counselor)
                .where(col(Counselor.id) == counselor_id)
                .where(
                    or_(
                        col(Counselor.totp_last_step).is_(None),
                        col(Counselor.totp_last_step) < step,
                    )
                )
                .values(totp_last_step=step)
            )
        return bool(result.rowcount == 1)

    async def roster(self) -> list[Colleague]:
        """Every active counselor's id, username and role, by username: who a case can go to."""
        query = (
            select(col(Counselor.id), col(Counselor.username), col(Counselor.role))
            .where(col(Counselor.active).is_(True))
            .order_by(col(Counselor.username))
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Colleague(cast(int, row[0]), row[1], row[2]) for row in rows]


@dataclass(frozen=True)
class Colleague:
    """A counselor as other counselors see them: no hash, no key, no second factor."""

    id: int
    username: str
    role: str
