"""`hotline keys init|rotate`, `hotline counselor add` and `hotline audit verify`, end to end."""

from __future__ import annotations

import asyncio
import io
import re
import sys
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from backend import bootstrap, keys
from backend.keyring import KeyRing
from backend.models import Counselor
from bot import cli
from tests.conftest import FAST_KDF, FAST_KDF_ENV, Pair, first_start_secret

pytestmark = pytest.mark.crypto


async def _hotline(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *argv: str, stdin: str = ""
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    status = await asyncio.to_thread(cli.main, list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


async def _counselor_id(engine: AsyncEngine, username: str) -> int:
    async with AsyncSession(engine) as session:
        found = (await session.exec(select(Counselor).where(Counselor.username == username))).one()
    assert found.id is not None
    return found.id


async def test_keys_and_counselors_from_the_command_line(
    pair: Pair,
    tmp_path: Path,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "data"
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", pair.database_url)
    for name, value in FAST_KDF_ENV.items():
        monkeypatch.setenv(name, value)

    status, out = await _hotline(monkeypatch, capsys, "keys", "init")
    assert status == 0, out
    admin_password = first_start_secret(out, "one-time password")
    recovery = first_start_secret(out, "recovery key")
    first_public = bootstrap.read_public_key(data_dir)
    status, out = await _hotline(monkeypatch, capsys, "keys", "init")
    assert status == 1 and "already has its key pair" in out
    assert bootstrap.read_public_key(data_dir) == first_public

    status, out = await _hotline(
        monkeypatch, capsys, "counselor", "add", "kim", "--admin", "admin", stdin="wrong\n"
    )
    assert status == 1 and "sign-in failed" in out
    status, out = await _hotline(
        monkeypatch,
        capsys,
        "counselor",
        "add",
        "kim",
        "--admin",
        "admin",
        stdin=admin_password + "\n",
    )
    assert status == 0, out
    kim_password = first_start_secret(out, "one-time password")
    status, out = await _hotline(
        monkeypatch,
        capsys,
        "counselor",
        "add",
        "lee",
        "--role",
        "supervisor",
        "--recovery",
        stdin=recovery.lower() + "\n",
    )
    assert status == 0, out
    lee_password = first_start_secret(out, "one-time password")

    keyring = KeyRing(engine, FAST_KDF)
    old = await keyring.active()
    assert old is not None and keys.encode_public_key(old.public_key) == first_public
    status, out = await _hotline(
        monkeypatch, capsys, "keys", "rotate", "--admin", "kim", stdin=kim_password + "\n"
    )
    assert status == 1, "only administrators rotate"
    status, out = await _hotline(
        monkeypatch, capsys, "keys", "rotate", "--admin", "admin", stdin=admin_password + "\n"
    )
    assert status == 0, out
    new = await keyring.active()
    assert new is not None and new.key_id != old.key_id and new.key_id in out
    assert bootstrap.read_public_key(data_dir) == keys.encode_public_key(new.public_key)
    for username, password in (("kim", kim_password), ("lee", lee_password)):
        held = await keyring.unwrap_for(await _counselor_id(engine, username), password)
        assert set(held) == {old.key_id, new.key_id}, username

    status, out = await _hotline(monkeypatch, capsys, "audit", "verify")
    assert status == 0 and re.search(r"intact: 3 links", out), out
