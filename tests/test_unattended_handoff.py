"""A handoff while nobody is on shift: the victim is told so honestly, with the emergency numbers
and a receipt, and the request still waits in the queue; with counselors on shift, the usual
place and a wait that shrinks with their number."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import cast

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys
from backend.core import receipt_codes as receipts
from backend.core import redis_keys as streams
from backend.core.conversation import Inbound, Pseudonym
from backend.core.receipt_codes import ReceiptHasher
from backend.core.sealing import Envelope, open_envelope
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.core.shifts import ShiftBoard
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import SessionStore
from tests.conftest import FAST_KDF
from tests.locales import texts_of

SALT = b"u" * 16
RECEIPT_SECRET = b"r" * 32
EN = texts_of("en")
CODE = re.compile(r"[0-9A-Z]{4}(?:-[0-9A-Z]{4}){3}")


@pytest.fixture
def private_key() -> X25519PrivateKey:
    return keys.generate_private_key()


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runtime(
    redis: Redis, tmp_path: Path, private_key: X25519PrivateKey, clock: Clock
) -> ConversationRuntime:
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path / "flows")
    return ConversationRuntime(
        redis,
        FlowRegistry.load(tmp_path / "flows"),
        SessionStore(redis, b"r" * 32, 3600),
        ReportSender(redis, private_key.public_key()),
        receipts=ReceiptHasher(RECEIPT_SECRET, SALT, FAST_KDF),
        shifts=ShiftBoard(redis),
        clock=clock,
    )


async def _say(runtime: ConversationRuntime, who: str, text: str = "", button: str = "") -> Turn:
    inbound = Inbound(
        Pseudonym(who * 64), "web", text=text or None, button=button or None, language="en"
    )
    return await runtime.handle(inbound)


async def _handoff_answers(redis: Redis, private_key: X25519PrivateKey) -> list[dict[str, str]]:
    found = []
    for _id, fields in await redis.xrange(streams.REPORTS_STREAM) or []:
        if streams.FIELD_EVENT.encode() in (fields or {}):
            continue  # a content-free event (a receipt issued), not a report
        raw = (fields or {})[streams.FIELD_ENVELOPE.encode()]
        assert isinstance(raw, bytes)
        envelope = Envelope.from_bytes(raw)
        answers = json.loads(open_envelope(envelope, private_key))["answers"]
        if str(answers.get("request", "")).startswith("counselor"):
            found.append({"case_id": envelope.header.case_id, **answers})
    return found


async def _case_of(redis: Redis, code: str) -> str | None:
    digest = receipts.keyed_digest(code, receipts.ReceiptKeys(RECEIPT_SECRET))
    assert digest is not None
    found = await redis.get(streams.receipt_key(digest))
    return found.decode() if isinstance(found, bytes) else None


async def test_nobody_on_shift_is_said_honestly_with_numbers_and_a_receipt(
    runtime: ConversationRuntime, redis: Redis, private_key: X25519PrivateKey
) -> None:
    await _say(runtime, "a", "/start")
    turn = await _say(runtime, "a", "/human")
    message = turn.messages[0]  # then the report flow resumes where it was
    assert message.key == "safety.no_counselor"
    assert "No counselor is available right now" in message.text
    assert "112" in message.text and "1366" in message.text
    match = CODE.search(message.text)
    assert match is not None, message.text
    (request,) = await _handoff_answers(redis, private_key)
    assert request["request"] == "counselor (counselor; nobody was on shift)"
    assert await _case_of(redis, match.group()) == request["case_id"], "the receipt opens it"
    # The backend learns the code's digest for the case (so the console can find it by
    # the code), after the request itself, and never the code.
    found = await redis.xrange(streams.REPORTS_STREAM)
    entries = cast(list[tuple[bytes, dict[bytes, bytes]]], found)
    event = entries[-1][1]
    assert event[streams.FIELD_EVENT.encode()] == streams.EVENT_RECEIPT_ISSUED.encode()
    assert event[streams.FIELD_CASE_IDS.encode()] == request["case_id"].encode()
    digest = receipts.keyed_digest(match.group(), receipts.ReceiptKeys(RECEIPT_SECRET))
    assert event[streams.FIELD_CODE_DIGEST.encode()] == digest.encode()
    assert match.group().encode() not in repr(entries).encode()
    assert await redis.zscore(streams.HANDOFF_QUEUE, request["case_id"]) is not None


async def test_after_a_report_the_same_receipt_is_given(
    runtime: ConversationRuntime, redis: Redis
) -> None:
    await _say(runtime, "b", "/start")
    await _say(runtime, "b", button="agree")
    await _say(runtime, "b", button="sextortion")
    await _say(runtime, "b", button="report_first")
    await _say(runtime, "b", button="18_plus")
    await _say(runtime, "b", "He wants money.")
    turn = await _say(runtime, "b", button="send_now")
    said = {m.key: m.text for m in turn.messages}
    assert "safety.handoff" not in said
    received, unattended = said["report.received"], said["safety.no_counselor"]
    code = CODE.search(received)
    assert code is not None and code.group() in unattended
    assert await _case_of(redis, code.group()) is not None


async def test_with_counselors_on_shift_the_place_and_a_shared_wait(
    runtime: ConversationRuntime, redis: Redis, clock: Clock
) -> None:
    board = ShiftBoard(redis)
    await board.start(1)
    await _say(runtime, "c", "/start")
    first = await _say(runtime, "c", "/human")
    assert first.messages[0].key == "safety.handoff"
    assert "number 1 in the queue" in first.messages[0].text
    assert "about 10 minutes" in first.messages[0].text
    await board.start(2)
    clock.now += 5
    await _say(runtime, "d", "/start")
    second = await _say(runtime, "d", "/human")
    # Two counselors take two cases at a time: place 2 waits one case's time, not two.
    assert "number 2 in the queue" in second.messages[0].text
    assert "about 10 minutes" in second.messages[0].text
    assert EN["safety.no_counselor"].split(".")[0] not in second.messages[0].text


async def test_after_hours_a_left_request_gets_the_receipt_when_nobody_is_there(
    redis: Redis, tmp_path: Path, private_key: X25519PrivateKey
) -> None:
    flows = tmp_path / "closed"
    shutil.copytree(SHIPPED_FLOWS_DIR, flows)
    (flows / "service.yaml").write_text("schema: 1\nalways_open: false\n")
    closed = ConversationRuntime(
        redis,
        FlowRegistry.load(flows),
        SessionStore(redis, b"r" * 32, 3600),
        ReportSender(redis, private_key.public_key()),
        receipts=ReceiptHasher(RECEIPT_SECRET, SALT, FAST_KDF),
        shifts=ShiftBoard(redis),
    )
    await _say(closed, "e", "/start")
    offered = await _say(closed, "e", "/human")
    assert offered.messages[0].key == "safety.after_hours"
    left = await _say(closed, "e", button="leave_message")
    assert left.messages[0].key == "safety.no_counselor"
    assert CODE.search(left.messages[0].text) is not None
    # Someone works outside the published hours: the usual answer, nothing more.
    await ShiftBoard(redis).start(3)
    await _say(closed, "f", "/start")
    await _say(closed, "f", "/human")
    left = await _say(closed, "f", button="leave_message")
    assert left.messages[0].key == "counselor.left"
