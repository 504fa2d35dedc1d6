"""Sealed envelopes: what a report looks like from the moment it leaves the bot.

A report body is encrypted under a fresh per-case data key (ChaCha20-Poly1305). The data key is
sealed to the centre's X25519 public key with HPKE (RFC 9180: DHKEM-X25519, HKDF-SHA256,
ChaCha20-Poly1305). The plaintext routing header (case id, priority, language, channel,
category, coarse age group, key id, time) is bound to both layers: as HPKE `info` and as the
body's associated data, so changing any header field makes the envelope unreadable.

Destroying the wrapped data key of one case makes that case unreadable for good, whatever
other keys survive in backups (crypto-shredding).

WARNING: the bot holds only the public key. Never give `open_envelope` a key on the bot host.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from backend.core.errors import SealingError

ENVELOPE_MAGIC = b"HLS"
ENVELOPE_VERSION = 1
DATA_KEY_BYTES = 32
NONCE_BYTES = 12
_HPKE_INFO_PREFIX = b"hotline/v1/data-key\x00"
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)
_PREAMBLE = struct.Struct(">3sBHH")  # magic, version, header length, wrapped key length


@dataclass(frozen=True)
class RoutingHeader:
    """The only plaintext that travels with a report: enough to route it, nothing a victim said."""

    case_id: str
    priority: int
    language: str
    channel: str
    category: str
    key_id: str
    created_at: str
    # The case a returning victim's request is about (from their receipt), or "" for a new one.
    # Plain so intake can link it without a key; left out of the bytes when empty, so headers
    # of ordinary reports stay as they were.
    follows: str = ""
    # The coarse age group (`conversation.AGE_GROUPS`) the statistics count, or "" where none
    # applies (live chat lines, sealed files, a bot of before issue 16); left out when empty.
    age_group: str = ""

    def to_bytes(self) -> bytes:
        fields = asdict(self)
        for optional in ("follows", "age_group"):
            if not fields[optional]:
                del fields[optional]
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> RoutingHeader:
        try:
            data = json.loads(raw)
            return cls(
                case_id=str(data["case_id"]),
                priority=int(data["priority"]),
                language=str(data["language"]),
                channel=str(data["channel"]),
                category=str(data["category"]),
                key_id=str(data["key_id"]),
                created_at=str(data["created_at"]),
                follows=str(data.get("follows", "")),
                age_group=str(data.get("age_group", "")),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise SealingError("routing header is malformed") from exc


@dataclass(frozen=True)
class Envelope:
    header: RoutingHeader
    header_bytes: bytes
    wrapped_key: bytes
    nonce: bytes
    ciphertext: bytes

    def to_bytes(self) -> bytes:
        preamble = _PREAMBLE.pack(
            ENVELOPE_MAGIC, ENVELOPE_VERSION, len(self.header_bytes), len(self.wrapped_key)
        )
        return preamble + self.header_bytes + self.wrapped_key + self.nonce + self.ciphertext

    @classmethod
    def from_bytes(cls, raw: bytes) -> Envelope:
        if len(raw) < _PREAMBLE.size:
            raise SealingError("envelope is truncated")
        magic, version, header_len, wrapped_len = _PREAMBLE.unpack_from(raw)
        if magic != ENVELOPE_MAGIC or version != ENVELOPE_VERSION:
            raise SealingError("not a hotline envelope of a known version")
        offset = _PREAMBLE.size
        end_header = offset + header_len
        end_wrapped = end_header + wrapped_len
        end_nonce = end_wrapped + NONCE_BYTES
        if len(raw) < end_nonce + 16:  # the AEAD tag alone is 16 bytes
            raise SealingError("envelope is truncated")
        header_bytes = raw[offset:end_header]
        return cls(
            header=RoutingHeader.from_bytes(header_bytes),
            header_bytes=header_bytes,
            wrapped_key=raw[end_header:end_wrapped],
            nonce=raw[end_wrapped:end_nonce],
            ciphertext=raw[end_nonce:],
        )


def seal(body: bytes, header: RoutingHeader, public_key: X25519PublicKey) -> Envelope:
    header_bytes = header.to_bytes()
    data_key = ChaCha20Poly1305.generate_key()
    wrapped_key = _SUITE.encrypt(data_key, public_key, info=_HPKE_INFO_PREFIX + header_bytes)
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(data_key).encrypt(nonce, body, header_bytes)
    return Envelope(header, header_bytes, wrapped_key, nonce, ciphertext)


def unwrap_data_key(envelope: Envelope, private_key: X25519PrivateKey) -> bytes:
    try:
        return _SUITE.decrypt(
            envelope.wrapped_key, private_key, info=_HPKE_INFO_PREFIX + envelope.header_bytes
        )
    except (InvalidTag, ValueError) as exc:
        raise SealingError("data key cannot be unwrapped with this key") from exc


def open_envelope(envelope: Envelope, private_key: X25519PrivateKey) -> bytes:
    data_key = unwrap_data_key(envelope, private_key)
    try:
        return ChaCha20Poly1305(data_key).decrypt(
            envelope.nonce, envelope.ciphertext, envelope.header_bytes
        )
    except (InvalidTag, ValueError) as exc:
        raise SealingError("sealed body is corrupt or was changed") from exc
