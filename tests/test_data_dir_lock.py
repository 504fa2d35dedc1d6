"""Issue 18: a second `hotline up` on the same data directory refuses to start.

Before, it stopped the first one's embedded Redis as a leftover of a crash and started its own,
and the first instance, still serving, answered healthz 503 from then on.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import FAST_KDF_ENV, FIRST_START_ENV
from tests.test_e2e import HOTLINE, Up
from tests.webchat_page import send_turn

pytestmark = pytest.mark.e2e


async def test_a_second_up_on_the_same_data_directory_leaves_the_first_working(
    tmp_path: Path,
) -> None:
    # The embedded default (the data directory's own Redis) is what a second process broke.
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= (
        FAST_KDF_ENV
        | FIRST_START_ENV
        | {"HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_HTTP_PORT": "0"}
    )
    first = Up(env, tmp_path / "first.log")
    try:
        await first.wait_ready()
        second = await asyncio.to_thread(
            subprocess.run, [HOTLINE, "up"], env=env, capture_output=True, timeout=60
        )
        assert second.returncode == 2
        said = second.stderr.decode()
        assert "HOTLINE_DATA_DIR" in said and "in use by another hotline process" in said, said
        assert f"pid {first.process.pid}" in said, said
        assert "Traceback" not in said
        async with aiohttp.ClientSession() as http:
            async with http.get(first.base + "/healthz") as response:
                assert response.status == 200
            answer = await send_turn(
                http,
                first.base,
                {"token": secrets.token_urlsafe(32), "text": "/start", "language": "en"},
            )
            assert answer["messages"]
    finally:
        assert first.stop() == 0
