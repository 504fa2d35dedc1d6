"""What every Telegram test shares: the door wired as `bot.node` wires it, in polling or webhook
mode, pointed at the fake Bot API; a victim in the Telegram app; the shipped flow's texts.

The tests lean on the flow as little as they can: its texts come from the locale files, and its
happy path is written down once, in `HAPPY_PATH`.
"""

from __future__ import annotations

import re
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import cache

import pytest
import yaml
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from backend.core import keys
from backend.core import redis_keys as streams
from backend.core.pseudonyms import Pseudonymizer
from backend.core.receipt_codes import ReceiptHasher
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.flows.registry import FlowRegistry
from bot.reports import ReportSender
from bot.runtime import ConversationRuntime
from bot.sessions import SessionStore
from bot.telegram.door import QUICK_EXIT_BUTTON, TelegramConfig, TelegramDoor
from bot.telegram.outbox import OutboxLimits
from tests.conftest import FAST_KDF
from tests.fake_telegram import ApiCall, FakeTelegram, JSONDict

TOKEN = "123456:TEST-token"  # noqa: S105 - a made-up token, only ever sent to the fake
WEBHOOK_SECRET = "test-webhook-secret-0123456789"  # noqa: S105 - a test value
USER_ID = 987654321
GROUP_ID = -1001234567
CANARY_NAME = "CanaryName"
CANARY_TEXT = "CANARY-TEXT-7f3a"
SESSION_TTL_S = 3600
MODES = ["polling", "webhook"]
# Telegram's real limits would make every test wait; these keep the same code paths fast.
FAST_LIMITS = OutboxLimits(
    per_chat_per_s=1000.0,
    per_chat_burst=50,
    per_bot_per_s=1000.0,
    per_bot_burst=50,
    max_attempts=3,
    backoff_s=0.01,
)
EXIT_NOTICE_S = 0.2
# The shipped flow's happy path, the one place the tests name its steps: what the victim does,
# and the text keys of the replies. A longer flow changes this list, not the tests.
DETAILS = f"Someone made pictures of me. {CANARY_TEXT}"
HAPPY_PATH: list[tuple[str, str, list[str]]] = [
    ("say", "/start", ["safety.welcome", "report.consent"]),
    ("press", "agree", ["report.category"]),
    ("press", "deepfake", ["report.age"]),
    ("press", "18_plus", ["report.details"]),
    ("say", DETAILS, ["report.when"]),
    ("press", "send_now", ["report.received", "feedback.question"]),
]


