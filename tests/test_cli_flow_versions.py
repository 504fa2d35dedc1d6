"""`hotline flows import|export|versions|rollback` against a real database (issue 15)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flow_versions import FlowVersionStore
from bot import cli
from tests.conftest import FAST_KDF_ENV, Pair

OLD_AGE = "How old are you? We ask so we can point you to the right help."
NEW_AGE = "How old are you? (We ask only to find the right help for you.)"


async def _hotline(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    status = await asyncio.to_thread(cli.main, list(argv))
    captured = capsys.readouterr()
    return status, captured.out + captured.err


async def test_import_export_versions_and_rollback(
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
    store = FlowVersionStore(engine)

    status, out = await _hotline(capsys, "flows", "import", str(SHIPPED_FLOWS_DIR), "-m", "first")
    assert status == 0, out
    assert "published version 1" in out

    edited = tmp_path / "edited"
    shutil.copytree(SHIPPED_FLOWS_DIR, edited)
    en = edited / "locales" / "en.yaml"
    en.write_text(en.read_text().replace(OLD_AGE, NEW_AGE))
    # A broken table is refused with the row, and nothing is published.
    table = edited / "tests" / "report.test.yaml"
    good = table.read_text()
    table.write_text(good.replace("bot: [report.declined]", "bot: [report.category]"))
    status, out = await _hotline(
        capsys, "flows", "import", str(edited), "-m", "broken", "--author", "ci"
    )
    assert status == 1 and "FAIL" in out and "declining consent" in out
    table.write_text(good)
    status, out = await _hotline(
        capsys, "flows", "import", str(edited), "-m", "kinder", "--author", "ci"
    )
    assert status == 0, out
    published = await store.published()
    assert published is not None and published.number == 2 and published.author == "cli:ci"

    status, out = await _hotline(capsys, "flows", "versions")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].startswith("*    2") and "kinder" in lines[0]
    assert lines[1].startswith("     1") and "first" in lines[1]

    status, out = await _hotline(capsys, "flows", "export", "1", str(tmp_path / "v1"))
    assert status == 0, out
    assert OLD_AGE in (tmp_path / "v1" / "locales" / "en.yaml").read_text()
    assert (tmp_path / "v1" / "tests" / "report.test.yaml").is_file()

    status, out = await _hotline(capsys, "flows", "rollback", "1", "--author", "ci")
    assert status == 0 and "published version 1" in out
    published = await store.published()
    assert published is not None and published.number == 1
    status, out = await _hotline(capsys, "flows", "rollback", "7")
    assert status == 1 and "no flow version 7" in out


async def test_import_refuses_a_path_outside_the_bundle(
    pair: Pair,
    tmp_path: Path,
    engine: AsyncEngine,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HOTLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOTLINE_DATABASE_URL", pair.database_url)
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path / "flows")
    (tmp_path / "flows" / "notes").mkdir()
    (tmp_path / "flows" / "notes" / "todo.yaml").write_text("a: 1\n")
    status, out = await _hotline(capsys, "flows", "import", str(tmp_path / "flows"), "-m", "x")
    assert status == 1 and "notes/todo.yaml" in out and "not a bundle file" in out
    assert await FlowVersionStore(engine).published() is None
