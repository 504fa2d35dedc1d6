"""First start of a centre (issue 14): safe on several backends at once, and silent about its
secrets where nobody watches the output.

Several backend nodes starting together on one empty database make exactly one key pair and one
first administrator: one creates them under the database's lock, the others wait and find them.
A start whose output is no terminal (a container, whose output lands in a log collector) never
prints the recovery key: it refuses, and `hotline keys init`, run once by a person, is the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import SQLModel

from backend import bootstrap
from backend.core.errors import NotInitialisedError
from backend.core.settings import Settings
from bot import cli
from bot.cli.node import BACKEND, BOT, Node
from tests.conftest import FAST_KDF_ENV, FIRST_START_ENV, Pair, first_start_secret

HOTLINE = str(Path(sys.executable).parent / "hotline")
RECEIPT_SECRET = "a deployment's shared receipt secret"  # noqa: S105 - a test's own
NODES = 4


def _settings(pair: Pair, data_dir: Path, extra: dict[str, str]) -> Settings:
    return Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(data_dir),
            "HOTLINE_DATABASE_URL": pair.database_url,
            "HOTLINE_REDIS_URL": pair.redis_url,
            "HOTLINE_RECEIPT_SECRET": RECEIPT_SECRET,
            **FAST_KDF_ENV,
            **extra,
        }
    )


async def _empty(engine: AsyncEngine) -> None:
    """No table at all, as a new deployment's database: the nodes migrate it too."""
    async with engine.begin() as conn:
        await conn.run_sync(SQLModel.metadata.drop_all)
        await conn.execute(text("DROP TABLE IF EXISTS alembic_version"))


async def _count(engine: AsyncEngine, table: str) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - fixed
        return int(found.scalar_one())


async def test_backends_starting_at_once_on_an_empty_database_make_one_centre(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    await _empty(engine)
    outs = [io.StringIO() for _ in range(NODES)]
    nodes = [
        Node(_settings(pair, tmp_path / f"node{n}", FIRST_START_ENV), frozenset({BACKEND}), out)
        for n, out in enumerate(outs)
    ]
    async with contextlib.AsyncExitStack() as stack:
        for node in nodes:
            await stack.enter_async_context(node)
        await asyncio.gather(*(node.build() for node in nodes))

        assert await _count(engine, "center_keys") == 1
        assert await _count(engine, "counselors") == 1
        assert await _count(engine, "wrapped_private_keys") == 2, "the admin's and recovery's"
        announced = [out.getvalue() for out in outs if "recovery key:" in out.getvalue()]
        assert len(announced) == 1, "one node made the centre and said so"
        published = {bootstrap.read_public_key(tmp_path / f"node{n}") for n in range(NODES)}
        assert len(published) == 1 and None not in published, "every node found the same key"


@contextlib.contextmanager
def _terminal() -> Iterator[tuple[TextIO, int]]:
    """A real pseudo-terminal, as `hotline up` started by a person writes to, and the end that
    reads what was shown on it."""
    controller, device = os.openpty()
    os.set_blocking(controller, False)
    try:
        with open(device, "w", encoding="utf-8", closefd=False) as out:
            yield out, controller
    finally:
        os.close(device)
        os.close(controller)


def _shown(controller: int) -> str:
    try:
        return os.read(controller, 1 << 16).decode()
    except BlockingIOError:
        return ""


async def test_a_start_at_a_terminal_prints_the_secrets_as_before(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine
) -> None:
    with _terminal() as (out, controller):
        async with Node(_settings(pair, tmp_path / "data", {}), frozenset({BACKEND}), out) as node:
            await node.build()
        shown = _shown(controller)
    first_start_secret(shown, "one-time password")
    first_start_secret(shown, "recovery key")
    assert await _count(engine, "center_keys") == 1


@pytest.mark.usefixtures("redis")
async def test_a_start_without_a_terminal_refuses_and_keys_init_is_the_step(
    pair: Pair,
    tmp_path: Path,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = io.StringIO()
    unwatched = Node(_settings(pair, tmp_path / "data", {}), frozenset({BACKEND, BOT}), out)
    with pytest.raises(NotInitialisedError, match="run `hotline keys init` once"):
        async with unwatched:
            await unwatched.build()
    assert "recovery key" not in out.getvalue() and out.getvalue() == ""
    assert await _count(engine, "counselors") == 0, "nothing half-made"

    # A terminal does not help when the deployment says never (a container run with -t).
    with _terminal() as (terminal, controller):
        refusing = Node(
            _settings(pair, tmp_path / "data", {"HOTLINE_FIRST_START": "refuse"}),
            frozenset({BACKEND}),
            terminal,
        )
        with pytest.raises(NotInitialisedError):
            async with refusing:
                await refusing.build()
        assert "recovery key" not in _shown(controller)

    # The documented step, run once by a person; then the unwatched start works, silently.
    for name, value in {**FAST_KDF_ENV, "HOTLINE_RECEIPT_SECRET": RECEIPT_SECRET}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", pair.database_url)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert await asyncio.to_thread(cli.main, ["keys", "init"]) == 0
    printed = capsys.readouterr().out
    first_start_secret(printed, "recovery key")
    again = io.StringIO()
    node = Node(_settings(pair, tmp_path / "data", {}), frozenset({BACKEND, BOT}), again)
    async with node:
        await node.build()
    assert "recovery key" not in again.getvalue()


def test_hotline_up_into_a_pipe_refuses_with_the_step_to_take(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    result = subprocess.run(
        [HOTLINE, "up"],
        env=clean | FAST_KDF_ENV | {"HOTLINE_DATA_DIR": str(tmp_path), "HOTLINE_HTTP_PORT": "0"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    said = result.stderr.strip().splitlines()[-1]
    assert said.startswith("hotline: this centre has no key pair yet") and "keys init" in said
    assert "recovery key:" not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
