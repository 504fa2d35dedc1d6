"""Encryption of the small records kept in Redis: sessions, chat records, replayed answers.

Each record is ChaCha20-Poly1305 under a key derived from a root secret with its own label,
with a fresh nonce, and bound to its Redis key name as associated data, so a record copied to
another key (another conversation) does not open. Anything that does not open, tampered or
sealed under another key, reads as absent: callers start afresh rather than fail a victim.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from backend.core.pseudonyms import derive_key

NONCE_BYTES = 12


class RecordCipher:
    def __init__(self, root_secret: bytes, label: str) -> None:
        self._aead = ChaCha20Poly1305(derive_key(root_secret, label))

    def __repr__(self) -> str:
        return "RecordCipher(<key hidden>)"

    def seal(self, name: str, plain: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plain, name.encode())

    def open(self, name: str, sealed: object) -> bytes | None:
        if not isinstance(sealed, bytes) or len(sealed) <= NONCE_BYTES:
            return None
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], name.encode())
        except InvalidTag:
            return None
