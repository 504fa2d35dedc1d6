"""First start of a centre: the key pair, the first administrator and the recovery key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from backend import passwords
from backend.core import keys
from backend.counselors import CounselorStore
from backend.keyring import KeyRing
from backend.models import Role

FIRST_ADMIN = "admin"
PUBLIC_KEY_FILE = "center-public-key"
RECEIPT_SALT_FILE = "receipt-salt"


@dataclass(frozen=True)
class FirstStart:
    """What must be shown once, on the terminal of whoever started the centre."""

    username: str
    one_time_password: str = field(repr=False)
    recovery_key: keys.RecoveryKey = field(repr=False)


async def ensure_initialised(
    counselors: CounselorStore, keyring: KeyRing, data_dir: Path
) -> FirstStart | None:
    """Create the centre on an empty database; do nothing (return None) on later starts."""
    if await counselors.count() > 0:
        active = await keyring.active()
        if active is not None:
            write_public_key(data_dir, keys.encode_public_key(active.public_key))
        return None
    password = passwords.one_time_password()
    admin = await counselors.add(
        FIRST_ADMIN, password, Role.ADMINISTRATOR, must_change_password=True
    )
    if admin.id is None:  # pragma: no cover - the database assigns it on commit
        raise RuntimeError("first administrator was not stored")
    recovery = keys.new_recovery_key()
    active = await keyring.create(admin.id, password, recovery)
    write_public_key(data_dir, keys.encode_public_key(active.public_key))
    return FirstStart(FIRST_ADMIN, password, recovery)


def write_public_key(data_dir: Path, encoded: str) -> None:
    """Publish the public key where a bot on this host finds it; it is not a secret."""
    _publish(data_dir / PUBLIC_KEY_FILE, encoded)


def read_public_key(data_dir: Path) -> str | None:
    return _read(data_dir / PUBLIC_KEY_FILE)


def write_receipt_salt(data_dir: Path, salt: bytes) -> None:
    """Publish the receipt salt (not a secret) for a bot on this host, as the public key."""
    _publish(data_dir / RECEIPT_SALT_FILE, salt.hex())


def read_receipt_salt(data_dir: Path) -> str | None:
    return _read(data_dir / RECEIPT_SALT_FILE)


def _publish(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    os.replace(tmp, path)


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def announcement(first: FirstStart) -> str:
    """The text shown once on first start (or `hotline keys init`); it holds two secrets."""
    return (
        "First start: a centre key pair and a first administrator were created.\n"
        f"  username:          {first.username}\n"
        f"  one-time password: {first.one_time_password}  (must be changed at first sign-in)\n"
        f"  recovery key:      {first.recovery_key}\n"
        "Write the recovery key down now and keep it offline: it is shown only this once,\n"
        "and it is the only way back into the sealed cases if every password is lost."
    )
