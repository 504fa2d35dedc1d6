"""`hotline up`, `hotline backend`, `hotline bot`: the long-running processes."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from backend.core.settings import Settings
from bot.cli import node

ROLES = {
    "up": frozenset({node.BACKEND, node.BOT}),
    "backend": frozenset({node.BACKEND}),
    "bot": frozenset({node.BOT}),
}


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    asyncio.run(node.serve(settings, ROLES[args.command]))
    return 0


def register(commands: Any) -> None:  # argparse's subparsers action has no public type
    for name, help_text, description in (
        (
            "up",
            "run the backend and the bot in one process on the embedded default",
            "Run everything in one process: SQLite and an embedded Redis server under "
            "HOTLINE_DATA_DIR (default ./hotline-data) unless HOTLINE_DATABASE_URL and "
            "HOTLINE_REDIS_URL are set; the web chat at /chat, the console at /console, and "
            "Telegram when HOTLINE_TELEGRAM_TOKEN is set. The first start in a terminal creates "
            "the centre key pair and prints a first administrator's one-time password and the "
            "recovery key; without a terminal it refuses and says to run `hotline keys init`.",
        ),
        (
            "backend",
            "run the centre: intake, case store and counselor console",
            "Run the backend alone: consume sealed reports from Redis, store them, and serve "
            "the counselor console. Scale out by running several against one database and "
            "Redis.",
        ),
        (
            "bot",
            "run the edge: web chat and Telegram, sealing reports to the centre key",
            "Run the bot alone. It holds only the centre's public key, from "
            "HOTLINE_CENTER_PUBLIC_KEY or the file the backend writes into HOTLINE_DATA_DIR.",
        ),
    ):
        parser = commands.add_parser(name, help=help_text, description=description)
        parser.set_defaults(handler=_serve)
