"""`hotline keys init|rotate`: the centre key pair, made once and rotated by an administrator."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from backend import audit, bootstrap, database
from backend.core import keys
from backend.core.errors import AuthenticationError, KeyUnwrapError
from backend.core.settings import Settings
from backend.counselors import CounselorStore
from backend.keyring import KeyRing
from backend.models import Role

EXIT_REFUSED = 1


@asynccontextmanager
async def migrated_engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    """The database, at the newest schema, for one command."""
    engine = database.create_engine(settings.database_url)
    try:
        await database.migrate(engine)
        yield engine
    finally:
        await engine.dispose()


def read_secret(prompt: str) -> str:
    """From the terminal without echo; from standard input (one line) when it is not one."""
    if sys.stdin.isatty():
        return getpass.getpass(prompt)
    return sys.stdin.readline().rstrip("\n")


async def sign_in_administrator(counselors: CounselorStore, username: str, password: str) -> int:
    """The administrator's id; AuthenticationError for a wrong password or another role."""
    counselor = await counselors.authenticate(username, password)
    if counselor.role != Role.ADMINISTRATOR.value or counselor.id is None:
        raise AuthenticationError("not an administrator")
    return counselor.id


def _init(settings: Settings, _args: argparse.Namespace) -> int:
    async def run() -> int:
        async with migrated_engine(settings) as engine:
            counselors = CounselorStore(engine, settings.kdf)
            keyring = KeyRing(engine, settings.kdf)
            if await keyring.active() is not None or await counselors.count() > 0:
                print(
                    "hotline: this centre already has its key pair; "
                    "use `hotline keys rotate` for a new key id",
                    file=sys.stderr,
                )
                return EXIT_REFUSED
            first = await bootstrap.ensure_initialised(
                engine, settings.kdf, settings.data_dir, create=True
            )
            if first is None:  # another node made it meanwhile
                print("hotline: this centre already has its key pair", file=sys.stderr)
                return EXIT_REFUSED
            print(bootstrap.announcement(first), flush=True)
            return 0

    return asyncio.run(run())


def _rotate(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with migrated_engine(settings) as engine:
            counselors = CounselorStore(engine, settings.kdf)
            keyring = KeyRing(engine, settings.kdf)
            password = read_secret(f"password of {args.admin}: ")
            try:
                admin_id = await sign_in_administrator(counselors, args.admin, password)
                await keyring.unwrap_for(admin_id, password)
            except (AuthenticationError, KeyUnwrapError):
                print("hotline: sign-in failed (administrators only)", file=sys.stderr)
                return EXIT_REFUSED
            active = await keyring.rotate(admin_id, password)
            await audit.record(
                engine, f"counselor:{admin_id}", audit.AuditAction.KEY_ROTATE, active.key_id
            )
            encoded = keys.encode_public_key(active.public_key)
            bootstrap.write_public_key(settings.data_dir, encoded)
            print(
                f"New centre key {active.key_id}; older keys stay for the cases sealed to them.\n"
                f"  public key: {encoded}\n"
                "Restart the bots (give remote ones HOTLINE_CENTER_PUBLIC_KEY) to seal to it.",
                flush=True,
            )
            return 0

    return asyncio.run(run())


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser = commands.add_parser(
        "keys",
        help="make or rotate the centre key pair",
        description="The centre's X25519 key pair: reports are sealed to its public key.",
    )
    sub = parser.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    init = sub.add_parser(
        "init",
        help="make the centre key pair and the first administrator; prints the recovery key once",
        description="Make the centre key pair, a first administrator with a one-time password, "
        "and the recovery key, printed this once. Refused when the centre already has a key.",
    )
    init.set_defaults(handler=_init)
    rotate = sub.add_parser(
        "rotate",
        help="start a new key id; old cases stay readable",
        description="Make a new centre key pair for new reports. Old keys stay, so old cases "
        "stay readable; other counselors and the recovery key reach the new key through the "
        "old one at their next sign-in. The administrator's password is read from the "
        "terminal (or one line of standard input).",
    )
    rotate.add_argument("--admin", required=True, help="an administrator's username")
    rotate.set_defaults(handler=_rotate)
