"""The centre's keys as stored: public keys in clear, private keys only wrapped per holder."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import keys
from backend.errors import KeyUnwrapError
from backend.models import CenterKey, WrappedPrivateKey
from backend.settings import KdfCost

RECOVERY_HOLDER = "recovery"


def counselor_holder(counselor_id: int) -> str:
    return f"counselor:{counselor_id}"


@dataclass(frozen=True)
class ActiveKey:
    key_id: str
    public_key: X25519PublicKey


class KeyRing:
    def __init__(self, engine: AsyncEngine, cost: KdfCost) -> None:
        self._engine = engine
        self._cost = cost

    async def active(self) -> ActiveKey | None:
        query = (
            select(CenterKey)
            .where(col(CenterKey.active))
            .order_by(col(CenterKey.created_at).desc())
        )
        async with AsyncSession(self._engine) as session:
            row = (await session.exec(query)).first()
        if row is None:
            return None
        return ActiveKey(row.key_id, keys.load_public_key(row.public_key))

    async def create(
        self, first_holder: int, password: str, recovery: keys.RecoveryKey
    ) -> ActiveKey:
        """Make a new centre key pair, wrapped for one counselor and for the recovery key."""
        private = keys.generate_private_key()
        public = private.public_key()
        kid = keys.key_id(public)
        async with AsyncSession(self._engine) as session:
            session.add(CenterKey(key_id=kid, public_key=keys.public_bytes(public)))
            await session.flush()
            session.add(
                WrappedPrivateKey(
                    key_id=kid,
                    holder=counselor_holder(first_holder),
                    blob=keys.wrap_with_password(private, kid, password, self._cost).to_bytes(),
                )
            )
            session.add(
                WrappedPrivateKey(
                    key_id=kid,
                    holder=RECOVERY_HOLDER,
                    blob=keys.wrap_with_recovery(private, kid, recovery).to_bytes(),
                )
            )
            await session.commit()
        return ActiveKey(kid, public)

    async def unwrap_for(self, counselor_id: int, password: str) -> dict[str, X25519PrivateKey]:
        """Every centre private key this counselor holds, by key id; only ever kept in memory."""
        query = select(WrappedPrivateKey).where(
            WrappedPrivateKey.holder == counselor_holder(counselor_id)
        )
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()
        return {
            row.key_id: keys.unwrap(keys.WrappedKey.from_bytes(row.blob), row.key_id, password)
            for row in rows
        }

    def wraps_for(
        self, private_keys: dict[str, X25519PrivateKey], password: str
    ) -> dict[str, bytes]:
        """`private_keys` wrapped under a (new) password, by key id, for `change_password`."""
        return {
            kid: keys.wrap_with_password(private, kid, password, self._cost).to_bytes()
            for kid, private in private_keys.items()
        }

    async def unwrap_with_recovery(self, recovery: str) -> dict[str, X25519PrivateKey]:
        query = select(WrappedPrivateKey).where(WrappedPrivateKey.holder == RECOVERY_HOLDER)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()
        if not rows:
            raise KeyUnwrapError("no key is wrapped for recovery")
        return {
            row.key_id: keys.unwrap(keys.WrappedKey.from_bytes(row.blob), row.key_id, recovery)
            for row in rows
        }
