"""Keys as stored, on every backend pair: rotation, shredding, password changes, the chain."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore, envelope_of
from backend.core import keys
from backend.core.errors import CaseNotFoundError, KeyUnwrapError, SealingError
from backend.core.sealing import Envelope, RoutingHeader, open_envelope, seal
from backend.counselors import CounselorStore
from backend.keyring import KeyRing
from backend.models import Role
from tests.conftest import FAST_KDF

pytestmark = pytest.mark.crypto


def _sealed(case_id: str, kid: str, public: X25519PublicKey, body: bytes) -> Envelope:
    header = RoutingHeader(case_id, 0, "ko", "web", "deepfake", kid, "2026-11-21T00:00:00Z")
    return seal(body, header, public)


async def _centre(engine: AsyncEngine) -> tuple[CounselorStore, KeyRing, int, keys.RecoveryKey]:
    counselors = CounselorStore(engine, FAST_KDF)
    keyring = KeyRing(engine, FAST_KDF)
    admin = await counselors.add(
        "admin", "admin-password", Role.ADMINISTRATOR, must_change_password=False
    )
    assert admin.id is not None
    recovery = keys.new_recovery_key()
    await keyring.create(admin.id, "admin-password", recovery)
    return counselors, keyring, admin.id, recovery


async def test_rotation_keeps_old_cases_readable_for_every_holder(engine: AsyncEngine) -> None:
    counselors, keyring, admin_id, recovery = await _centre(engine)
    old = await keyring.active()
    assert old is not None
    colleague = await counselors.add(
        "kim", "kim-password", Role.COUNSELOR, must_change_password=False
    )
    assert colleague.id is not None
    await keyring.grant(
        colleague.id, "kim-password", await keyring.unwrap_for(admin_id, "admin-password")
    )
    store = CaseStore(engine)
    await store.store_sealed("k-old", _sealed("old-case", old.key_id, old.public_key, b"old"))

    new = await keyring.rotate(admin_id, "admin-password")
    assert new.key_id != old.key_id
    assert (await keyring.active()) == new
    await store.store_sealed("k-new", _sealed("new-case", new.key_id, new.public_key, b"new"))

    # The colleague never saw the rotation; their next sign-in reaches the new key by the
    # chain, and it is wrapped for them on the way (the second unwrap needs no chain).
    for holder_keys in (
        await keyring.unwrap_for(admin_id, "admin-password"),
        await keyring.unwrap_for(colleague.id, "kim-password"),
        await keyring.unwrap_for(colleague.id, "kim-password"),
        await keyring.unwrap_with_recovery(recovery),
    ):
        assert set(holder_keys) == {old.key_id, new.key_id}
        for case_id, body in (("old-case", b"old"), ("new-case", b"new")):
            case = await store.get(case_id)
            assert open_envelope(envelope_of(case), holder_keys[case.key_id]) == body


async def test_shredded_case_is_unreadable_with_every_key(engine: AsyncEngine) -> None:
    _, keyring, admin_id, recovery = await _centre(engine)
    active = await keyring.active()
    assert active is not None
    store = CaseStore(engine)
    envelope = _sealed("doomed", active.key_id, active.public_key, b"what happened")
    await store.store_sealed("k", envelope)
    assert await store.shred("doomed", "test", "victim asked")
    assert not await store.shred("doomed", "test", "again"), "shredding twice is a no-op"

    every_key = await keyring.unwrap_with_recovery(recovery)
    every_key |= await keyring.unwrap_for(admin_id, "admin-password")
    case = await store.get("doomed")
    assert case.status == "purged" and case.wrapped_key is None and case.ciphertext == b""
    with pytest.raises(CaseNotFoundError):
        envelope_of(case)
    # Even with the body from a backup taken before, the row no longer yields the data key.
    from_backup = Envelope(envelope.header, case.header, b"", envelope.nonce, envelope.ciphertext)
    for private in every_key.values():
        with pytest.raises(SealingError):
            open_envelope(from_backup, private)


async def test_password_change_rewraps_without_loss(engine: AsyncEngine) -> None:
    counselors, keyring, admin_id, _ = await _centre(engine)
    await keyring.rotate(admin_id, "admin-password")
    before = await keyring.unwrap_for(admin_id, "admin-password")
    await counselors.change_password(
        admin_id, "a-new-password", keyring.wraps_for(before, "a-new-password")
    )
    after = await keyring.unwrap_for(admin_id, "a-new-password")
    assert {k: keys.private_bytes(v) for k, v in after.items()} == {
        k: keys.private_bytes(v) for k, v in before.items()
    }
    assert len(after) == 2
    with pytest.raises(KeyUnwrapError):
        await keyring.unwrap_for(admin_id, "admin-password")


def test_a_forged_chain_link_is_refused() -> None:
    previous = keys.generate_private_key()
    new = keys.generate_private_key()
    new_kid, prev_kid = keys.key_id(new.public_key()), keys.key_id(previous.public_key())
    blob = keys.seal_to_previous(new, new_kid, previous.public_key(), prev_kid)
    assert (
        keys.key_id(keys.open_from_previous(blob, new_kid, previous, prev_kid).public_key())
        == new_kid
    )
    with pytest.raises(KeyUnwrapError):
        keys.open_from_previous(blob, "another-kid", previous, prev_kid)
    with pytest.raises(KeyUnwrapError):
        keys.open_from_previous(blob, new_kid, keys.generate_private_key(), prev_kid)
