"""The runtime on real Redis: hot reload pins conversations to their version, and the new effects
(handoff, receipts, a returning victim's requests, feedback) are carried out visibly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys
from backend.core import receipt_codes as receipts
from backend.core import redis_keys as streams
from backend.core.conversation import Inbound, Pseudonym, SubmitReport
from backend.core.receipt_codes import ReceiptHasher
from backend.core.sealing import Envelope, open_envelope
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime, Turn
from bot.sessions import SessionStore
from tests.conftest import FAST_KDF
from tests.locales import texts_of


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def private_key() -> X25519PrivateKey:
    return keys.generate_private_key()


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    shutil.copytree(SHIPPED_FLOWS_DIR, tmp_path / "flows")
    return tmp_path / "flows"


@pytest.fixture
def runtime(redis: Redis, flows_dir: Path, private_key: X25519PrivateKey) -> ConversationRuntime:
    return ConversationRuntime(
        redis,
        FlowRegistry.load(flows_dir),
        SessionStore(redis, b"r" * 32, 3600),
        ReportSender(redis, private_key.public_key()),
        receipts=ReceiptHasher(RECEIPT_SECRET, RECEIPT_SALT, FAST_KDF),
        clock=Clock(),
        reload_check_s=0,
    )


class Victim:
    def __init__(self, runtime: ConversationRuntime, name: str) -> None:
        self.runtime, self.who = runtime, Pseudonym(name * 64)

    async def text(self, text: str) -> Turn:
        return await self.runtime.handle(Inbound(self.who, "web", text=text, language="en"))

    async def click(self, button: str) -> Turn:
        return await self.runtime.handle(Inbound(self.who, "web", button=button, language="en"))

    async def to_details(self, category: str = "deepfake") -> Turn:
        await self.text("/start")
        await self.click("agree")
        if category == "sextortion":
            await self.click("sextortion")
            await self.click("report_first")
        else:
            await self.click(category)
        return await self.click("18_plus")


async def _reports(redis: Redis, private_key: X25519PrivateKey) -> list[dict[str, Any]]:
    found = []
    for _id, fields in await redis.xrange(streams.REPORTS_STREAM) or []:
        if streams.FIELD_EVENT.encode() in (fields or {}):
            continue  # a content-free event (a receipt issued), not a report
        raw = (fields or {})[streams.FIELD_ENVELOPE.encode()]
        assert isinstance(raw, bytes)
        envelope = Envelope.from_bytes(raw)
        body = json.loads(open_envelope(envelope, private_key))
        found.append({"header": envelope.header, **body})
    return found


async def test_a_reload_keeps_old_conversations_on_their_version(
    runtime: ConversationRuntime, flows_dir: Path, redis: Redis
) -> None:
    old_age = "How old are you? We ask so we can point you to the right help."
    new_age = "How old are you? (We ask only to find the right help for you.)"
    early = Victim(runtime, "a")
    await early.text("/start")
    await early.click("agree")
    en = flows_dir / "locales" / "en.yaml"
    en.write_text(en.read_text().replace(old_age, new_age))
    late = Victim(runtime, "b")
    await late.text("/start")
    await late.click("agree")
    assert (await late.click("deepfake")).messages[0].text == new_age
    assert (await early.click("deepfake")).messages[0].text == old_age, "pinned to its version"
    # A broken edit changes nothing: not the current version, not anyone's conversation.
    flow = flows_dir / "report.flow.yaml"
    flow.write_text(flow.read_text().replace("next: consent", "next: nowhere", 1))
    third = Victim(runtime, "c")
    await third.text("/start")
    await third.click("agree")
    assert (await third.click("filming")).messages[0].text == new_age
    await early.click("18_plus")
    await early.text("They made fake pictures.")
    done = await early.click("send_now")
    assert "received safely" in done.messages[0].text, "the old version finishes"


async def test_a_handoff_is_a_sealed_priority_report_with_a_real_queue_position(
    runtime: ConversationRuntime, redis: Redis, private_key: X25519PrivateKey
) -> None:
    first, second = Victim(runtime, "d"), Victim(runtime, "e")
    await first.text("/start")
    turn = await first.text("/human")
    assert "number 1 in the queue" in turn.messages[0].text
    assert "about 10 minutes" in turn.messages[0].text
    await second.to_details("sextortion")
    await second.text("He wants money.")
    turn = await second.click("send_now")
    said = [m.text for m in turn.messages]
    assert "received safely" in said[0]
    assert any("number 1 in the queue" in text for text in said), "priority jumps the queue"
    reports = await _reports(redis, private_key)
    assert [r["header"].priority for r in reports] == [1, 2, 2]
    assert reports[0]["answers"]["request"] == "counselor (counselor)"
    assert reports[2]["answers"]["request"] == "counselor (counselor)"
    assert reports[1]["header"].category == "sextortion"
    assert await redis.zcard(streams.HANDOFF_QUEUE) == 2


async def test_a_receipt_brings_a_victim_back_to_the_case(
    runtime: ConversationRuntime, redis: Redis, private_key: X25519PrivateKey
) -> None:
    victim = Victim(runtime, "f")
    await victim.to_details()
    await victim.text("Someone posted a fake video.")
    done = await victim.click("send_now")
    (case,) = await _reports(redis, private_key)
    code = done.messages[0].text.split("receipt code is ")[1].split(".")[0]
    assert len(code) == 19, "16 Crockford characters in four groups: 80 bits"
    stored = await redis.get(streams.receipt_key(_digest(code)))
    assert stored == case["header"].case_id.encode()
    assert code.encode() not in b"".join([k async for k in redis.scan_iter()]), "code not kept"

    back = Victim(runtime, "g")
    await back.text("/receipt")
    turn = await back.text(code.lower().replace("-", " "))
    assert turn.delete_inbound, "the code is erased from the chat where possible"
    await back.click("add_info")
    turn = await back.text("He made a new account.")
    assert turn.messages[0].text == "Your request was passed to the center."
    follow_up = (await _reports(redis, private_key))[-1]
    assert follow_up["header"].category == "follow_up"
    assert follow_up["answers"] == {
        "request": "add_info",
        "case": case["header"].case_id,
        "addition": "He made a new account.",
    }
    assert follow_up["header"].follows == case["header"].case_id, "linked in the plain header"

    await back.text("/receipt")
    await back.text(code)
    turn = await back.click("read_replies")
    assert turn.messages[0].text.startswith(
        "Your request was passed to the center.\n\nThere is no reply from the center yet."
    )
    reports = await _reports(redis, private_key)
    assert len(reports) == 3
    assert reports[-1]["answers"]["replies_shown"] == 0


async def test_an_unknown_receipt_is_said_plainly_and_sends_nothing(
    runtime: ConversationRuntime, redis: Redis
) -> None:
    back = Victim(runtime, "h")
    await back.text("/receipt")
    # Said at once (issue 18), not after the victim chose to erase what does not exist.
    turn = await back.text("ZZZZ-ZZZZ-ZZZZ-ZZZZ")
    assert turn.messages[0].text.startswith("We could not find this receipt code.")
    assert "{" not in turn.messages[0].text
    assert [b.id for b in turn.messages[-1].buttons] == ["try_again", "no_thanks"]
    assert await redis.xlen(streams.REPORTS_STREAM) == 0


async def test_feedback_is_counted_and_linked_to_nothing(
    runtime: ConversationRuntime, redis: Redis
) -> None:
    victim = Victim(runtime, "i")
    await victim.to_details()
    await victim.text("details")
    await victim.click("send_now")
    turn = await victim.click("helpful")
    assert turn.messages[0].text.startswith("Thank you")
    assert await redis.hgetall(streams.FEEDBACK_COUNTS) == {b"helpful": b"1"}
    assert await redis.get(streams.session_key(victim.who)) is None, "the conversation ended"


async def test_self_harm_words_get_guidance_first_and_a_counselor(
    runtime: ConversationRuntime, redis: Redis, private_key: X25519PrivateKey
) -> None:
    victim = Victim(runtime, "j")
    await victim.to_details()
    turn = await victim.text("I want to die")
    assert turn.messages[0].text.startswith("This sounds very hard.")
    (handoff,) = await _reports(redis, private_key)
    assert handoff["header"].priority == 3
    assert handoff["answers"]["flags"] == ["self_harm", "handoff"]


RECEIPT_SALT = b"s" * 16
RECEIPT_SECRET = b"r" * 32


def _digest(code: str) -> str:
    return receipts.keyed_digest(code, receipts.ReceiptKeys(RECEIPT_SECRET))


class _FailingSender(ReportSender):
    """A sender that fails the way a bug would, quoting what it was given."""

    async def send(
        self, report: SubmitReport, *, blocking: str | None = None, joins: bool = False
    ) -> None:
        raise ValueError(f"cannot send {report.answers}")


async def test_a_failed_turn_logs_no_victim_words_and_says_try_again(
    redis: Redis,
    flows_dir: Path,
    private_key: X25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = ConversationRuntime(
        redis,
        FlowRegistry.load(flows_dir),
        SessionStore(redis, b"r" * 32, 3600),
        _FailingSender(redis, private_key.public_key()),
        receipts=ReceiptHasher(RECEIPT_SECRET, RECEIPT_SALT, FAST_KDF),
        reload_check_s=0,
    )
    victim = Victim(runtime, "h")
    await victim.to_details()
    await victim.text("CANARY-words-of-the-victim")
    turn = await victim.click("send_now")
    assert [m.text for m in turn.messages] == [runtime.text("common.unavailable", "en")]
    failures = [r for r in caplog.records if "turn failed" in r.getMessage()]
    assert failures and "ValueError" in failures[0].getMessage()
    assert "CANARY" not in caplog.text
    assert all(r.exc_info is None for r in caplog.records), "no traceback in the log"


@pytest.mark.parametrize("language", ["zh", "ja", "vi"])
@pytest.mark.parametrize("channel", ["web", "kakao", "telegram"])
async def test_a_handoff_says_how_replies_come_in_the_victims_language(
    runtime: ConversationRuntime, language: str, channel: str
) -> None:
    """zh, ja and vi once fell back to English for these and left `{reply_how}` out."""
    texts = texts_of(language)
    how = texts[{"web": "live.how_web", "kakao": "live.how_kakao"}.get(channel, "live.how_push")]
    who = Pseudonym(language * 32)
    await runtime.handle(Inbound(who, channel, text="/start", language=language))
    turn = await runtime.handle(Inbound(who, channel, text="/human", language=language))
    handoff = turn.messages[0].text
    assert how in handoff and "{" not in handoff
    assert handoff.startswith(texts["safety.handoff"].split("{")[0])
