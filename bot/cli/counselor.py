"""`hotline counselor add|reset|unlock`: counselor accounts, with the centre keys wrapped for
them, and lifting a username's sign-in lock."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend import audit, passwords
from backend.core.errors import AuthenticationError, KeyUnwrapError
from backend.core.settings import Settings
from backend.counselors import CounselorStore
from backend.embedded_redis import EmbeddedRedis
from backend.keyring import KeyRing
from backend.login_guard import LoginGuard
from backend.models import Role
from bot.cli.keys import EXIT_REFUSED, migrated_engine, read_secret, sign_in_administrator


async def _authorise(
    args: argparse.Namespace, counselors: CounselorStore, keyring: KeyRing
) -> tuple[str, dict[str, X25519PrivateKey]] | None:
    """The acting administrator (or the recovery key) and the centre keys it opens."""
    try:
        if args.recovery:
            private_keys = await keyring.unwrap_with_recovery(read_secret("recovery key: "))
            return "recovery", private_keys
        secret = read_secret(f"password of {args.admin}: ")
        admin_id = await sign_in_administrator(counselors, args.admin, secret)
        return f"counselor:{admin_id}", await keyring.unwrap_for(admin_id, secret)
    except (AuthenticationError, KeyUnwrapError):
        print("hotline: sign-in failed (administrators or the recovery key only)", file=sys.stderr)
        return None


Authorised = Callable[
    [AsyncEngine, CounselorStore, KeyRing, str, dict[str, X25519PrivateKey]], Awaitable[int]
]


def _as_administrator(settings: Settings, args: argparse.Namespace, work: Authorised) -> int:
    """Run `work` with the stores, the acting administrator and the centre keys it opens."""

    async def run() -> int:
        async with migrated_engine(settings) as engine:
            counselors = CounselorStore(engine, settings.kdf)
            keyring = KeyRing(engine, settings.kdf)
            authorised = await _authorise(args, counselors, keyring)
            if authorised is None:
                return EXIT_REFUSED
            return await work(engine, counselors, keyring, *authorised)

    return asyncio.run(run())


def _add(settings: Settings, args: argparse.Namespace) -> int:
    async def add(
        engine: AsyncEngine,
        counselors: CounselorStore,
        keyring: KeyRing,
        actor: str,
        private_keys: dict[str, X25519PrivateKey],
    ) -> int:
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
        await audit.record(engine, actor, audit.AuditAction.KEY_GRANT, f"counselor:{counselor.id}")
        print(
            f"Counselor {args.username} ({args.role}) added.\n"
            f"  one-time password: {password}  (must be changed at first sign-in)",
            flush=True,
        )
        return 0

    return _as_administrator(settings, args, add)


def _reset(settings: Settings, args: argparse.Namespace) -> int:
    async def reset(
        _engine: AsyncEngine,
        counselors: CounselorStore,
        keyring: KeyRing,
        actor: str,
        private_keys: dict[str, X25519PrivateKey],
    ) -> int:
        counselor = await counselors.by_username(args.username)
        if counselor is None or counselor.id is None:
            print(f"hotline: no counselor named {args.username!r}", file=sys.stderr)
            return EXIT_REFUSED
        password = passwords.one_time_password()
        wraps = keyring.wraps_for(private_keys, password)
        await counselors.reset(counselor.id, password, wraps, actor)
        print(
            f"Counselor {args.username} reset: two-factor sign-in is off until they enrol "
            f"again.\n  one-time password: {password}  (must be changed at first sign-in)",
            flush=True,
        )
        return 0

    return _as_administrator(settings, args, reset)


@contextlib.asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[Redis]:
    """The configured Redis; for `hotline up`'s embedded one, its socket while it runs, or the
    server started here on its files for this command (never a second server beside it)."""
    embedded = None
    if settings.redis_url is None:
        server = EmbeddedRedis(settings.data_dir / "redis")
        probe = Redis.from_url(server.url)
        try:
            await probe.ping()  # `hotline up` is running: use its server
        except (RedisError, OSError):
            await server.start()
            embedded = server
        finally:
            await probe.aclose()
    redis = Redis.from_url(settings.redis_url or EmbeddedRedis(settings.data_dir / "redis").url)
    try:
        yield redis
    finally:
        await redis.aclose()
        if embedded is not None:
            await embedded.stop()


def _unlock(settings: Settings, args: argparse.Namespace) -> int:
    async def unlock(
        engine: AsyncEngine,
        counselors: CounselorStore,
        _keyring: KeyRing,
        actor: str,
        _private_keys: dict[str, X25519PrivateKey],
    ) -> int:
        counselor = await counselors.by_username(args.username)
        if counselor is None or counselor.id is None:
            print(f"hotline: no counselor named {args.username!r}", file=sys.stderr)
            return EXIT_REFUSED
        async with _redis(settings) as redis:
            locked = await LoginGuard(redis, settings.login).unlock(args.username)
        await audit.record(
            engine, actor, audit.AuditAction.LOGIN_UNLOCK, f"counselor:{counselor.id}"
        )
        state = "its failed sign-ins are cleared" if locked else "it had no failed sign-ins"
        print(f"Counselor {args.username} may sign in again: {state}.", flush=True)
        return 0

    return _as_administrator(settings, args, unlock)


def _authorised_by(parser: argparse.ArgumentParser) -> None:
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--admin", help="an administrator's username")
    who.add_argument("--recovery", action="store_true", help="authorise with the recovery key")


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
    _authorised_by(add)
    add.set_defaults(handler=_add)
    reset = sub.add_parser(
        "reset",
        help="a new one-time password for a counselor who lost theirs or their authenticator",
        description="Give a counselor a new one-time password (printed once), wrap the centre "
        "keys for it and switch two-factor sign-in off until they enrol again; their sessions "
        "stay valid until they expire. Authorised as for `add`.",
    )
    reset.add_argument("username")
    _authorised_by(reset)
    reset.set_defaults(handler=_reset)
    unlock = sub.add_parser(
        "unlock",
        help="lift the sign-in lock that failed guesses put on a username",
        description="Clear the count of failed sign-ins for a username, which locks it after "
        "HOTLINE_LOGIN_USERNAME_MAX_FAILURES; the per-address throttle is left as it is. "
        "Audited. Authorised as for `add`.",
    )
    unlock.add_argument("username")
    _authorised_by(unlock)
    unlock.set_defaults(handler=_unlock)
