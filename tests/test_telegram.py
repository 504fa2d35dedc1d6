"""The Telegram door end to end: PTB's real Application long-polls a fake Bot API over HTTP.

Everything on this machine is real (Redis, the flows, sealing, the runtime); only Telegram's
servers are stood in for, by `tests.fake_telegram`, which speaks the Bot API's own protocol.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator
from functools import cache

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend import keys, streams
from backend.flows.registry import FlowRegistry
from backend.pseudonyms import Pseudonymizer
from backend.sealing import Envelope, open_envelope
from backend.settings import SHIPPED_FLOWS_DIR
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram import PRIVATE_ONLY, TelegramDoor
from tests.fake_telegram import ApiCall, FakeTelegram, JSONDict

TOKEN = "123456:TEST-token"  # noqa: S105 - a made-up token, only ever sent to the fake
USER_ID = 987654321
GROUP_ID = -1001234567
CANARY_NAME = "CanaryName"
CANARY_TEXT = "CANARY-TEXT-7f3a"
SESSION_TTL_S = 3600


@pytest.fixture(scope="module")
def flows() -> FlowRegistry:
    return FlowRegistry.load(SHIPPED_FLOWS_DIR)


@pytest.fixture
def center_key() -> X25519PrivateKey:
    return keys.generate_private_key()


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(TOKEN, max_hold_s=0.3) as fake:
        yield fake


@pytest.fixture
async def door(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> AsyncIterator[TelegramDoor]:
    """Wired the way `bot.node` wires it, pointed at the fake Bot API."""
    root_secret = secrets.token_bytes(32)
    pseudonymizer = Pseudonymizer(root_secret)
    runtime = ConversationRuntime(
        redis,
        flows,
        SessionStore(redis, root_secret, SESSION_TTL_S),
        ReportSender(redis, center_key.public_key()),
    )
    door = TelegramDoor(TOKEN, telegram.base_url, runtime, pseudonymizer)
    await door.start()
    yield door
    await door.stop()


class Victim:
    """One person in the Telegram app, talking to the bot in a private chat."""

    def __init__(self, telegram: FakeTelegram, language_code: str | None) -> None:
        self.telegram = telegram
        self.user = telegram.user(USER_ID, CANARY_NAME, language_code)
        self.user["last_name"] = CANARY_NAME
        self.user["username"] = CANARY_NAME.lower()
        self.chat = telegram.private_chat(self.user)

    async def say(self, text: str, *, replies: int) -> list[ApiCall]:
        seen = len(self.telegram.calls_to("sendMessage"))
        await self.telegram.send_text(self.user, self.chat, text)
        return (await self.telegram.wait_for("sendMessage", seen + replies))[seen:]

    async def press(self, under: ApiCall, data: str, *, replies: int) -> list[ApiCall]:
        """Press a button under a message the bot sent; the button must really be there."""
        assert data in under.callback_data(), f"no button {data!r} under that message"
        message: JSONDict = under.result
        answered = len(self.telegram.calls_to("answerCallbackQuery"))
        seen = len(self.telegram.calls_to("sendMessage"))
        query_id = await self.telegram.press(self.user, message, data)
        answers = await self.telegram.wait_for("answerCallbackQuery", answered + 1)
        assert answers[answered].params["callback_query_id"] == query_id
        return (await self.telegram.wait_for("sendMessage", seen + replies))[seen:]


@cache
def _locale(language: str) -> dict[str, dict[str, str]]:
    """The shipped translations, read straight from the YAML an administrator edits."""
    loaded = yaml.safe_load((SHIPPED_FLOWS_DIR / "locales" / f"{language}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _say(key: str, language: str) -> str:
    section, name = key.split(".")
    return _locale(language)[section][name]


def _texts(calls: list[ApiCall]) -> list[str]:
    return [call.params["text"] for call in calls]


def _assert_private_and_protected(calls: list[ApiCall]) -> None:
    for call in calls:
        assert call.json("chat_id") == USER_ID
        assert call.json("protect_content") is True, "every message to a victim is protected"


async def _report_a_deepfake(victim: Victim, choices: list[str], language: str) -> None:
    """The whole happy path, asserting what the victim sees at every turn."""

    def say(key: str) -> str:
        return _say(key, language)

    start = await victim.say("/start", replies=2)
    assert _texts(start) == [say("report.welcome"), say("report.consent")]
    _assert_private_and_protected(start)
    welcome, consent = start
    assert "reply_markup" not in welcome.params
    assert consent.callback_data() == ["agree", "decline"]
    assert consent.result["has_protected_content"] is True

    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == say("report.category")
    _assert_private_and_protected([category])
    assert len(choices) == 10
    assert category.callback_data() == choices
    labels = [b["text"] for row in category.json("reply_markup")["inline_keyboard"] for b in row]
    assert labels[choices.index("deepfake")] == say("category.deepfake")

    (details,) = await victim.press(category, "deepfake", replies=1)
    assert details.params["text"] == say("report.details")

    (received,) = await victim.say(f"Someone made pictures of me. {CANARY_TEXT}", replies=1)
    assert received.params["text"] == say("report.received")
    _assert_private_and_protected([details, received])


# Telegram's language_code -> the locale the victim must be answered in.
LANGUAGES = {"en": "en", "ko-KR": "ko"}


@pytest.mark.usefixtures("door")
@pytest.mark.parametrize("language_code", list(LANGUAGES))
async def test_a_whole_report_through_telegram(
    telegram: FakeTelegram,
    redis: Redis,
    center_key: X25519PrivateKey,
    language_code: str,
) -> None:
    language = LANGUAGES[language_code]
    flow = yaml.safe_load((SHIPPED_FLOWS_DIR / "report.flow.yaml").read_text())
    choices = flow["slots"]["category"]["choices"]
    await _report_a_deepfake(Victim(telegram, language_code), choices, language)

    (entry,) = await _stream(redis, streams.REPORTS_STREAM)
    assert entry[streams.FIELD_IDEMPOTENCY_KEY.encode()]
    envelope = Envelope.from_bytes(entry[streams.FIELD_ENVELOPE.encode()])
    assert envelope.header.channel == "telegram"
    assert envelope.header.category == "deepfake"
    assert envelope.header.language == language
    body = json.loads(open_envelope(envelope, center_key))
    assert body == {
        "answers": {
            "category": "deepfake",
            "details": f"Someone made pictures of me. {CANARY_TEXT}",
        }
    }
    assert not [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")], (
        "a finished conversation leaves no session behind"
    )


@pytest.mark.usefixtures("door")
async def test_a_group_chat_is_refused_politely_and_leaves_no_trace(
    telegram: FakeTelegram, redis: Redis
) -> None:
    user = telegram.user(USER_ID, CANARY_NAME, "ko")
    await telegram.send_text(user, telegram.group_chat(GROUP_ID, "Some group"), "/start")
    (refusal,) = await telegram.wait_for("sendMessage", 1)
    assert refusal.json("chat_id") == GROUP_ID
    assert refusal.params["text"] == PRIVATE_ONLY
    assert "reply_markup" not in refusal.params
    assert not [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    assert not [k async for k in redis.scan_iter(match=streams.CONVERSATION_LOCK_PREFIX + "*")]
    assert await redis.xlen(streams.REPORTS_STREAM) == 0


@pytest.mark.usefixtures("door")
async def test_a_stale_button_gets_a_calm_answer_and_the_question_again(
    telegram: FakeTelegram,
) -> None:
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.say("/start", replies=2)
    (category,) = await victim.press(consent, "agree", replies=1)

    # The consent message still shows its buttons; pressing "agree" again is a stale press.
    stale, again = await victim.press(consent, "agree", replies=2)
    assert stale.params["text"] == _say("common.stale_button", "en")
    assert again.params["text"] == _say("report.category", "en")
    assert again.callback_data() == category.callback_data()
    _assert_private_and_protected([stale, again])
    unavailable = _say("common.unavailable", "en")
    assert unavailable not in _texts(telegram.calls_to("sendMessage"))

    # And the conversation carries on where it was.
    (details,) = await victim.press(again, "deepfake", replies=1)
    assert details.params["text"] == _say("report.details", "en")


def _raw(value: object) -> bytes:
    # The client runs without decode_responses, so every reply item is bytes.
    assert isinstance(value, bytes), f"expected bytes from Redis, got {type(value).__name__}"
    return value


async def _stream(redis: Redis, key: bytes | str) -> list[dict[bytes, bytes]]:
    entries = await redis.xrange(key)
    return [{_raw(k): _raw(v) for k, v in (fields or {}).items()} for _id, fields in entries or []]


async def _plaintext_in_redis(redis: Redis, markers: list[bytes]) -> list[str]:
    """Every place in Redis where a marker shows in clear: key names, values, stream entries.

    DUMP alone is not enough (Redis may LZF-compress a value in its dump), so each type is also
    read back through its own command.
    """
    found: list[str] = []
    seen_keys = 0

    def check(where: str, blobs: object) -> None:
        items = list(blobs) if isinstance(blobs, list | set | tuple) else [blobs]
        blob = b"\n".join(_raw(item) for item in items)
        found.extend(f"{marker.decode()} in {where}" for marker in markers if marker in blob)

    async for key in redis.scan_iter(count=1000):
        seen_keys += 1
        check("a key name", key)
        check(f"DUMP {key!r}", await redis.dump(key) or b"")
        kind = _raw(await redis.type(key)).decode()
        if kind == "none":  # expired between SCAN and now
            continue
        if kind == "string":
            check(f"GET {key!r}", await redis.get(key) or b"")
        elif kind == "stream":
            for fields in await _stream(redis, key):
                check(f"XRANGE {key!r}", [b"%s=%s" % item for item in fields.items()])
        elif kind == "hash":
            pairs = (await redis.hgetall(key)).items()
            check(f"HGETALL {key!r}", [_raw(k) + b"=" + _raw(v) for k, v in pairs])
        elif kind == "list":
            check(f"LRANGE {key!r}", await redis.lrange(key, 0, -1))
        elif kind == "set":
            check(f"SMEMBERS {key!r}", await redis.smembers(key))
        elif kind == "zset":
            check(f"ZRANGE {key!r}", await redis.zrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected Redis type {kind} at {key!r}: teach the canary")
    assert seen_keys, "the canary must have something to look at"
    return found


@pytest.mark.usefixtures("door")
async def test_canary_no_telegram_identity_or_victim_text_in_redis_or_logs(
    telegram: FakeTelegram,
    redis: Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")
    markers = [str(USER_ID).encode(), CANARY_NAME.encode(), CANARY_TEXT.encode()]
    victim = Victim(telegram, "en")

    # Mid-conversation, while an encrypted session and its key exist.
    _welcome, consent = await victim.say("/start", replies=2)
    (category,) = await victim.press(consent, "agree", replies=1)
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    assert await _plaintext_in_redis(redis, markers) == []

    # A marker typed where a button was expected is refused, and kept nowhere.
    use_buttons, _again = await victim.say(CANARY_TEXT, replies=2)
    assert use_buttons.params["text"] == _say("common.use_buttons", "en")
    assert await _plaintext_in_redis(redis, markers) == []

    await victim.press(category, "deepfake", replies=1)
    await victim.say(f"It was {CANARY_NAME}'s ex. {CANARY_TEXT}", replies=1)
    assert await redis.xlen(streams.REPORTS_STREAM) == 1, "the canary run must reach a report"
    assert await _plaintext_in_redis(redis, markers) == []

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not [marker for marker in markers if marker.decode() in logged]


async def test_files_come_from_the_same_bot_api_server(
    door: TelegramDoor, telegram: FakeTelegram
) -> None:
    # A Bot API server serves <server>/bot<token>/<method> and <server>/file/bot<token>/<path>;
    # the door once looked for files under <server>/bot/file/bot<token>/, which is a 404.
    file_id = telegram.add_file(b"evidence bytes")
    file = await door.application.bot.get_file(file_id)
    assert await file.download_as_bytearray() == bytearray(b"evidence bytes")
