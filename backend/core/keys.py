"""The centre's key pair and the ways its private half is kept wrapped.

The private key is never on disk in clear. It is stored wrapped once per holder:
- per counselor, under a key derived from their password with Argon2id (cost from settings);
- once under the recovery key, a high-entropy secret printed a single time at initialisation.
It is unwrapped only in memory, for a logged-in counselor's session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from typing import NewType

from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backend.core.errors import KeyUnwrapError
from backend.core.settings import KdfCost

RecoveryKey = NewType("RecoveryKey", str)

_SALT_BYTES = 16
_NONCE_BYTES = 12
_RECOVERY_BYTES = 20  # 160 bits: 32 base32 characters, written down in 8 groups of 4


def generate_private_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


def load_public_key(raw: bytes) -> X25519PublicKey:
    return X25519PublicKey.from_public_bytes(raw)


def key_id(key: X25519PublicKey) -> str:
    """A short stable name for a public key, carried in every envelope so rotation works."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def encode_public_key(key: X25519PublicKey) -> str:
    return base64.urlsafe_b64encode(public_bytes(key)).decode().rstrip("=")


def decode_public_key(text: str) -> X25519PublicKey:
    raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
    return load_public_key(raw)


def new_recovery_key() -> RecoveryKey:
    text = base64.b32encode(secrets.token_bytes(_RECOVERY_BYTES)).decode()
    return RecoveryKey("-".join(text[i : i + 4] for i in range(0, len(text), 4)))


@dataclass(frozen=True)
class WrappedKey:
    """A private key encrypted under a key-encryption key; safe to store."""

    method: str  # "argon2id" (a password) or "hkdf" (the recovery key)
    salt: bytes
    nonce: bytes
    ciphertext: bytes
    time_cost: int = 0
    memory_kib: int = 0
    parallelism: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "method": self.method,
                "salt": self.salt.hex(),
                "nonce": self.nonce.hex(),
                "ciphertext": self.ciphertext.hex(),
                "t": self.time_cost,
                "m": self.memory_kib,
                "p": self.parallelism,
            }
        ).encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> WrappedKey:
        data = json.loads(raw)
        return cls(
            method=data["method"],
            salt=bytes.fromhex(data["salt"]),
            nonce=bytes.fromhex(data["nonce"]),
            ciphertext=bytes.fromhex(data["ciphertext"]),
            time_cost=data["t"],
            memory_kib=data["m"],
            parallelism=data["p"],
        )


def _password_kek(password: str, salt: bytes, t: int, m: int, p: int) -> bytes:
    return hash_secret_raw(password.encode(), salt, t, m, p, 32, Type.ID)


def _recovery_kek(recovery: RecoveryKey, salt: bytes) -> bytes:
    normalised = recovery.replace("-", "").replace(" ", "").upper().encode()
    return HKDF(hashes.SHA256(), 32, salt, b"hotline/v1/recovery-kek").derive(normalised)


def wrap_with_password(key: X25519PrivateKey, kid: str, password: str, cost: KdfCost) -> WrappedKey:
    salt = os.urandom(_SALT_BYTES)
    kek = _password_kek(password, salt, cost.time_cost, cost.memory_kib, cost.parallelism)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(kek).encrypt(nonce, private_bytes(key), kid.encode())
    return WrappedKey(
        "argon2id", salt, nonce, ciphertext, cost.time_cost, cost.memory_kib, cost.parallelism
    )


def seal_with_password(plain: bytes, label: str, password: str, cost: KdfCost) -> WrappedKey:
    """Any small secret sealed under a password, bound to `label` (the associated data)."""
    salt = os.urandom(_SALT_BYTES)
    kek = _password_kek(password, salt, cost.time_cost, cost.memory_kib, cost.parallelism)
    nonce = os.urandom(_NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(kek).encrypt(nonce, plain, label.encode())
    return WrappedKey(
        "argon2id", salt, nonce, ciphertext, cost.time_cost, cost.memory_kib, cost.parallelism
    )


def open_with_password(wrapped: WrappedKey, label: str, password: str) -> bytes:
    if wrapped.method != "argon2id":
        raise KeyUnwrapError(f"not sealed under a password ({wrapped.method!r})")
    kek = _password_kek(
        password, wrapped.salt, wrapped.time_cost, wrapped.memory_kib, wrapped.parallelism
    )
    try:
        return ChaCha20Poly1305(kek).decrypt(wrapped.nonce, wrapped.ciphertext, label.encode())
    except InvalidTag:
        raise KeyUnwrapError("wrong password") from None


def wrap_with_recovery(key: X25519PrivateKey, kid: str, recovery: RecoveryKey) -> WrappedKey:
    salt = os.urandom(_SALT_BYTES)
    nonce = os.urandom(_NONCE_BYTES)
    kek = _recovery_kek(recovery, salt)
    return WrappedKey(
        "hkdf", salt, nonce, ChaCha20Poly1305(kek).encrypt(nonce, private_bytes(key), kid.encode())
    )


def unwrap(wrapped: WrappedKey, kid: str, secret: str) -> X25519PrivateKey:
    """Unwrap with a password or, for method "hkdf", the recovery key."""
    if wrapped.method == "argon2id":
        kek = _password_kek(
            secret, wrapped.salt, wrapped.time_cost, wrapped.memory_kib, wrapped.parallelism
        )
    elif wrapped.method == "hkdf":
        kek = _recovery_kek(RecoveryKey(secret), wrapped.salt)
    else:
        raise KeyUnwrapError(f"unknown wrapping method {wrapped.method!r}")
    try:
        raw = ChaCha20Poly1305(kek).decrypt(wrapped.nonce, wrapped.ciphertext, kid.encode())
    except InvalidTag:
        raise KeyUnwrapError("wrong password or recovery key") from None
    return X25519PrivateKey.from_private_bytes(raw)


# Rotation chains keys: the new private key is sealed (HPKE) to the previous public key, so
# whoever holds the previous key (a counselor, the recovery key) can take the new one up at
# next sign-in, without the rotating administrator knowing anyone's password.
_CHAIN_INFO = b"hotline/v1/key-chain\x00"
_CHAIN_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


def seal_to_previous(
    new_key: X25519PrivateKey, new_kid: str, previous: X25519PublicKey, previous_kid: str
) -> bytes:
    info = _CHAIN_INFO + f"{new_kid}<{previous_kid}".encode()
    return _CHAIN_SUITE.encrypt(private_bytes(new_key), previous, info=info)


def open_from_previous(
    blob: bytes, new_kid: str, previous: X25519PrivateKey, previous_kid: str
) -> X25519PrivateKey:
    info = _CHAIN_INFO + f"{new_kid}<{previous_kid}".encode()
    try:
        raw = _CHAIN_SUITE.decrypt(blob, previous, info=info)
    except (InvalidTag, ValueError):
        raise KeyUnwrapError("chained key does not open with the previous key") from None
    opened = X25519PrivateKey.from_private_bytes(raw)
    if key_id(opened.public_key()) != new_kid:
        raise KeyUnwrapError("chained key is not the key it claims to be")
    return opened
