"""TOTP second factor for the console (RFC 6238: HMAC-SHA-1, 30 s steps, 6 digits, ±1 step).

Where the secret lives, and why there:
- In the database only sealed (ChaCha20-Poly1305) under a key derived with Argon2id from the
  counselor's password, the same way their centre-key wraps are (`backend.core.keys`). A database
  dump alone therefore gives an attacker no second factor: they would have to crack the
  password first, and a cracked password already opens the sealed cases, so nothing is lost
  that was not lost already. A key kept on the server instead (a setting, a file) would sit
  next to the database on most deployments and add little.
- In memory and in the Redis session (encrypted under the secret in the cookie, like the
  private keys) while the counselor is signed in, so a password change can re-seal it in the
  same transaction as the new hash and key wraps (`CounselorStore.change_password`).
The price: enabling two-factor asks for the password again (it is the sealing key), and an
administrator cannot reset a lost authenticator without the counselor's password; they remove
it (`clear`) and the counselor enrols again.

Replay: the last accepted step is stored per counselor and a code is accepted only for a later
step (one conditional UPDATE, so two nodes cannot both accept the same code).
"""

from __future__ import annotations

import base64
import hmac
import secrets
import struct
import time
from urllib.parse import quote, urlencode

from backend.core import keys
from backend.core.settings import KdfCost

STEP_S = 30
DIGITS = 6
WINDOW_STEPS = 1
SECRET_BYTES = 20  # 160 bits, the size RFC 4226 recommends for HMAC-SHA-1
ISSUER = "hotline"


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_BYTES)


def to_base32(secret: bytes) -> str:
    """The secret as authenticator apps take it when typed in: base32 without padding."""
    return base64.b32encode(secret).decode().rstrip("=")


def provisioning_uri(secret: bytes, account: str) -> str:
    """The otpauth:// URI (Key URI Format) an authenticator app imports."""
    label = quote(f"{ISSUER}:{account}", safe=":")
    query = urlencode(
        {
            "secret": to_base32(secret),
            "issuer": ISSUER,
            "algorithm": "SHA1",
            "digits": DIGITS,
            "period": STEP_S,
        }
    )
    return f"otpauth://totp/{label}?{query}"


def step_at(unix_time: float) -> int:
    return int(unix_time // STEP_S)


def code_at_step(secret: bytes, step: int, *, digits: int = DIGITS, digest: str = "sha1") -> str:
    """HOTP (RFC 4226) of the step counter; `digest` other than SHA-1 only for RFC test vectors."""
    mac = hmac.new(secret, struct.pack(">Q", step), digest).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def matching_step(secret: bytes, code: str, now: float | None = None) -> int | None:
    """The step within ±`WINDOW_STEPS` of now whose code is `code`, or None.

    Every candidate is compared in constant time, so timing says nothing about which matched.
    """
    code = code.strip().replace(" ", "")
    if len(code) != DIGITS or not code.isdigit():
        return None
    current = step_at(time.time() if now is None else now)
    found = None
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        if hmac.compare_digest(code_at_step(secret, step), code):
            found = step
    return found


def _label(counselor_id: int) -> str:
    return f"totp:counselor:{counselor_id}"


def seal_secret(secret: bytes, counselor_id: int, password: str, cost: KdfCost) -> bytes:
    """The secret sealed under the counselor's password, bound to their id; safe to store."""
    return keys.seal_with_password(secret, _label(counselor_id), password, cost).to_bytes()


def open_secret(blob: bytes, counselor_id: int, password: str) -> bytes:
    """Raises `KeyUnwrapError` on a wrong password or a blob moved to another counselor."""
    return keys.open_with_password(keys.WrappedKey.from_bytes(blob), _label(counselor_id), password)
