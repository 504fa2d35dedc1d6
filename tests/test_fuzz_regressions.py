"""What the fuzz tests (`tests/test_fuzz_*.py`) found, each kept as a named regression test."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core import redis_keys
from backend.core.errors import FlowError
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows import source
from tests.conftest import RunningHotline
from tests.test_console import csrf_of, sign_in_and_change_password


async def test_fuzz_a_receipt_lookup_of_what_cannot_be_a_code_writes_nothing(
    hotline: RunningHotline, redis: Redis, engine: AsyncEngine
) -> None:
    """Found by the console API fuzz: `{"code": ""}` was refused (400) after it had been counted
    against the counselor's lookups and audited; a refused input must change nothing."""
    await sign_in_and_change_password(hotline, "a long new passphrase")
    csrf = csrf_of(await (await hotline.client.get("/console")).text())
    async with engine.connect() as conn:
        before = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    for code in ["", "12345", "not a code at all, much too long to be one"]:
        response = await hotline.client.post(
            "/api/receipts/lookup", json={"code": code}, headers={"X-CSRF-Token": csrf}
        )
        assert response.status == 400
    async with engine.connect() as conn:
        after = (await conn.execute(text("SELECT count(*) FROM audit_log"))).scalar_one()
    assert after == before
    assert [k async for k in redis.scan_iter(match=redis_keys.RECEIPT_LOOKUPS_PREFIX + "*")] == []


@pytest.mark.parametrize("path", ["/chat/api/turn", "/chat/api/poll"])
async def test_fuzz_json_nested_past_the_parsers_recursion_is_a_400_not_a_500(
    hotline: RunningHotline, path: str
) -> None:
    """Found by the Telegram webhook fuzz: a body of deeply nested arrays made `json.loads`
    raise RecursionError, not ValueError, and the request ended in a 500. Every door that reads
    JSON answers 400 now; this one is the web chat's (its cap still lets 30,000 levels in)."""
    body = "[" * 30_000 + "]" * 30_000
    response = await hotline.client.post(
        path, data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400, await response.text()


def test_fuzz_a_flow_text_with_a_lone_surrogate_is_refused_as_not_utf8() -> None:
    """Found by the flow YAML fuzz: a text holding a lone surrogate (what JSON's "\\ud800"
    decodes to) made the loader raise UnicodeEncodeError instead of a located FlowError."""
    flow = (SHIPPED_FLOWS_DIR / "counselor.flow.yaml").read_text(encoding="utf-8")
    with pytest.raises(FlowError) as refused:
        source.parse("\ud800" + flow, "counselor.flow.yaml")
    assert refused.value.where == "counselor.flow.yaml"
    assert "UTF-8" in str(refused.value)
