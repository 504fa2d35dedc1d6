"""`/metrics`: the counters move with real traffic, and nothing in them says who or what.

A canary conversation goes the whole way through the composed app (a report with the marker in
its answers, a handoff, a counselor's live line with the marker) and the node's `/metrics` is
scraped: the marker, the case ids, the receipt code, the web chat token and its pseudonym are
absent, every label is one of a few fixed words, and the counts match what was done.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.cases import CaseStore
from backend.centre_gauges import CentreGauges
from backend.core import keys, redis_keys
from backend.core.conversation import SubmitReport
from backend.core.metrics import (
    CHANNELS,
    DELIVERY_OUTCOMES,
    OTHER,
    RETRY_REASONS,
    SEND_RESULTS,
    TURN_OUTCOMES,
)
from backend.core.pseudonyms import Purpose
from backend.core.settings import SlaPolicy
from backend.core.shifts import ShiftBoard
from backend.flows.registry import FlowRegistry
from backend.intake import Intake, ensure_group
from bot.reports import ReportSender
from bot.webchat import pseudonymizer_key
from tests import telegram_support
from tests.conftest import RunningHotline
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import Victim, make_runtime, running_door
from tests.test_live_chat_through_the_bot import TOKEN, claimed_case, open_desk, poll, turn

pytestmark = pytest.mark.crypto

center_key = telegram_support.center_key
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram

MARKER = "CANARY-91c4-협박범"
REPORTER = "r" * 43
# Label names and the words each may carry; `le` is a histogram bucket bound.
ALLOWED_LABELS: dict[str, frozenset[str]] = {
    "channel": CHANNELS | {OTHER},
    "outcome": TURN_OUTCOMES | DELIVERY_OUTCOMES | {OTHER},
    "result": SEND_RESULTS | {OTHER},
    "reason": RETRY_REASONS | {OTHER},
    "priority": frozenset({"0", "1", "2", "3"}),
}


async def scrape(hotline: RunningHotline) -> tuple[str, dict[str, float]]:
    async with TestClient(TestServer(hotline.node.metrics_app())) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        body = await response.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if not sample.name.startswith("hotline_"):
                continue
            for name, value in sample.labels.items():
                if name == "le":
                    float(value)  # a number, nothing else
                else:
                    assert value in ALLOWED_LABELS[name], f"{sample.name}: {name}={value!r}"
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return body, samples


def total(samples: dict[str, float], prefix: str) -> float:
    return sum(v for k, v in samples.items() if k.startswith(prefix))


async def report(hotline: RunningHotline) -> list[str]:
    """A whole report through the web chat, the marker in the victim's words; the receipt
    codes the bot showed."""
    receipts: list[str] = []
    for step in (
        {"text": "/start", "language": "en"},
        {"button": "agree"},
        {"button": "filming"},
        {"button": "18_plus"},
        {"text": f"he threatens me {MARKER}"},
        {"button": "send_now"},
    ):
        response = await hotline.client.post("/chat/api/turn", json={"token": REPORTER, **step})
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        receipts += [m["receipt"] for m in answer["messages"] if m.get("receipt")]
    return receipts


async def test_metrics_count_a_canary_conversation_and_never_name_it(
    hotline: RunningHotline, redis: Redis, engine: AsyncEngine
) -> None:
    desk = await open_desk(hotline)
    before = (await scrape(hotline))[1]
    assert before["hotline_counselors_on_shift{}"] == 1

    await turn(hotline, "/start")
    await turn(hotline, "/human")
    await turn(hotline, f"my words for the counselor {MARKER}")
    case_id = await claimed_case(hotline, desk)
    assert (await desk.chat(case_id, "start"))[0] == 200
    await poll(hotline)
    status, sent = await desk.chat(case_id, "lines", text=f"we are here {MARKER}")
    assert status == 200, sent
    await poll(hotline)

    receipts = await report(hotline)
    cases = CaseStore(engine)
    for _ in range(500):  # the intake stores the report in the background
        if await redis.xlen(redis_keys.REPORTS_STREAM) == 0 and len(await cases.list_open()) > 1:
            break
        await asyncio.sleep(0.02)
    body, after = await scrape(hotline)
    queued = len(await cases.list_waiting())
    assert queued >= 1, "the report waits; the handoff is claimed"
    assert total(after, "hotline_queue_depth{") == queued
    assert total(after, "hotline_queue_sla_missed{") == 0
    assert after["hotline_intake_lag_entries{}"] == 0, "the intake stored everything"
    assert after["hotline_dead_letters{}"] == 0
    assert after["hotline_centre_gauges_readable{}"] == 1

    turns = 3 + 6  # the handoff conversation and the report; the page's polls are not turns
    assert after["hotline_updates_total{channel=web}"] == turns
    assert after["hotline_turns_total{channel=web,outcome=answered}"] == turns
    assert after["hotline_turn_seconds_count{channel=web}"] == turns
    assert after["hotline_flow_step_seconds_count{}"] >= 6
    assert after["hotline_live_delivery_seconds_count{outcome=held}"] == 1, "the line, held"

    pseudonymizer = hotline.client.app[pseudonymizer_key]
    needles = [MARKER, TOKEN, REPORTER, *receipts]
    needles += [c.id for c in await cases.list_open()]
    needles += [pseudonymizer.pseudonym(Purpose.SESSION, "web", t) for t in (TOKEN, REPORTER)]
    assert receipts, "the report's receipt was shown, so its absence below means something"
    for needle in needles:
        assert needle not in body


async def test_telegram_updates_sends_429s_and_retries_are_counted(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door(mode, redis, telegram, runtime, root_secret):
        telegram.fail_next(
            "sendMessage", 429, "Too Many Requests: retry after 1", {"retry_after": 1}
        )
        telegram.fail_next("sendMessage", 502, "Bad Gateway")
        await Victim(telegram, "en").say("/start", replies=4)
    value = runtime.metrics.registry.get_sample_value
    assert value("hotline_updates_total", {"channel": "telegram"}) == 1
    assert value("hotline_turns_total", {"channel": "telegram", "outcome": "answered"}) == 1
    assert value("hotline_outbox_sends_total", {"result": "sent"}) == 2, "welcome, consent"
    assert value("hotline_outbox_rate_limited_total") == 1
    assert value("hotline_outbox_retries_total", {"reason": "rate_limited"}) == 1
    assert value("hotline_outbox_retries_total", {"reason": "network"}) == 1


def _report(priority: int) -> SubmitReport:
    return SubmitReport(
        idempotency_key=f"{uuid.uuid4().hex}:3",
        case_id=uuid.uuid4().hex,
        category="sextortion",
        priority=priority,
        language="ko",
        channel="web",
        answers={"details": MARKER},
    )


async def test_the_centre_gauges_show_a_missed_sla_a_lagging_intake_and_dead_letters(
    redis: Redis, engine: AsyncEngine
) -> None:
    sender = ReportSender(redis, keys.generate_private_key().public_key())
    store = CaseStore(engine)
    await ensure_group(redis)
    await sender.send(_report(priority=3))
    await redis.xadd(
        redis_keys.REPORTS_STREAM,
        {redis_keys.FIELD_IDEMPOTENCY_KEY: "e2", redis_keys.FIELD_EVENT: "victim_sang"},
    )
    entries = await redis.xreadgroup(
        redis_keys.INTAKE_GROUP, "c", {redis_keys.REPORTS_STREAM: ">"}, count=10
    )
    await Intake(redis, store, "c").handle(entries[0][1])  # type: ignore[index, arg-type]  # redis-py types XREADGROUP loosely
    await sender.send(_report(priority=0))  # not taken yet
    registry = CollectorRegistry()
    three_minutes_on = time.time() + 180  # past priority 3's 2 minutes, within priority 0's 60
    gauges = CentreGauges(
        registry, redis, store, ShiftBoard(redis), SlaPolicy(), clock=lambda: three_minutes_on
    )
    await gauges.refresh()
    value = registry.get_sample_value
    assert value("hotline_queue_depth", {"priority": "3"}) == 1
    assert value("hotline_queue_depth", {"priority": "0"}) == 0
    assert value("hotline_queue_sla_missed", {"priority": "3"}) == 1
    assert (value("hotline_queue_oldest_wait_seconds", {"priority": "3"}) or 0) >= 179
    assert value("hotline_intake_lag_entries") == 1
    assert (value("hotline_intake_oldest_entry_seconds") or 0) >= 179
    assert value("hotline_dead_letters") == 1
    assert value("hotline_counselors_on_shift") == 0
    assert value("hotline_centre_gauges_readable") == 1
    body = generate_latest(registry).decode()
    assert MARKER not in body
