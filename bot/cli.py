"""`hotline`: the one command. Settings problems are one clear line and exit status 2."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from backend.errors import SettingsError
from backend.settings import Settings
from bot import node

EXIT_SETTINGS = 2

DESCRIPTION = (
    "Anonymous reporting chatbot and 24/7 hotline backend for victims of digital sex crimes. "
    "Settings come from HOTLINE_* environment variables (see the README)."
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description=DESCRIPTION)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "up",
        help="run the backend and the bot in one process on the embedded default",
        description=(
            "Run everything in one process: SQLite and an embedded Redis server under "
            "HOTLINE_DATA_DIR (default ./hotline-data) unless HOTLINE_DATABASE_URL and "
            "HOTLINE_REDIS_URL are set; the web chat at /chat, the console at /console, and "
            "Telegram when HOTLINE_TELEGRAM_TOKEN is set. The first start creates the centre "
            "key pair and prints a first administrator's one-time password and the recovery key."
        ),
    )
    commands.add_parser(
        "backend",
        help="run the centre: intake, case store and counselor console",
        description=(
            "Run the backend alone: consume sealed reports from Redis, store them, and serve the "
            "counselor console. Scale out by running several against one database and Redis."
        ),
    )
    commands.add_parser(
        "bot",
        help="run the edge: web chat and Telegram, sealing reports to the centre key",
        description=(
            "Run the bot alone. It holds only the centre's public key, from "
            "HOTLINE_CENTER_PUBLIC_KEY or the file the backend writes into HOTLINE_DATA_DIR."
        ),
    )
    return parser


ROLES = {
    "up": frozenset({node.BACKEND, node.BOT}),
    "backend": frozenset({node.BACKEND}),
    "bot": frozenset({node.BOT}),
}


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    # Set here too, not only through the root: basicConfig does nothing when the root logger
    # already has a handler (an embedding host, a test runner).
    for own in ("backend", "bot"):
        logging.getLogger(own).setLevel(level)
    # These libraries' INFO and DEBUG records carry what must never reach a log, whatever
    # --log-level says. HTTP clients log request URLs, and a Telegram URL contains the bot
    # token; python-telegram-bot (`telegram` and every `telegram.*` logger below it) logs each
    # Bot API call's parameters and each update: chat and user ids, names, the victim's text.
    # SQLAlchemy's engine logs statements with their parameters (sealed blobs, case ids) when
    # the root level allows it. transitions logs every state change at INFO: hot-path noise.
    quiet_loggers = ("telegram", "httpx", "httpcore", "aiohttp.access", "sqlalchemy", "aiosqlite")
    for quiet in (*quiet_loggers, "transitions"):
        logging.getLogger(quiet).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _configure_logging(args.log_level)
    try:
        settings = Settings.from_env()
        asyncio.run(node.serve(settings, ROLES[args.command]))
    except SettingsError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
