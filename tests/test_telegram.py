"""The Telegram door end to end: PTB's real Application long-polls a fake Bot API over HTTP.

Everything on this machine is real (Redis, the flows, sealing, the runtime); only Telegram's
servers are stood in for, by `tests.fake_telegram`, which speaks the Bot API's own protocol.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
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
from bot.cli import configure_logging
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram import PRIVATE_ONLY, TelegramDoor
from tests.fake_telegram import ATTACHMENT_KINDS, ApiCall, FakeTelegram, JSONDict

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


@asynccontextmanager
async def _running_door(
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
    try:
        yield door
    finally:
        await door.stop()


@pytest.fixture
async def door(
    redis: Redis, telegram: FakeTelegram, flows: FlowRegistry, center_key: X25519PrivateKey
) -> AsyncIterator[TelegramDoor]:
    async with _running_door(redis, telegram, flows, center_key) as running:
        yield running


class Victim:
    """One person in the Telegram app, talking to the bot in a private chat."""

    def __init__(self, telegram: FakeTelegram, language_code: str | None) -> None:
        self.telegram = telegram
        self.user = telegram.user(USER_ID, CANARY_NAME, language_code)
        self.user["last_name"] = CANARY_NAME
        self.user["username"] = CANARY_NAME.lower()
        self.chat = telegram.private_chat(self.user)
        self.sent: list[JSONDict] = []

    async def say(self, text: str, *, replies: int) -> list[ApiCall]:
        seen = len(self.telegram.calls_to("sendMessage"))
        self.sent.append(await self.telegram.send_text(self.user, self.chat, text))
        return (await self.telegram.wait_for("sendMessage", seen + replies))[seen:]

    async def send(
        self, kind: str, *, caption: str | None = None, replies: int
    ) -> tuple[JSONDict, list[ApiCall]]:
        """Send a photo, sticker, voice message or document; the message and the replies."""
        seen = len(self.telegram.calls_to("sendMessage"))
        message = await self.telegram.send_attachment(self.user, self.chat, kind, caption=caption)
        self.sent.append(message)
        return message, (await self.telegram.wait_for("sendMessage", seen + replies))[seen:]

    async def edit(self, message: JSONDict, text: str) -> None:
        """Edit a message sent earlier. Nothing to wait for: an edit must get no reply, so a test
        proves it was handled by what the next real input gets (one chat's updates are handled
        in order)."""
        await self.telegram.edit_text(self.user, message, text)

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
@pytest.mark.parametrize("supergroup", [False, True], ids=["group", "supergroup"])
async def test_a_group_chat_is_refused_politely_left_and_leaves_no_trace(
    telegram: FakeTelegram, redis: Redis, supergroup: bool
) -> None:
    user = telegram.user(USER_ID, CANARY_NAME, "ko")
    group = telegram.group_chat(GROUP_ID, "Some group", supergroup=supergroup)
    await telegram.send_text(user, group, "/start")
    (refusal,) = await telegram.wait_for("sendMessage", 1)
    assert refusal.json("chat_id") == GROUP_ID
    assert refusal.params["text"] == PRIVATE_ONLY
    assert "reply_markup" not in refusal.params
    assert refusal.json("protect_content") is True
    assert refusal.result["has_protected_content"] is True
    (leave,) = await telegram.wait_for("leaveChat", 1)
    assert leave.json("chat_id") == GROUP_ID
    assert leave.result is True, "the fake accepted the leave: the bot was in that group"
    assert telegram.calls.index(refusal) < telegram.calls.index(leave), "refuse, then leave"
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


@pytest.mark.usefixtures("door")
async def test_an_edited_message_is_not_an_answer(
    telegram: FakeTelegram, redis: Redis, center_key: X25519PrivateKey
) -> None:
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.say("/start", replies=2)
    (start_message,) = victim.sent

    # At the consent step, the earlier "/start" edited to read like the answer. Were the edit
    # handled as input, its replies would come before the press's (one chat, in order) and the
    # press would be stale.
    await victim.edit(start_message, _say("common.agree", "en"))
    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == _say("report.category", "en")
    (details,) = await victim.press(category, "deepfake", replies=1)
    assert details.params["text"] == _say("report.details", "en")

    # At the details step an edit would be taken as the account and sealed as the report.
    await victim.edit(start_message, f"Edited. {CANARY_TEXT}")
    assert await redis.xlen(streams.REPORTS_STREAM) == 0
    (received,) = await victim.say("Someone made pictures of me.", replies=1)
    assert received.params["text"] == _say("report.received", "en")

    assert len(telegram.calls_to("sendMessage")) == 5, "an edit gets no reply"
    (entry,) = await _stream(redis, streams.REPORTS_STREAM)
    envelope = Envelope.from_bytes(entry[streams.FIELD_ENVELOPE.encode()])
    body = json.loads(open_envelope(envelope, center_key))
    assert body["answers"]["details"] == "Someone made pictures of me."


def _file_markers(message: JSONDict) -> list[bytes]:
    """Every file id and unique id a message carries: none of them may be kept."""
    found: list[bytes] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in {"file_id", "file_unique_id"}:
                    found.append(str(value).encode())
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(message)
    assert found, "an attachment carries file ids"
    return found


@pytest.mark.usefixtures("door")
@pytest.mark.parametrize("kind", ATTACHMENT_KINDS)
async def test_a_file_at_first_contact_gets_a_calm_answer_and_is_never_fetched_or_kept(
    telegram: FakeTelegram, redis: Redis, kind: str
) -> None:
    victim = Victim(telegram, "ko-KR")
    # Telegram takes no caption on a sticker.
    caption = None if kind == "sticker" else CANARY_TEXT
    _message, (answer,) = await victim.send(kind, caption=caption, replies=1)
    assert answer.params["text"] == _say("common.no_files", "ko")
    assert "reply_markup" not in answer.params
    _assert_private_and_protected([answer])
    assert answer.result["has_protected_content"] is True
    assert telegram.calls_to("getFile") == [], "the bot never fetches what it cannot keep"
    assert [k async for k in redis.scan_iter()] == [], "not even a session or a lock is left"

    # And the conversation can begin as usual afterwards.
    welcome, _consent = await victim.say("/start", replies=2)
    assert welcome.params["text"] == _say("report.welcome", "ko")


@pytest.mark.usefixtures("door")
async def test_a_photo_mid_conversation_is_answered_and_changes_nothing(
    telegram: FakeTelegram, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.say("/start", replies=2)

    photo, (answer,) = await victim.send("photo", caption=CANARY_TEXT, replies=1)
    assert answer.params["text"] == _say("common.no_files", "en")
    _assert_private_and_protected([answer])

    # The conversation is still at the consent step: the buttons there still work.
    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == _say("report.category", "en")
    assert telegram.calls_to("getFile") == []
    markers = [str(USER_ID).encode(), CANARY_NAME.encode(), CANARY_TEXT.encode()]
    markers += _file_markers(photo)
    assert await _plaintext_in_redis(redis, markers) == []
    logged = caplog.text
    assert not [marker for marker in markers if marker.decode() in logged]


@pytest.mark.usefixtures("door")
async def test_a_failed_reply_gets_the_unavailable_text_and_the_log_names_no_one(
    telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")
    # Telegram has a bad moment: the first reply of the turn (the welcome) is refused.
    telegram.fail_next("sendMessage", 500, "Internal Server Error")
    victim = Victim(telegram, "ko-KR")

    failed, notice = await victim.say(f"Help. {CANARY_TEXT}", replies=2)
    assert failed.result is None, "the fake refused that one"
    assert notice.params["text"] == _say("common.unavailable", "ko")
    _assert_private_and_protected([notice])

    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.name == "bot.telegram"
    assert error.getMessage() == "telegram update failed with NetworkError"
    assert error.exc_info is None, "a traceback may quote what was sent"
    markers = [str(USER_ID), CANARY_NAME, CANARY_TEXT, TOKEN]
    logged = caplog.text
    assert not [marker for marker in markers if marker in logged]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """`configure_logging` changes process-wide logger levels: put every one back."""
    manager = logging.Logger.manager
    before = {
        name: logger.level
        for name, logger in manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    yield
    for name, logger in list(manager.loggerDict.items()):
        if isinstance(logger, logging.Logger):
            logger.setLevel(before.get(name, logging.NOTSET))
    logging.root.setLevel(root_level)
    logging.root.handlers[:] = root_handlers


@pytest.mark.usefixtures("restored_logging")
async def test_debug_logging_keeps_the_token_and_the_victim_out_of_the_logs(
    telegram: FakeTelegram,
    redis: Redis,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # What `hotline --log-level DEBUG` does, before the door is built: the Bot logs its API URL,
    # token and all, as it starts. The root is set through caplog too, because basicConfig does
    # nothing while pytest's capturing handler sits on the root logger.
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    assert logging.getLogger("bot.telegram").isEnabledFor(logging.DEBUG)
    assert logging.getLogger("backend.flows").isEnabledFor(logging.DEBUG)
    for library in ("telegram.Bot", "telegram.ext.Application", "httpx", "httpcore.http11"):
        assert not logging.getLogger(library).isEnabledFor(logging.INFO), library

    async with _running_door(redis, telegram, flows, center_key):
        flow = yaml.safe_load((SHIPPED_FLOWS_DIR / "report.flow.yaml").read_text())
        choices = flow["slots"]["category"]["choices"]
        await _report_a_deepfake(Victim(telegram, "en"), choices, "en")
        assert await redis.xlen(streams.REPORTS_STREAM) == 1

    assert caplog.records, "a DEBUG run logs something, or this test proves nothing"
    logged = caplog.text
    markers = [TOKEN, str(USER_ID), CANARY_NAME, CANARY_TEXT]
    assert not [marker for marker in markers if marker in logged]
