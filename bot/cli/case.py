"""`hotline case shred ID`: erase one case for real (issue 12, point 5), as a supervisor's
console action does: the crypto-shred in SQL, audited as a purge by the acting administrator,
then everything of the case in Redis (its chat transcript, relay entries, queue place, receipt
and replies). Refused (exit 1) under a legal hold."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from typing import Any

from redis.asyncio import Redis

from backend import erasure
from backend.cases import CaseStore
from backend.core.errors import AuthenticationError, CaseNotFoundError, LegalHoldError
from backend.core.settings import Settings
from backend.counselors import CounselorStore
from backend.embedded_redis import EmbeddedRedis
from bot.cli.keys import EXIT_REFUSED, migrated_engine, read_secret, sign_in_administrator


@contextlib.asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[Redis]:
    """The deployment's Redis: the configured server, or the embedded one (the running node's
    socket if it is up, else started for this command)."""
    if settings.redis_url is not None:
        client = Redis.from_url(settings.redis_url)
        try:
            yield client
        finally:
            await client.aclose()
        return
    embedded = EmbeddedRedis(settings.data_dir / "redis")
    running = embedded.socket_path.exists()
    if not running:
        await embedded.start()
    client = Redis.from_url(embedded.url)
    try:
        yield client
    finally:
        await client.aclose()
        if not running:
            await embedded.stop()


def _shred(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with migrated_engine(settings) as engine:
            counselors = CounselorStore(engine, settings.kdf)
            try:
                secret = read_secret(f"password of {args.admin}: ")
                admin_id = await sign_in_administrator(counselors, args.admin, secret)
            except AuthenticationError:
                print("hotline: sign-in failed (administrators only)", file=sys.stderr)
                return EXIT_REFUSED
            async with _redis(settings) as redis:
                try:
                    shredded = await erasure.shred(
                        CaseStore(engine),
                        redis,
                        args.case_id,
                        f"counselor:{admin_id}",
                        args.reason or "shredded with hotline case shred",
                    )
                except CaseNotFoundError:
                    print(f"hotline: no case {args.case_id}", file=sys.stderr)
                    return EXIT_REFUSED
                except LegalHoldError:
                    print(
                        f"hotline: case {args.case_id} is under a legal hold; release it first",
                        file=sys.stderr,
                    )
                    return EXIT_REFUSED
        print(f"case {args.case_id} " + ("shredded" if shredded else "was already shredded"))
        return 0

    return asyncio.run(run())


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser = commands.add_parser("case", help="act on one case", description="One case.")
    sub = parser.add_subparsers(dest="case_command", required=True, metavar="ACTION")
    shred = sub.add_parser(
        "shred",
        help="erase a case for real (refused under a legal hold)",
        description="Crypto-shred a case (its data key, body and work in the database) and "
        "delete everything of it in Redis: chat transcript, relay entries, queue place, receipt "
        "and replies. Audited as a purge by the administrator named, whose password is read "
        "from the terminal (or one line of standard input). Refused under a legal hold.",
    )
    shred.add_argument("case_id", metavar="ID")
    shred.add_argument("--admin", required=True, help="the acting administrator's username")
    shred.add_argument("--reason", default="", help="said in the audit link")
    shred.set_defaults(handler=_shred)
