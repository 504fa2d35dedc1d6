"""`hotline keys init|rotate`, `counselor add|reset` and `audit verify`, end to end."""

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

from backend import audit, bootstrap, totp
from backend.core import keys
from backend.core.errors import AuthenticationError, KeyUnwrapError
from backend.counselors import CounselorStore
from backend.keyring import KeyRing
from backend.models import AuditEntry, Counselor
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


async def test_an_administrator_resets_a_counselor_who_lost_their_authenticator(
    pair: Pair,
    tmp_path: Path,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", pair.database_url)
    for name, value in FAST_KDF_ENV.items():
        monkeypatch.setenv(name, value)
    _status, out = await _hotline(monkeypatch, capsys, "keys", "init")
    admin_password = first_start_secret(out, "one-time password")
    as_admin = {"stdin": admin_password + "\n"}
    _status, out = await _hotline(
        monkeypatch, capsys, "counselor", "add", "kim", "--admin", "admin", **as_admin
    )
    old_password = first_start_secret(out, "one-time password")
    kim = await _counselor_id(engine, "kim")
    counselors = CounselorStore(engine, FAST_KDF)
    keyring = KeyRing(engine, FAST_KDF)
    secret = totp.new_secret()
    await counselors.enable_totp(kim, old_password, secret, step=1)

    status, out = await _hotline(
        monkeypatch,
        capsys,
        "counselor",
        "reset",
        "kim",
        "--admin",
        "kim",
        stdin=old_password + "\n",
    )
    assert status == 1 and "sign-in failed" in out, "only administrators reset"
    status, out = await _hotline(
        monkeypatch, capsys, "counselor", "reset", "nobody", "--admin", "admin", **as_admin
    )
    assert status == 1 and "no counselor named" in out
    status, out = await _hotline(
        monkeypatch, capsys, "counselor", "reset", "kim", "--admin", "admin", **as_admin
    )
    assert status == 0, out
    new_password = first_start_secret(out, "one-time password")

    reset = await counselors.authenticate("kim", new_password)
    assert reset.must_change_password and reset.totp_secret is None and reset.totp_last_step is None
    with pytest.raises(AuthenticationError):
        await counselors.authenticate("kim", old_password)
    active = await keyring.active()
    assert active is not None
    held = await keyring.unwrap_for(kim, new_password)
    assert set(held) == {active.key_id}, "the centre key opens under the new password"
    with pytest.raises(KeyUnwrapError):
        await keyring.unwrap_for(kim, old_password)
    verdict = await audit.verify(engine)
    assert verdict.intact
    async with AsyncSession(engine) as session:
        actions = (await session.exec(select(AuditEntry.action))).all()
    assert "account-reset" in actions
