"""`hotline`: the one command. Settings problems are one clear line and exit status 2.

Each group of subcommands lives in its own module with a `register(commands)` function that adds
its parsers and sets `handler` (settings, args -> exit status) on each; `COMMAND_MODULES` lists
them, so a new capability adds a module and one line here.

This package (with `node.py`, the composition root) is the only part of `bot` that may import the
centre: the rest of `bot` is the edge and imports only `backend.core` and `backend.flows`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from backend.core.errors import SettingsError
from backend.core.json_logs import JsonLinesFormatter
from backend.core.settings import Settings
from backend.log_repeats import limit_repeats
from bot.cli import audit, case, counselor, flows, keys, migrate, serve

EXIT_SETTINGS = 2

DESCRIPTION = (
    "Anonymous reporting chatbot and 24/7 hotline backend for victims of digital sex crimes. "
    "Settings come from HOTLINE_* environment variables (see docs/settings.md)."
)

COMMAND_MODULES: tuple[ModuleType, ...] = (
    serve,
    flows,
    keys,
    counselor,
    case,
    audit,
    migrate,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hotline", description=DESCRIPTION)
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonLinesFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    # A flood must not turn one failing line into thousands (issue 18).
    limit_repeats()
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
    # transitions and alembic (two lines at every start) are noise, not risk.
    for quiet in (*quiet_loggers, "transitions", "alembic"):
        logging.getLogger(quiet).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    configure_logging(args.log_level, settings.log_format)
    try:
        status: int = args.handler(settings, args)
    except SettingsError as exc:
        print(f"hotline: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except KeyboardInterrupt:
        return 0
    return status


if __name__ == "__main__":
    sys.exit(main())
