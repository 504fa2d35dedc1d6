"""Keyed pseudonyms: HMAC-SHA256(purpose key, platform + ":" + platform user id).

Each purpose (session lookup, rate limiting, blocking) has its own key derived from the bot's
root secret, so tables keyed by different purposes cannot be joined. The raw id is never
stored, logged or sent to the backend.
"""

from __future__ import annotations

import hashlib
import hmac
from enum import StrEnum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from backend.core.conversation import Pseudonym


class Purpose(StrEnum):
    SESSION = "session"
    RATE_LIMIT = "rate-limit"
    BLOCKING = "blocking"


def derive_key(root_secret: bytes, label: str) -> bytes:
    return HKDF(hashes.SHA256(), 32, None, b"hotline/v1/" + label.encode()).derive(root_secret)


class Pseudonymizer:
    def __init__(self, root_secret: bytes) -> None:
        self._keys = {p: derive_key(root_secret, "pseudonym/" + p.value) for p in Purpose}

    def __repr__(self) -> str:
        return "Pseudonymizer(<keys hidden>)"

    def pseudonym(self, purpose: Purpose, platform: str, user_id: str) -> Pseudonym:
        message = f"{platform}:{user_id}".encode()
        return Pseudonym(hmac.new(self._keys[purpose], message, hashlib.sha256).hexdigest())
