from __future__ import annotations

import pytest

from backend.core import keys
from backend.core.errors import KeyUnwrapError
from tests.conftest import FAST_KDF

pytestmark = pytest.mark.crypto


def test_password_wrap_round_trip_and_wrong_password() -> None:
    private = keys.generate_private_key()
    kid = keys.key_id(private.public_key())
    wrapped = keys.WrappedKey.from_bytes(
        keys.wrap_with_password(private, kid, "correct horse", FAST_KDF).to_bytes()
    )
    assert keys.private_bytes(private) not in wrapped.to_bytes()
    assert keys.private_bytes(keys.unwrap(wrapped, kid, "correct horse")) == keys.private_bytes(
        private
    )
    with pytest.raises(KeyUnwrapError):
        keys.unwrap(wrapped, kid, "wrong horse")
    with pytest.raises(KeyUnwrapError):
        keys.unwrap(wrapped, "another-key-id", "correct horse")


def test_recovery_key_unwraps_however_it_is_typed() -> None:
    private = keys.generate_private_key()
    kid = keys.key_id(private.public_key())
    recovery = keys.new_recovery_key()
    wrapped = keys.wrap_with_recovery(private, kid, recovery)
    typed = recovery.lower().replace("-", " ")
    assert keys.private_bytes(keys.unwrap(wrapped, kid, typed)) == keys.private_bytes(private)
    with pytest.raises(KeyUnwrapError):
        keys.unwrap(wrapped, kid, keys.new_recovery_key())


def test_public_key_text_round_trip() -> None:
    public = keys.generate_private_key().public_key()
    assert keys.key_id(keys.decode_public_key(keys.encode_public_key(public))) == keys.key_id(
        public
    )
