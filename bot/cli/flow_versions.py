"""`hotline flows import|export|versions|rollback`: the published versions, from a terminal or CI.

- `import DIR --message ...` lints the directory, runs its dialog tables and publishes it as a
  new version (exit status 1, and nothing published, on any finding);
- `export VERSION DIR` writes a version's files into a directory (to edit in git);
- `versions` lists every version, the published one marked (`*`), one awaiting approval `?`;
- `rollback VERSION` points back at an earlier version.

Each publish and rollback writes an audit link with the author (`--author`, default the login
name), and tells running workers at once when HOTLINE_REDIS_URL is set (they also look on their
own every few seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from backend.core.errors import FlowError
from backend.core.settings import Settings
from backend.flow_versions import FlowVersionStore, PublishRefusedError
from backend.flows import bundle_files
from bot.cli.keys import migrated_engine

EXIT_REFUSED = 1


@contextlib.asynccontextmanager
async def _store(settings: Settings) -> AsyncIterator[FlowVersionStore]:
    async with migrated_engine(settings) as engine:
        redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
        try:
            yield FlowVersionStore(engine, redis, approval=settings.flows_publish_approval)
        finally:
            if redis is not None:
                await redis.aclose()


def _author(args: argparse.Namespace) -> str:
    name = args.author or getpass.getuser()
    return f"cli:{name}"[:80]


def _import(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        try:
            files = bundle_files.read_directory(Path(args.dir))
        except FlowError as exc:
            print(f"hotline: refused: {exc}", file=sys.stderr)
            return EXIT_REFUSED
        async with _store(settings) as store:
            try:
                published = await store.publish(files, _author(args), args.message)
            except PublishRefusedError as exc:
                for reason in exc.reasons:
                    print(reason)
                print(f"hotline: not published: {exc}", file=sys.stderr)
                return EXIT_REFUSED
            except FlowError as exc:
                print(f"hotline: not published: {exc}", file=sys.stderr)
                return EXIT_REFUSED
        if published.pending:
            print(
                f"version {published.number} ({published.digest[:12]}) waits for a second "
                "administrator's approval (HOTLINE_FLOWS_PUBLISH_APPROVAL)"
            )
            return 0
        print(f"published version {published.number} ({published.digest[:12]})")
        return 0

    return asyncio.run(run())


def _export(settings: Settings, args: argparse.Namespace) -> int:
    target = Path(args.dir)
    if target.exists() and any(target.iterdir()):
        print(f"hotline: {target} is not empty", file=sys.stderr)
        return EXIT_REFUSED

    async def run() -> dict[str, str] | None:
        async with _store(settings) as store:
            try:
                return await store.files(args.version)
            except FlowError as exc:
                print(f"hotline: {exc}", file=sys.stderr)
                return None

    files = asyncio.run(run())
    if files is None:
        return EXIT_REFUSED
    bundle_files.write_directory(files, target)
    print(f"version {args.version}: {len(files)} files written to {target}")
    return 0


def _versions(settings: Settings, _args: argparse.Namespace) -> int:
    async def run() -> int:
        async with _store(settings) as store:
            for v in await store.versions():
                mark = "*" if v.published else ("?" if v.pending else " ")
                when = v.created_at.strftime("%Y-%m-%d %H:%M")
                print(f"{mark} {v.number:>4}  {v.digest[:12]}  {when}  {v.author}  {v.message}")
        return 0

    return asyncio.run(run())


def _rollback(settings: Settings, args: argparse.Namespace) -> int:
    async def run() -> int:
        async with _store(settings) as store:
            try:
                back = await store.rollback(args.version, _author(args))
            except FlowError as exc:
                print(f"hotline: not rolled back: {exc}", file=sys.stderr)
                return EXIT_REFUSED
        print(f"published version {back.number} ({back.digest[:12]}) again")
        return 0

    return asyncio.run(run())


def add_parsers(sub: Any) -> None:  # argparse's subparsers action has no public type
    imported = sub.add_parser(
        "import",
        help="lint, test and publish a flows directory as a new version",
        description="Lint DIR, run its dialog tables (tests/*.test.yaml) and publish it as a new "
        "version that every worker follows; nothing is published on any finding.",
    )
    imported.add_argument("dir", metavar="DIR", help="a flows directory")
    imported.add_argument("--message", "-m", required=True, help="why: shown in `versions`")
    imported.add_argument("--author", help="recorded in the audit log (default: login name)")
    imported.set_defaults(handler=_import)
    exported = sub.add_parser(
        "export",
        help="write a stored version's files into an empty directory",
        description="Write the files of VERSION (a number from `versions`) into DIR.",
    )
    exported.add_argument("version", metavar="VERSION", type=int)
    exported.add_argument("dir", metavar="DIR")
    exported.set_defaults(handler=_export)
    listed = sub.add_parser(
        "versions",
        help="list the stored versions; * marks the published one",
        description="Every stored flow version, newest first: number, digest, time, author, "
        "message; * marks the one victims meet.",
    )
    listed.set_defaults(handler=_versions)
    rollback = sub.add_parser(
        "rollback",
        help="publish an earlier version again",
        description="Point every worker back at VERSION; conversations already running stay "
        "on the version they started on.",
    )
    rollback.add_argument("version", metavar="VERSION", type=int)
    rollback.add_argument("--author", help="recorded in the audit log (default: login name)")
    rollback.set_defaults(handler=_rollback)
