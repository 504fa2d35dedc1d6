"""Fuzzing the console's JSON API over HTTP on the real app (see `tests/fuzzing.py`), with
`schemathesis` drawing requests from the API's own OpenAPI document (`/api/openapi.json`):
without a session, with a signed-in session but no CSRF token or a wrong one, and with both."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from schemathesis.core import NOT_SET
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import RunningHotline
from tests.fuzzing import (
    FUZZ_TIMEOUT_S,
    StoredState,
    assert_sane_answer,
    counted,
    fuzz_settings,
    json_values,
    payload,
)
from tests.fuzzing import pair as pair  # noqa: PLC0414 - the embedded pair only
from tests.test_console import csrf_of, report, sign_in_and_change_password, wait_for_cases

# What a request carries: nothing, a session alone, a session with a wrong token, or both.
AUTH = ["none", "session", "session+wrong-csrf", "session+csrf", "session+csrf"]
# Statuses that refuse the input itself; 404 (no such case), 409 and 429 are answers about
# the state, and a receipt lookup is audited even when nothing is found.
REFUSALS = {400, 401, 403, 405, 413, 415, 422}


@dataclass
class Console:
    hotline: RunningHotline
    anonymous: aiohttp.ClientSession
    csrf: str
    case_id: str
    schema: Any


@pytest.fixture
async def console(hotline: RunningHotline) -> AsyncIterator[Console]:
    await report(hotline, "someone filmed me")
    await sign_in_and_change_password(hotline, "a long fuzzing passphrase")
    (case,) = await wait_for_cases(hotline, 1)
    csrf = csrf_of(await (await hotline.client.get("/console")).text())
    document = await (await hotline.client.get("/api/openapi.json")).json()
    schema = schemathesis.openapi.from_dict(document)
    base = str(hotline.client.make_url("/"))
    async with aiohttp.ClientSession(base) as anonymous:
        yield Console(hotline, anonymous, csrf, case["id"], schema)


@pytest.fixture
def stored(redis: Redis, engine: AsyncEngine) -> StoredState:
    return StoredState(redis, engine)


bodies = st.one_of(
    st.none(),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "code": st.text(max_size=30) | json_values,
            "text": st.text(max_size=30) | json_values,
            "to": st.integers() | json_values,
            "on": st.booleans() | json_values,
            "status": st.sampled_from(["closed", "queued", "x"]) | json_values,
            "outcome": st.sampled_from(["referred", "duplicate", "x"]) | json_values,
        },
    ).map(lambda d: json.dumps(d).encode()),
    st.binary(max_size=64),
)


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(1500)
@given(data=st.data(), auth=st.sampled_from(AUTH), body=bodies, real_case=st.booleans())
async def test_the_console_api_survives_any_request(
    *,
    console: Console,
    stored: StoredState,
    data: st.DataObject,
    auth: str,
    body: bytes | None,
    real_case: bool,
) -> None:
    case = data.draw(console.schema.as_strategy())
    with counted("console api"):
        parameters = dict(case.path_parameters or {})
        if real_case and "case_id" in parameters:
            parameters["case_id"] = console.case_id
        path = case.operation.path
        for name, value in parameters.items():
            path = path.replace("{" + name + "}", _quote(str(value)))
        headers = {k: v for k, v in (case.headers or {}).items() if isinstance(v, str)}
        headers["Content-Type"] = "application/json"
        if auth.endswith("+csrf"):
            headers["X-CSRF-Token"] = console.csrf
        elif auth.endswith("wrong-csrf"):
            headers["X-CSRF-Token"] = "wrong" + console.csrf[5:]
        query = case.query if case.query not in (None, NOT_SET) else None
        before = await stored.before()
        client = console.anonymous if auth == "none" else console.hotline.client.session
        url = console.hotline.client.make_url(path)
        async with client.request(
            case.method,
            url,
            params=_flat(query),
            data=None if body is None else payload(body),
            headers=_safe(headers),
        ) as response:
            answer = await response.read()
            status = response.status
        assert_sane_answer(status, answer)
        await stored.after(before, refused=status in REFUSALS)


def _quote(value: str) -> str:
    return quote(value, safe="") or "%20"


def _flat(query: Any) -> dict[str, str] | None:
    if not isinstance(query, dict):
        return None
    return {str(k): str(v) for k, v in query.items()}


def _safe(headers: dict[str, str]) -> dict[str, str]:
    """Headers aiohttp's client will send (no line breaks or other controls in a value)."""
    return {
        k: v
        for k, v in headers.items()
        if k.isascii() and v.isprintable() and v.isascii() and "\n" not in v
    }
