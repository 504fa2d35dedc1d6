"""The SQL engine: SQLite in the data directory by default, PostgreSQL in production."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from backend import models  # noqa: F401 - registers the tables on SQLModel.metadata

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# The revision whose schema equals what `create_all` made before migrations existed.
BASELINE_REVISION = "0001"
# Any constant: serialises concurrent starts of several backend nodes on one PostgreSQL.
_MIGRATION_LOCK_ID = 0x686F746C  # "hotl"
# Another: serialises their first start (the key pair and the first administrator).
_FIRST_START_LOCK_ID = _MIGRATION_LOCK_ID + 1
# How long a node waits for another's first start or migration on SQLite (Argon2id at
# production cost, twice, is about a second; several nodes queue behind each other).
SQLITE_LOCK_WAIT_MS = 120_000
SQLITE_BUSY_TIMEOUT_MS = 5000


def async_url(url: str) -> str:
    """Pick the asyncio driver for a plain `sqlite://` or `postgresql://` URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    if backend in {"postgresql", "postgres"}:
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return url


def create_engine(url: str) -> AsyncEngine:
    # hide_parameters: a failing statement must not log sealed blobs or routing facts.
    driver_url = async_url(url)
    connect_args: dict[str, str] = {}
    if make_url(driver_url).get_backend_name() == "postgresql":
        # Times are stored as UTC in `timestamp` columns; a server in another time zone would
        # otherwise shift every aware datetime we send, and retention would count from there.
        connect_args["options"] = "-c TimeZone=UTC"
    engine = create_async_engine(
        driver_url, pool_pre_ping=True, hide_parameters=True, connect_args=connect_args
    )
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    # WAL with synchronous=FULL: a committed case survives a crash of the process or the machine.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


async def migrate(engine: AsyncEngine) -> None:
    """Bring the schema to the newest revision; safe to run at every start, on every node."""
    async with exclusive(engine, _MIGRATION_LOCK_ID) as conn:
        await conn.run_sync(_upgrade)


@contextlib.asynccontextmanager
async def first_start_lock(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that one node at a time holds, for a first start's check-and-create."""
    async with exclusive(engine, _FIRST_START_LOCK_ID) as conn:
        yield conn


@contextlib.asynccontextmanager
async def exclusive(engine: AsyncEngine, lock_id: int) -> AsyncIterator[AsyncConnection]:
    """A transaction, committed at the end, that no other node runs at the same time.

    PostgreSQL: a transaction-level advisory lock on `lock_id` (other work goes on). SQLite: an
    exclusive transaction, so the work must happen on this connection (another connection's
    write would wait for it); readers go on under WAL. A waiting node waits its turn, up to
    `SQLITE_LOCK_WAIT_MS`, instead of failing after the usual busy timeout.
    """
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_LOCK_WAIT_MS}")
            try:
                # pysqlite opens no transaction before this statement, so it is the BEGIN.
                await conn.exec_driver_sql("BEGIN EXCLUSIVE")
                yield conn
                await conn.commit()
            finally:
                await conn.rollback()
                await conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            return
        async with conn.begin():
            if conn.dialect.name == "postgresql":
                await conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id})
            yield conn


def _upgrade(conn: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables and "cases" in tables:
        # Made by create_all before migrations existed: it holds the baseline schema.
        command.stamp(config, BASELINE_REVISION)
    command.upgrade(config, "head")


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


async def at_head(engine: AsyncEngine) -> bool:
    """The schema is at the newest revision this code knows (readiness: a node whose
    database is behind, or ahead after a rollback of the code, must not take traffic)."""
    async with engine.connect() as conn:
        current = await conn.run_sync(_current_heads)
    return current == _script_heads()


def _current_heads(conn: Connection) -> set[str]:
    return set(MigrationContext.configure(conn).get_current_heads())


@functools.cache  # the scripts ship with the code: read once
def _script_heads() -> frozenset[str]:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return frozenset(ScriptDirectory.from_config(config).get_heads())
