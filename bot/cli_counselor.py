"""`hotline counselor add`: a counselor account, with the centre keys wrapped for it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from sqlalchemy.exc import IntegrityError

from backend import audit, passwords
from backend.counselors import CounselorStore
from backend.errors import AuthenticationError, KeyUnwrapError
from backend.keyring import KeyRing
from backend.models import Role
from backend.settings import Settings
from bot.cli_keys import EXIT_REFUSED, migrated_engine, read_secret, sign_in_administrator


def _add(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with migrated_engine(settings) as engine:
            counselors = CounselorStore(engine, settings.kdf)
            keyring = KeyRing(engine, settings.kdf)
            try:
                if args.recovery:
                    actor = "recovery"
                    private_keys = await keyring.unwrap_with_recovery(read_secret("recovery key: "))
                else:
                    secret = read_secret(f"password of {args.admin}: ")
                    admin_id = await sign_in_administrator(counselors, args.admin, secret)
                    actor = f"counselor:{admin_id}"
                    private_keys = await keyring.unwrap_for(admin_id, secret)
            except (AuthenticationError, KeyUnwrapError):
                print(
                    "hotline: sign-in failed (administrators or the recovery key only)",
                    file=sys.stderr,
                )
                return EXIT_REFUSED
            password = passwords.one_time_password()
            try:
                counselor = await counselors.add(
                    args.username, password, Role(args.role), must_change_password=True
                )
            except IntegrityError:
                print(f"hotline: a counselor named {args.username!r} exists", file=sys.stderr)
                return EXIT_REFUSED
            if counselor.id is None:  # pragma: no cover - the database assigns it on commit
                raise RuntimeError("counselor was not stored")
            await keyring.grant(counselor.id, password, private_keys)
            await audit.record(
                engine, actor, audit.AuditAction.KEY_GRANT, f"counselor:{counselor.id}"
            )
            print(
                f"Counselor {args.username} ({args.role}) added.\n"
                f"  one-time password: {password}  (must be changed at first sign-in)",
                flush=True,
            )
            return 0

    return asyncio.run(run())


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser = commands.add_parser(
        "counselor", help="manage counselor accounts", description="Counselor accounts."
    )
    sub = parser.add_subparsers(dest="counselor_command", required=True, metavar="ACTION")
    add = sub.add_parser(
        "add",
        help="add a counselor and wrap the centre keys for them",
        description="Add a counselor with a one-time password (printed once) and wrap every "
        "centre key for them. Authorised by an administrator's password (--admin) or the "
        "recovery key (--recovery), read from the terminal or one line of standard input.",
    )
    add.add_argument("username")
    add.add_argument("--role", choices=[r.value for r in Role], default=Role.COUNSELOR.value)
    who = add.add_mutually_exclusive_group(required=True)
    who.add_argument("--admin", help="an administrator's username")
    who.add_argument("--recovery", action="store_true", help="authorise with the recovery key")
    add.set_defaults(handler=_add)
