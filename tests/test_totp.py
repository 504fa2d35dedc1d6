"""TOTP itself: RFC 6238's test vectors, the ±1 step window, and the secret's sealing."""

from __future__ import annotations

import pytest

from backend import totp
from backend.core.errors import KeyUnwrapError
from tests.conftest import FAST_KDF

# RFC 6238 appendix B: seeds and the 8-digit codes at each time, per hash.
SEEDS = {
    "sha1": b"12345678901234567890",
    "sha256": b"12345678901234567890123456789012",
    "sha512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
VECTORS = [
    (59, {"sha1": "94287082", "sha256": "46119246", "sha512": "90693936"}),
    (1111111109, {"sha1": "07081804", "sha256": "68084774", "sha512": "25091201"}),
    (1111111111, {"sha1": "14050471", "sha256": "67062674", "sha512": "99943326"}),
    (1234567890, {"sha1": "89005924", "sha256": "91819424", "sha512": "93441116"}),
    (2000000000, {"sha1": "69279037", "sha256": "90698825", "sha512": "38618901"}),
    (20000000000, {"sha1": "65353130", "sha256": "77737706", "sha512": "47863826"}),
]


@pytest.mark.parametrize(("unix_time", "codes"), VECTORS)
def test_rfc_6238_vectors(unix_time: int, codes: dict[str, str]) -> None:
    for digest, code in codes.items():
        step = totp.step_at(unix_time)
        assert totp.code_at_step(SEEDS[digest], step, digits=8, digest=digest) == code


def test_six_digit_codes_are_the_low_digits() -> None:
    assert totp.code_at_step(SEEDS["sha1"], totp.step_at(59)) == "287082"


def test_a_code_is_good_one_step_either_side_and_no_further() -> None:
    secret, now = totp.new_secret(), 1_700_000_015.0
    step = totp.step_at(now)
    for offset in (-1, 0, 1):
        code = totp.code_at_step(secret, step + offset)
        assert totp.matching_step(secret, code, now) == step + offset
    for offset in (-2, 2):
        assert totp.matching_step(secret, totp.code_at_step(secret, step + offset), now) is None
    for malformed in ("", "12345", "1234567", "abcdef"):
        assert totp.matching_step(secret, malformed, now) is None
    spaced = totp.code_at_step(secret, step)
    assert totp.matching_step(secret, f" {spaced[:3]} {spaced[3:]} ", now) == step


def test_the_uri_and_base32_carry_the_secret_for_an_app() -> None:
    secret = SEEDS["sha1"]
    assert totp.to_base32(secret) == "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    uri = totp.provisioning_uri(secret, "kim min")
    assert uri.startswith("otpauth://totp/hotline:kim%20min?secret=GEZDGNBVGY3TQOJQ")
    assert "digits=6" in uri and "period=30" in uri and "algorithm=SHA1" in uri


def test_the_sealed_secret_opens_only_with_the_password_for_that_counselor() -> None:
    secret = totp.new_secret()
    blob = totp.seal_secret(secret, 7, "a long passphrase", FAST_KDF)
    assert secret not in blob and secret.hex().encode() not in blob
    assert totp.open_secret(blob, 7, "a long passphrase") == secret
    with pytest.raises(KeyUnwrapError):
        totp.open_secret(blob, 7, "another passphrase")
    with pytest.raises(KeyUnwrapError):
        totp.open_secret(blob, 8, "a long passphrase")  # moved to another counselor's row
