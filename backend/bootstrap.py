"""First start of a centre: the key pair, the first administrator and the recovery key."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import database, passwords
from backend.core import keys
from backend.core.errors import NotInitialisedError
from backend.core.settings import KdfCost
from backend.keyring import KeyRing, add_first_key
from backend.models import Counselor, Role

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
    engine: AsyncEngine, cost: KdfCost, data_dir: Path, *, create: bool
) -> FirstStart | None:
    """Create the centre on an empty database; do nothing (return None) on later starts.

    Several backend nodes may start at once on one empty database: the check and the creation
    run in one transaction under `database.first_start_lock`, so one node creates the key pair
    and the first administrator and the others, waiting for the lock, find them made. One
    transaction also means a start that dies half-way leaves nothing half-made.

    `create=False` (a start nobody watches, whose output may land in a log collector): an empty
    database is refused with `NotInitialisedError` rather than have its recovery key printed;
    `hotline keys init`, run once by a person, makes it.
    """
    async with database.first_start_lock(engine) as conn, AsyncSession(bind=conn) as session:
        first = await _create_if_empty(session, cost, create=create)
    active = await KeyRing(engine, cost).active()
    if active is not None:
        write_public_key(data_dir, keys.encode_public_key(active.public_key))
    return first


async def _create_if_empty(
    session: AsyncSession, cost: KdfCost, *, create: bool
) -> FirstStart | None:
    if (await session.exec(select(func.count()).select_from(Counselor))).one() > 0:
        return None
    if not create:
        raise NotInitialisedError(
            "this centre has no key pair yet, and a start without a terminal never prints its "
            "recovery key; run `hotline keys init` once, in a terminal, and keep what it prints"
        )
    password = passwords.one_time_password()
    admin = Counselor(
        username=FIRST_ADMIN,
        password_hash=passwords.hasher(cost).hash(password),
        role=Role.ADMINISTRATOR.value,
        must_change_password=True,
    )
    session.add(admin)
    await session.flush()
    if admin.id is None:  # pragma: no cover - the database assigns it on flush
        raise RuntimeError("first administrator was not stored")
    recovery = keys.new_recovery_key()
    await add_first_key(session, admin.id, password, recovery, cost)
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