@cache
def _locale(language: str) -> dict[str, dict[str, str]]:
    """The shipped translations, read straight from the YAML an administrator edits."""
    loaded = yaml.safe_load((SHIPPED_FLOWS_DIR / "locales" / f"{language}.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def say(key: str, language: str = "en") -> str:
    section, name = key.split(".")
    return _locale(language)[section][name]


def matches(text: str, key: str, language: str = "en") -> bool:
    """Whether `text` is the locale text `key`, its {placeholders} (a receipt code) filled."""
    parts = re.split(r"\{\w+\}", say(key, language))
    return re.fullmatch(".+?".join(re.escape(part) for part in parts), text, re.S) is not None


def all_match(said: list[str], keys: list[str], language: str = "en") -> bool:
    return len(said) == len(keys) and all(
        matches(text, key, language) for text, key in zip(said, keys, strict=True)
    )


def category_choices() -> list[str]:
    flow = yaml.safe_load((SHIPPED_FLOWS_DIR / "report.flow.yaml").read_text())
    choices: list[str] = flow["slots"]["category"]["choices"]
    return choices


def texts(calls: list[ApiCall]) -> list[str]:
    return [call.params["text"] for call in calls]


def assert_private_and_protected(calls: list[ApiCall], chat_id: int = USER_ID) -> None:
    for call in calls:
        assert call.json("chat_id") == chat_id
        assert call.json("protect_content") is True, "every message to a victim is protected"
        assert "parse_mode" not in call.params, "no markup: no text can break formatting"


def make_runtime(
    redis: Redis, flows: FlowRegistry, center_key: X25519PrivateKey
) -> tuple[ConversationRuntime, bytes]:
    root_secret = secrets.token_bytes(32)
    return (
        ConversationRuntime(
            redis,
            flows,
            SessionStore(redis, root_secret, SESSION_TTL_S),
            ReportSender(redis, center_key.public_key()),
            receipts=ReceiptHasher(b"r" * 32, b"s" * 16, FAST_KDF),
        ),
        root_secret,
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def running_door(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    runtime: ConversationRuntime,
    root_secret: bytes,
    *,
    limits: OutboxLimits = FAST_LIMITS,
    max_file_bytes: int = 1024,
) -> AsyncIterator[TelegramDoor]:
    """The door wired the way `bot.node` wires it; in webhook mode its route is served on
    127.0.0.1 the way `bot.node` adds it to the aiohttp app."""
    runner: web.AppRunner | None = None
    webhook_url = None
    if mode == "webhook":
        webhook_url = f"http://127.0.0.1:{_free_port()}/telegram/hook"
    config = TelegramConfig(
        token=TOKEN,
        base_url=telegram.base_url,
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET if webhook_url else None,
        max_file_bytes=max_file_bytes,
        limits=limits,
        exit_notice_s=EXIT_NOTICE_S,
    )
    door = TelegramDoor(
        config,
        runtime=runtime,
        pseudonymizer=Pseudonymizer(root_secret),
        redis=redis,
        root_secret=root_secret,
        session_ttl_s=SESSION_TTL_S,
    )
    if door.webhook_path is not None and webhook_url is not None:
        app = web.Application()
        app.router.add_post(door.webhook_path, door.handle_webhook)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        port = int(webhook_url.split(":")[2].split("/")[0])
        await web.TCPSite(runner, "127.0.0.1", port).start()
    await door.start()
    try:
        yield door
    finally:
        await door.stop()
        if runner is not None:
            await runner.cleanup()


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


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


@pytest.fixture
async def door(
    mode: str,
    redis: Redis,
    telegram: FakeTelegram,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> AsyncIterator[TelegramDoor]:
    runtime, root_secret = make_runtime(redis, flows, center_key)
    async with running_door(mode, redis, telegram, runtime, root_secret) as running:
        yield running


class Victim:
    """One person in the Telegram app, talking to the bot in a private chat."""

    def __init__(
        self,
        telegram: FakeTelegram,
        language_code: str | None,
        user_id: int = USER_ID,
        name: str = CANARY_NAME,
    ) -> None:
        self.telegram = telegram
        self.user = telegram.user(user_id, name, language_code)
        self.user["last_name"] = name
        self.user["username"] = name.lower()
        self.chat = telegram.private_chat(self.user)
        self.sent: list[JSONDict] = []

    async def _replies(
        self, action: Callable[[], Awaitable[object]], replies: int
    ) -> list[ApiCall]:
        seen = len(self.telegram.calls_to("sendMessage"))
        await action()
        calls = await self.telegram.wait_for("sendMessage", seen + replies)
        mine = [c for c in calls[seen:] if c.json("chat_id") == self.chat["id"]]
        while len(mine) < replies:  # other chats' replies are interleaved
            calls = await self.telegram.wait_for("sendMessage", len(calls) + 1)
            mine = [c for c in calls[seen:] if c.json("chat_id") == self.chat["id"]]
        return mine[:replies]

    async def say(self, text: str, *, replies: int) -> list[ApiCall]:
        async def send() -> None:
            self.sent.append(await self.telegram.send_text(self.user, self.chat, text))

        return await self._replies(send, replies)

    async def send(
        self,
        kind: str,
        *,
        caption: str | None = None,
        content: bytes | None = None,
        replies: int,
    ) -> tuple[JSONDict, list[ApiCall]]:
        """Send a photo, sticker, voice message or document (its bytes `content`, or zeros);
        the message and the replies."""
        sent: list[JSONDict] = []

        async def send() -> None:
            message = await self.telegram.send_attachment(
                self.user, self.chat, kind, caption=caption, content=content
            )
            sent.append(message)
            self.sent.append(message)

        calls = await self._replies(send, replies)
        return sent[0], calls

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
        query_ids: list[str] = []

        async def press() -> None:
            query_ids.append(await self.telegram.press(self.user, message, data))

        calls = await self._replies(press, replies)
        answers = await self.telegram.wait_for("answerCallbackQuery", answered + 1)
        assert query_ids[0] in [a.params["callback_query_id"] for a in answers[answered:]]
        return calls

    async def walk(self, steps: int | None = None, language: str = "en") -> list[ApiCall]:
        """Follow `HAPPY_PATH` (its first `steps` turns), asserting every reply; all replies."""
        seen: list[ApiCall] = []
        last: ApiCall | None = None
        for action, value, keys_ in HAPPY_PATH[:steps]:
            if action == "say":
                calls = await self.say(value, replies=len(keys_))
            else:
                assert last is not None
                calls = await self.press(last, value, replies=len(keys_))
            assert all_match(texts(calls), keys_, language), (texts(calls), keys_)
            assert_private_and_protected(calls, self.chat["id"])
            seen += calls
            last = calls[-1]
        return seen


def buttons(call: ApiCall) -> list[str]:
    """The flow's buttons under a message, without the quick-exit button the door adds."""
    return [data for data in call.callback_data() if data != QUICK_EXIT_BUTTON]


def raw(value: object) -> bytes:
    # The client runs without decode_responses, so every reply item is bytes.
    assert isinstance(value, bytes), f"expected bytes from Redis, got {type(value).__name__}"
    return value


async def stream(redis: Redis, key: bytes | str) -> list[dict[bytes, bytes]]:
    entries = await redis.xrange(key)
    return [{raw(k): raw(v) for k, v in (fields or {}).items()} for _id, fields in entries or []]


async def reports(redis: Redis) -> list[dict[bytes, bytes]]:
    """The reports on the reports stream, without the content-free events beside them (a
    receipt's `receipt_issued` follows every finished report)."""
    return [
        entry
        for entry in await stream(redis, streams.REPORTS_STREAM)
        if streams.FIELD_EVENT.encode() not in entry
    ]


async def plaintext_in_redis(redis: Redis, markers: list[bytes]) -> list[str]:
    """Every place in Redis where a marker shows in clear: key names, values, stream entries.

    DUMP alone is not enough (Redis may LZF-compress a value in its dump), so each type is also
    read back through its own command.
    """
    found: list[str] = []
    seen_keys = 0

    def check(where: str, blobs: object) -> None:
        items = list(blobs) if isinstance(blobs, list | set | tuple) else [blobs]
        blob = b"\n".join(raw(item) for item in items)
        found.extend(f"{marker.decode()} in {where}" for marker in markers if marker in blob)

    async for key in redis.scan_iter(count=1000):
        seen_keys += 1
        check("a key name", key)
        check(f"DUMP {key!r}", await redis.dump(key) or b"")
        kind = raw(await redis.type(key)).decode()
        if kind == "none":  # expired between SCAN and now
            continue
        if kind == "string":
            check(f"GET {key!r}", await redis.get(key) or b"")
        elif kind == "stream":
            for fields in await stream(redis, key):
                check(f"XRANGE {key!r}", [b"%s=%s" % item for item in fields.items()])
        elif kind == "hash":
            pairs = (await redis.hgetall(key)).items()
            check(f"HGETALL {key!r}", [raw(k) + b"=" + raw(v) for k, v in pairs])
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
