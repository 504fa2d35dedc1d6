"""`hotline migrate`: bring the database to the newest schema and exit.

For deployments that run migrations as a step of their own (compose's `migrate` service, the
Kubernetes Job) before new backends start, so a backend's readiness never waits on a long
migration. Backends still migrate at start (under PostgreSQL's advisory lock); after this it
is a no-op for them.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from backend import database
from backend.core.settings import Settings


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    async def run() -> None:
        engine = database.create_engine(settings.database_url)
        try:
            await database.migrate(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    print("hotline: the database is at the newest schema", flush=True)
    return 0


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    parser = commands.add_parser(
        "migrate",
        help="bring the database to the newest schema and exit",
        description="Run the database migrations (HOTLINE_DATABASE_URL) and exit: the "
        "deployment's migration step, before new backends start. Safe to run again.",
    )
    parser.set_defaults(handler=_migrate)
