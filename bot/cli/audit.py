"""`hotline audit verify`: walk the hash chain of the audit log and name the first broken link."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from backend import audit
from backend.core.settings import Settings
from bot.cli.keys import migrated_engine

EXIT_BROKEN = 1


def _verify(settings: Settings, _args: argparse.Namespace) -> int:
    async def run() -> int:
        async with migrated_engine(settings) as engine:
            verdict = await audit.verify(engine)
        if verdict.intact:
            print(f"audit log intact: {verdict.links} links, head {verdict.head_hash}")
            return 0
        print(
            f"audit log BROKEN at link {verdict.first_broken}: {verdict.reason} "
            f"({verdict.links} links before it hold)"
        )
        return EXIT_BROKEN

    return asyncio.run(run())


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser = commands.add_parser(
        "audit", help="check the audit log", description="The append-only audit log."
    )
    sub = parser.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    verify = sub.add_parser(
        "verify",
        help="check the hash chain; exit 1 and name the first broken link",
        description="Recompute every link of the audit log's hash chain. Prints the number of "
        "links and the head hash (keep it elsewhere to notice links cut off the end), or the "
        "first link that was changed, deleted or moved, and exits 1.",
    )
    verify.set_defaults(handler=_verify)
