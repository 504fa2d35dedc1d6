"""The HTTP boundary's log of an unexpected error: its type, where and a fingerprint, never its
message, its causes' messages or a traceback (they can quote a victim's words)."""

from __future__ import annotations

import logging
import re

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from backend.core.fingerprints import fingerprint
from backend.web import make_app

CANARY = "CANARY-3c9e-피해자가 쓴 말"


def _explode(text: str) -> None:
    try:
        {"known": 1}[text]
    except KeyError as exc:
        raise ValueError(f"could not handle the victim's message {text!r}") from exc


async def _handler(request: web.Request) -> web.Response:
    _explode((await request.json())["text"])
    return web.Response()  # pragma: no cover - never reached


async def test_a_failing_handler_logs_no_word_of_what_it_was_given(
    redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = make_app(redis, None)
    app.router.add_post("/cases/{case}/boom", _handler)
    async with TestClient(TestServer(app)) as client:
        response = await client.post(f"/cases/{CANARY}/boom", json={"text": CANARY})
        body = await response.text()
        again = await client.post("/cases/x/boom", json={"text": CANARY + "!"})

    assert response.status == 500 and again.status == 500
    assert CANARY not in body and "Traceback" not in body and ".py" not in body
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert CANARY not in logged, "no message, no cause, no path a client chose"
    assert "Traceback" not in logged and all(r.exc_info is None for r in caplog.records)
    failures = [r.getMessage() for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 2
    found = re.search(r"ValueError at test_error_logging\.py:\d+ \[([0-9a-f]{12})\]", failures[0])
    assert found, failures[0]
    assert "/cases/{case}/boom" in failures[0], "the route's pattern, not the path"
    assert failures[0] == failures[1], "the same bug, the same fingerprint: repeats group"


def test_the_fingerprint_follows_the_type_and_the_code_path_not_the_message() -> None:
    caught = []
    for text in ("one", "two"):
        try:
            _explode(text)
        except ValueError as exc:
            caught.append(exc)
    try:
        raise ValueError("one")
    except ValueError as exc:
        elsewhere = exc
    assert fingerprint(caught[0]) == fingerprint(caught[1])
    assert fingerprint(caught[0]) != fingerprint(elsewhere)
