from __future__ import annotations

import dataclasses

import pytest

from backend.core import keys
from backend.core.errors import SealingError
from backend.core.sealing import Envelope, RoutingHeader, open_envelope, seal

pytestmark = pytest.mark.crypto


def _header(**changes: object) -> RoutingHeader:
    header = RoutingHeader(
        case_id="c" * 32,
        priority=0,
        language="ko",
        channel="web",
        category="deepfake",
        key_id="k" * 16,
        created_at="2026-11-21T00:00:00+00:00",
    )
    return dataclasses.replace(header, **changes)  # type: ignore[arg-type]  # **changes is a test's field overrides


@pytest.mark.parametrize("body", [b"", b"x", b"\xff" * (1024 * 1024)])
def test_round_trip_through_bytes(body: bytes) -> None:
    private = keys.generate_private_key()
    sealed = seal(body, _header(), private.public_key()).to_bytes()
    assert open_envelope(Envelope.from_bytes(sealed), private) == body


def test_no_plaintext_in_the_envelope() -> None:
    marker = "CANARY-무슨일이-7f3a".encode()
    sealed = seal(marker * 4, _header(), keys.generate_private_key().public_key()).to_bytes()
    assert marker not in sealed


def test_wrong_key_is_refused() -> None:
    envelope = seal(b"secret", _header(), keys.generate_private_key().public_key())
    with pytest.raises(SealingError):
        open_envelope(envelope, keys.generate_private_key())


@pytest.mark.parametrize(
    "change", [{"priority": 2}, {"category": "unsure"}, {"key_id": "z" * 16}, {"channel": "kakao"}]
)
def test_changed_header_is_refused(change: dict[str, object]) -> None:
    private = keys.generate_private_key()
    envelope = seal(b"secret", _header(), private.public_key())
    forged_header = _header(**change)
    forged = dataclasses.replace(
        envelope, header=forged_header, header_bytes=forged_header.to_bytes()
    )
    with pytest.raises(SealingError):
        open_envelope(forged, private)


def test_tampered_ciphertext_is_refused() -> None:
    private = keys.generate_private_key()
    envelope = seal(b"secret body", _header(), private.public_key())
    flipped = bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]
    with pytest.raises(SealingError):
        open_envelope(dataclasses.replace(envelope, ciphertext=flipped), private)


@pytest.mark.parametrize("keep", [0, 5, 40, 120])
def test_truncated_envelope_is_refused(keep: int) -> None:
    private = keys.generate_private_key()
    raw = seal(b"secret body", _header(), private.public_key()).to_bytes()
    with pytest.raises(SealingError):
        open_envelope(Envelope.from_bytes(raw[:keep]), private)


@pytest.mark.parametrize("part", ["wrapped_key", "nonce"])
def test_tampered_wrapped_key_or_nonce_is_refused(part: str) -> None:
    private = keys.generate_private_key()
    envelope = seal(b"secret body", _header(), private.public_key())
    if part == "wrapped_key":
        value = envelope.wrapped_key
        changed = dataclasses.replace(envelope, wrapped_key=bytes([value[0] ^ 1]) + value[1:])
    else:
        value = envelope.nonce
        changed = dataclasses.replace(envelope, nonce=bytes([value[0] ^ 1]) + value[1:])
    with pytest.raises(SealingError):
        open_envelope(changed, private)


def test_an_envelope_of_another_version_is_refused() -> None:
    private = keys.generate_private_key()
    raw = bytearray(seal(b"secret", _header(), private.public_key()).to_bytes())
    raw[3] = 99  # the version byte after the magic
    with pytest.raises(SealingError):
        Envelope.from_bytes(bytes(raw))
