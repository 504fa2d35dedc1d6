"""What an operator's tools see of a real `hotline up` process: readiness on the HTTP port,
Prometheus' `/metrics` on a port of its own, and JSON log lines for a log collector."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.json_logs import JsonLinesFormatter
from tests.conftest import FAST_KDF_ENV, FIRST_START_ENV, Pair
from tests.test_e2e import HOTLINE, Up, Victim, _http

pytestmark = pytest.mark.e2e


@pytest.fixture
def up_env(pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOTLINE_")}
    env |= (
        FAST_KDF_ENV
        | FIRST_START_ENV
        | {"HOTLINE_DATA_DIR": str(tmp_path / "data"), "HOTLINE_HTTP_PORT": "0"}
    )
    if pair.name == "server":
        env |= {"HOTLINE_DATABASE_URL": pair.database_url, "HOTLINE_REDIS_URL": pair.redis_url}
    return env


async def test_metrics_port_readiness_and_json_logs_of_a_real_process(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    log_path = tmp_path / "hotline.log"
    up = Up(up_env | {"HOTLINE_METRICS_PORT": "0", "HOTLINE_LOG_FORMAT": "json"}, log_path)
    try:
        await up.wait_ready()
        match = re.search(r"metrics:\s+(http://\S+/metrics)", up.output)
        assert match is not None, up.output
        metrics_url = match.group(1)
        assert not metrics_url.startswith(up.base), "a port of its own"
        async with _http() as http:
            async with http.get(up.base + "/readyz") as response:
                assert response.status == 200
                assert await response.json() == {"status": "ready"}
            await Victim(http, up.base, "m" * 43).turn(text="/start", language="en")
            async with http.get(metrics_url) as response:
                assert response.status == 200
                scraped = await response.text()
            async with http.get(up.base + "/metrics") as response:
                assert response.status == 404, "not beside the victims' pages"
        assert 'hotline_turns_total{channel="web",outcome="answered"} 1.0' in scraped
        assert "hotline_counselors_on_shift 0.0" in scraped
    finally:
        assert up.stop(signal.SIGINT) == 0
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line one JSON object
    assert {"time", "level", "logger", "message"} <= set(records[-1])
    assert any(r["message"] == "stopping" for r in records)


def test_a_json_log_line_cannot_be_split_or_forged() -> None:
    formatter = JsonLinesFormatter()
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "bot.relay", logging.ERROR, __file__, 1, 'a "quoted"\nsecond line %s', ("x",), None
        )
        record.exc_info = sys.exc_info()
    line = formatter.format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["message"] == 'a "quoted"\nsecond line x'
    assert entry["level"] == "ERROR" and entry["logger"] == "bot.relay"
    assert entry["exception"].endswith("ValueError: boom")


def test_the_metrics_port_is_not_the_http_port(up_env: dict[str, str]) -> None:
    env = up_env | {"HOTLINE_METRICS_PORT": "8080", "HOTLINE_HTTP_PORT": "8080"}
    done = subprocess.run(
        [HOTLINE, "up"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "hotline: HOTLINE_METRICS_PORT: must differ from HOTLINE_HTTP_PORT"
    )
