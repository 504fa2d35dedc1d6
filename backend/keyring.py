"""The centre's keys as stored: public keys in clear, private keys only wrapped per holder.

Holders of a wrapping: "counselor:<id>" (under their password), "recovery" (under the recovery
key) and, after a rotation, "chain:<previous key id>" (the new key sealed to the previous public
key). Whoever opens an older key follows the chain to every newer one; a counselor's sign-in
then stores a password wrapping of what they reached, so the chain is walked once per holder.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend.core import keys
from backend.core.errors import KeyUnwrapError
from backend.core.settings import KdfCost
from backend.kdf_slots import KdfSlots
from backend.models import CenterKey, WrappedPrivateKey

RECOVERY_HOLDER = "recovery"
CHAIN_HOLDER_PREFIX = "chain:"


def counselor_holder(counselor_id: int) -> str:
    return f"counselor:{counselor_id}"


@dataclass(frozen=True)
class ActiveKey:
    key_id: str
    public_key: X25519PublicKey


async def add_first_key(
    session: AsyncSession,
    first_holder: int,
    password: str,
    recovery: keys.RecoveryKey,
    cost: KdfCost,
) -> ActiveKey:
    """A new centre key pair, wrapped for one counselor and for the recovery key, added to
    `session` (not committed: first start makes it in one transaction with the administrator)."""
    private = keys.generate_private_key()
    public = private.public_key()
    kid = keys.key_id(public)
    session.add(CenterKey(key_id=kid, public_key=keys.public_bytes(public)))
    await session.flush()
    session.add(
        WrappedPrivateKey(
            key_id=kid,
            holder=counselor_holder(first_holder),
            blob=keys.wrap_with_password(private, kid, password, cost).to_bytes(),
        )
    )
    session.add(
        WrappedPrivateKey(
            key_id=kid,
            holder=RECOVERY_HOLDER,
            blob=keys.wrap_with_recovery(private, kid, recovery).to_bytes(),
        )
    )
    await session.flush()
    return ActiveKey(kid, public)


class KeyRing:
    def __init__(self, engine: AsyncEngine, cost: KdfCost, slots: KdfSlots | None = None) -> None:
        self._engine = engine
        self._cost = cost
        self._slots = slots or KdfSlots(2)

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
        async with AsyncSession(self._engine) as session:
            active = await add_first_key(session, first_holder, password, recovery, self._cost)
            await session.commit()
        return active

    async def unwrap_for(self, counselor_id: int, password: str) -> dict[str, X25519PrivateKey]:
        """Every centre private key this counselor holds, by key id; only ever kept in memory.

        Keys reached through the rotation chain are wrapped for the counselor on the way.
        """
        holder = counselor_holder(counselor_id)
        query = select(WrappedPrivateKey).where(WrappedPrivateKey.holder == holder)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()

        def unwrap_all() -> dict[str, X25519PrivateKey]:
            return {
                row.key_id: keys.unwrap(keys.WrappedKey.from_bytes(row.blob), row.key_id, password)
                for row in rows
            }

        held = await self._slots.run(unwrap_all)
        reached = await self._follow_chain(held)
        if reached:
            await self.grant(counselor_id, password, reached)
        return held | reached

    async def _follow_chain(self, held: dict[str, X25519PrivateKey]) -> dict[str, X25519PrivateKey]:
        """Newer keys that open from `held` through rotation links (not already in `held`)."""
        query = select(WrappedPrivateKey).where(
            col(WrappedPrivateKey.holder).startswith(CHAIN_HOLDER_PREFIX)
        )
        async with AsyncSession(self._engine) as session:
            links = (await session.exec(query)).all()
        known = dict(held)
        reached: dict[str, X25519PrivateKey] = {}
        progress = True
        while progress:
            progress = False
            for link in links:
                previous = link.holder.removeprefix(CHAIN_HOLDER_PREFIX)
                if link.key_id in known or previous not in known:
                    continue
                opened = keys.open_from_previous(link.blob, link.key_id, known[previous], previous)
                known[link.key_id] = reached[link.key_id] = opened
                progress = True
        return reached

    async def grant(
        self, counselor_id: int, password: str, private_keys: dict[str, X25519PrivateKey]
    ) -> None:
        """Wrap keys for a counselor under their password (a new counselor, or chain catch-up)."""
        holder = counselor_holder(counselor_id)
        async with AsyncSession(self._engine) as session:
            existing = set(
                (
                    await session.exec(
                        select(WrappedPrivateKey.key_id).where(WrappedPrivateKey.holder == holder)
                    )
                ).all()
            )
            wraps = await self.wraps_for_async(private_keys, password)
            for kid, blob in wraps.items():
                if kid not in existing:
                    session.add(WrappedPrivateKey(key_id=kid, holder=holder, blob=blob))
            await session.commit()

    async def rotate(self, counselor_id: int, password: str) -> ActiveKey:
        """Start a new key id: new envelopes are sealed to it, old cases keep their old keys.

        The rotating administrator gets a password wrapping; every other holder (counselors,
        the recovery key) reaches the new key through the chain from the previous one.
        """
        current = await self.active()
        private = keys.generate_private_key()
        public = private.public_key()
        kid = keys.key_id(public)
        async with AsyncSession(self._engine) as session:
            for old in (await session.exec(select(CenterKey).where(col(CenterKey.active)))).all():
                old.active = False
                session.add(old)
            session.add(CenterKey(key_id=kid, public_key=keys.public_bytes(public)))
            await session.flush()
            if current is not None:
                session.add(
                    WrappedPrivateKey(
                        key_id=kid,
                        holder=CHAIN_HOLDER_PREFIX + current.key_id,
                        blob=keys.seal_to_previous(
                            private, kid, current.public_key, current.key_id
                        ),
                    )
                )
            session.add(
                WrappedPrivateKey(
                    key_id=kid,
                    holder=counselor_holder(counselor_id),
                    blob=keys.wrap_with_password(private, kid, password, self._cost).to_bytes(),
                )
            )
            await session.commit()
        return ActiveKey(kid, public)

    def wraps_for(
        self, private_keys: dict[str, X25519PrivateKey], password: str
    ) -> dict[str, bytes]:
        """`private_keys` wrapped under a (new) password, by key id, for `change_password`."""
        return {
            kid: keys.wrap_with_password(private, kid, password, self._cost).to_bytes()
            for kid, private in private_keys.items()
        }

    async def wraps_for_async(
        self, private_keys: dict[str, X25519PrivateKey], password: str
    ) -> dict[str, bytes]:
        """`wraps_for` in a KDF slot, off the event loop."""
        return await self._slots.run(self.wraps_for, private_keys, password)

    async def unwrap_with_recovery(self, recovery: str) -> dict[str, X25519PrivateKey]:
        query = select(WrappedPrivateKey).where(WrappedPrivateKey.holder == RECOVERY_HOLDER)
        async with AsyncSession(self._engine) as session:
            rows = (await session.exec(query)).all()
        if not rows:
            raise KeyUnwrapError("no key is wrapped for recovery")
        held = {
            row.key_id: keys.unwrap(keys.WrappedKey.from_bytes(row.blob), row.key_id, recovery)
            for row in rows
        }
        return held | await self._follow_chain(held)
