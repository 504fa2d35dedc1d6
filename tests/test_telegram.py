"""The Telegram door end to end: PTB's real Application talks to a fake Bot API over HTTP, by
long polling and by webhook (every test here runs in both modes).

Everything on this machine is real (Redis, the flows, sealing, the runtime); only Telegram's
servers are stood in for, by `tests.fake_telegram`, which speaks the Bot API's own protocol.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import redis_keys as streams
from backend.core.conversation import Outbound
from backend.core.sealing import Envelope, open_envelope
from backend.flows.registry import FlowRegistry
from bot.cli import configure_logging
from bot.telegram.door import PRIVATE_ONLY, QUICK_EXIT_BUTTON, TelegramDoor
from tests import telegram_support
from tests.fake_telegram import ATTACHMENT_KINDS, FakeTelegram, JSONDict
from tests.telegram_support import (
    CANARY_NAME,
    CANARY_TEXT,
    DETAILS,
    GROUP_ID,
    TOKEN,
    USER_ID,
    Victim,
    assert_private_and_protected,
    buttons,
    category_choices,
    make_runtime,
    matches,
    plaintext_in_redis,
    reports,
    running_door,
    say,
    texts,
)

# The shared fixtures, bound here so pytest finds them.
center_key = telegram_support.center_key
door = telegram_support.door
flows = telegram_support.flows
mode = telegram_support.mode
telegram = telegram_support.telegram

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
    victim = Victim(telegram, language_code)
    calls = await victim.walk(language=language)

    welcome, consent, category = calls[:3]
    assert buttons(welcome) == [], "a plain message has no keyboard of the flow's"
    assert buttons(consent) == ["agree", "decline"]
    assert consent.result["has_protected_content"] is True
    assert buttons(category) == category_choices()
    labels = [b["text"] for row in category.json("reply_markup")["inline_keyboard"] for b in row]
    assert labels[category_choices().index("deepfake")] == say("category.deepfake", language)
    # The quick exit is one tap away under the latest message of every turn.
    assert consent.callback_data()[-1] == QUICK_EXIT_BUTTON
    assert labels[-1] == say("common.quick_exit", language)
    assert calls[-1].callback_data()[-1] == QUICK_EXIT_BUTTON, "the way out stays after a report"

    (entry,) = await reports(redis)
    assert entry[streams.FIELD_IDEMPOTENCY_KEY.encode()]
    envelope = Envelope.from_bytes(entry[streams.FIELD_ENVELOPE.encode()])
    assert envelope.header.channel == "telegram"
    assert envelope.header.category == "deepfake"
    assert envelope.header.language == language
    body = json.loads(open_envelope(envelope, center_key))
    assert body["answers"]["category"] == "deepfake"
    assert body["answers"]["details"] == DETAILS
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    (thanks,) = await victim.press(calls[-1], "helpful", replies=1)
    assert thanks.params["text"] == say("feedback.thanks", language)
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
    for prefix in (streams.SESSION_KEY_PREFIX, streams.TELEGRAM_CHAT_PREFIX):
        assert not [k async for k in redis.scan_iter(match=prefix + "*")]
    assert not [k async for k in redis.scan_iter(match=streams.CONVERSATION_LOCK_PREFIX + "*")]
    assert await redis.xlen(streams.REPORTS_STREAM) == 0


@pytest.mark.usefixtures("door")
async def test_a_stale_button_gets_a_calm_answer_and_the_question_again(
    telegram: FakeTelegram,
) -> None:
    victim = Victim(telegram, "en")
    _welcome, consent, category = await victim.walk(2)

    # The consent message still shows its buttons; pressing "agree" again is a stale press.
    stale, again = await victim.press(consent, "agree", replies=2)
    assert stale.params["text"] == say("common.stale_button")
    assert again.params["text"] == say("report.category")
    assert buttons(again) == buttons(category)
    assert_private_and_protected([stale, again])
    assert say("common.unavailable") not in texts(telegram.calls_to("sendMessage"))

    # And the conversation carries on where it was.
    (age,) = await victim.press(again, "deepfake", replies=1)
    assert age.params["text"] == say("report.age")


@pytest.mark.usefixtures("door")
async def test_a_press_too_old_to_answer_still_moves_the_conversation(
    telegram: FakeTelegram,
) -> None:
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.walk(1)
    # Past Telegram's callback window answerCallbackQuery fails ("query is too old").
    telegram.fail_next("answerCallbackQuery", 400, "Bad Request: query is too old")
    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == say("report.category")


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

    # Mid-conversation, while an encrypted session, the chat record and their keys exist.
    _welcome, _consent, category = await victim.walk(2)
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")]
    assert [k async for k in redis.scan_iter(match=streams.TELEGRAM_CHAT_PREFIX + "*")]
    assert await plaintext_in_redis(redis, markers) == []

    # A marker typed where a button was expected is refused, and kept nowhere.
    use_buttons, _again = await victim.say(CANARY_TEXT, replies=2)
    assert use_buttons.params["text"] == say("common.use_buttons")
    assert await plaintext_in_redis(redis, markers) == []

    (age,) = await victim.press(category, "deepfake", replies=1)
    await victim.press(age, "18_plus", replies=1)
    (when,) = await victim.say(f"It was {CANARY_NAME}'s ex. {CANARY_TEXT}", replies=1)
    await victim.press(when, "send_now", replies=2)
    assert len(await reports(redis)) == 1, "the canary run must reach a report"
    assert await plaintext_in_redis(redis, markers) == []

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
    _welcome, consent = await victim.walk(1)
    (start_message,) = victim.sent

    # At the consent step, the earlier "/start" edited to read like the answer. Were the edit
    # handled as input, its replies would come before the press's (one chat, in order) and the
    # press would be stale.
    await victim.edit(start_message, say("common.agree"))
    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == say("report.category")
    (age,) = await victim.press(category, "deepfake", replies=1)
    (details,) = await victim.press(age, "18_plus", replies=1)
    assert details.params["text"] == say("report.details")

    # At the details step an edit would be taken as the account and sealed as the report.
    await victim.edit(start_message, f"Edited. {CANARY_TEXT}")
    assert await redis.xlen(streams.REPORTS_STREAM) == 0
    (when,) = await victim.say("Someone made pictures of me.", replies=1)
    received, _feedback = await victim.press(when, "send_now", replies=2)
    assert matches(received.params["text"], "report.received")

    assert len(telegram.calls_to("sendMessage")) == 8, "an edit gets no reply"
    (entry,) = await reports(redis)
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
    message, (answer,) = await victim.send(kind, caption=caption, replies=1)
    assert answer.params["text"] == say("common.no_files", "ko")
    assert answer.callback_data() == [QUICK_EXIT_BUTTON], "only the way out"
    assert_private_and_protected([answer])
    assert answer.result["has_protected_content"] is True
    assert telegram.calls_to("getFile") == [], "the bot never fetches what it cannot keep"
    assert [k async for k in redis.scan_iter(match=streams.SESSION_KEY_PREFIX + "*")] == []
    markers = [str(USER_ID).encode(), CANARY_TEXT.encode(), *_file_markers(message)]
    assert await plaintext_in_redis(redis, markers) == []

    # And the conversation can begin as usual afterwards.
    welcome, _consent = await victim.say("/start", replies=2)
    assert welcome.params["text"] == say("safety.welcome", "ko")


@pytest.mark.usefixtures("door")
async def test_a_file_over_the_size_limit_gets_a_clear_answer_and_is_never_fetched(
    telegram: FakeTelegram,
) -> None:
    victim = Victim(telegram, "en")
    _welcome, _consent = await victim.walk(1)
    # The door under test takes files up to 1024 bytes; the fake's document is 160 bytes, and
    # a photo's largest size is 256: make one over the limit.
    telegram.add_file(b"\x00" * 2048, folder="documents")
    big = {"file_id": "file-big", "file_unique_id": "ubig", "file_size": 2048}
    await telegram.queue_raw(
        {
            "message": {
                "message_id": 90,
                "from": victim.user,
                "chat": victim.chat,
                "date": 0,
                "document": {**big, "file_name": "x.pdf", "mime_type": "application/pdf"},
            }
        }
    )
    replies = await telegram.wait_for("sendMessage", 3)
    assert replies[2].params["text"] == say("common.file_too_large")
    assert telegram.calls_to("getFile") == []


@pytest.mark.usefixtures("door")
async def test_a_photo_mid_conversation_is_answered_and_changes_nothing(
    telegram: FakeTelegram, redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")
    victim = Victim(telegram, "en")
    _welcome, consent = await victim.walk(1)

    photo, (answer,) = await victim.send("photo", caption=CANARY_TEXT, replies=1)
    assert answer.params["text"] == say("common.no_files")
    assert_private_and_protected([answer])

    # The conversation is still at the consent step: the buttons there still work.
    (category,) = await victim.press(consent, "agree", replies=1)
    assert category.params["text"] == say("report.category")
    assert telegram.calls_to("getFile") == []
    markers = [str(USER_ID).encode(), CANARY_NAME.encode(), CANARY_TEXT.encode()]
    markers += _file_markers(photo)
    assert await plaintext_in_redis(redis, markers) == []
    logged = caplog.text
    assert not [marker for marker in markers if marker.decode() in logged]


@pytest.mark.usefixtures("door")
async def test_a_text_at_telegrams_size_limit_is_refused_calmly_and_changes_nothing(
    telegram: FakeTelegram, redis: Redis
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk(4)
    too_long, _details = await victim.say("가" * 4096, replies=2)
    assert too_long.params["text"] == say("common.too_long")
    assert await redis.xlen(streams.REPORTS_STREAM) == 0
    (when,) = await victim.say("In parts, then.", replies=1)
    assert when.params["text"] == say("report.when")
    received, _feedback = await victim.press(when, "send_now", replies=2)
    assert matches(received.params["text"], "report.received")


async def test_a_long_text_is_split_at_the_limit_and_markup_is_sent_verbatim(
    door: TelegramDoor, telegram: FakeTelegram
) -> None:
    victim = Victim(telegram, "en")
    await victim.walk(1)  # the chat exists at the fake
    seen = len(telegram.calls_to("sendMessage"))
    # An administrator's text with what would be markup in HTML or MarkdownV2.
    long_text = ("<b>bold</b> *star* _under_ [link](http://x) `code` " * 200).strip()
    assert len(long_text) > 2 * 4096
    message = Outbound(long_text, ())
    await door._send_guarded(door._pseudonym(USER_ID), USER_ID, (message,), "Exit")
    parts = (await telegram.wait_for("sendMessage", seen + 3))[seen:]
    assert all(len(p.params["text"]) <= 4096 for p in parts)
    assert "".join(p.params["text"] for p in parts) == long_text
    assert [p.callback_data() for p in parts] == [[], [], [QUICK_EXIT_BUTTON]]
    assert_private_and_protected(parts)


@pytest.mark.usefixtures("door")
async def test_a_failed_reply_gets_the_unavailable_text_and_the_log_names_no_one(
    telegram: FakeTelegram, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="bot")
    caplog.set_level(logging.DEBUG, logger="backend")
    # Telegram has a bad spell: the welcome is refused on every attempt the outbox makes.
    for _ in range(3):
        telegram.fail_next("sendMessage", 500, "Internal Server Error")
    victim = Victim(telegram, "ko-KR")

    *failed, notice = await victim.say(f"Help. {CANARY_TEXT}", replies=4)
    assert [f.result for f in failed] == [None, None, None], "the fake refused those"
    assert notice.params["text"] == say("common.unavailable", "ko")
    assert_private_and_protected([notice])

    (error,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert error.name == "bot.telegram"
    assert error.getMessage() == "telegram update failed with DeliveryFailedError"
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
async def test_debug_logging_keeps_the_token_and_the_victim_out_of_the_logs(  # noqa: PLR0917 - pytest fixtures
    mode: str,
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

    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door(mode, redis, telegram, runtime, root_secret):
        await Victim(telegram, "en").walk()
        assert len(await reports(redis)) == 1

    assert caplog.records, "a DEBUG run logs something, or this test proves nothing"
    logged = caplog.text
    markers = [TOKEN, str(USER_ID), CANARY_NAME, CANARY_TEXT]
    assert not [marker for marker in markers if marker in logged]
