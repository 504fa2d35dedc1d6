"""The shipped flow tests (`flows/tests/*.test.yaml`), played through every door's real surface.

`hotline flows test` runs the dialog tables in-process, against the engine. Here the same tables
go through what a victim touches: the web chat over HTTP (`POST /chat/api/turn`), KakaoTalk over
HTTP (`POST /kakao/skill`, with the secret header), and Telegram through the real door and the
fake Bot API. Each row's bot column (text keys) is compared with what the victim is shown: the
locale texts in order, {placeholders} matching anything, whitespace ignored, since a door may
split a long text or pack several into one bubble. A row without a bot column is held to what
the engine says in-process for it. Effects, slots, state and flags are the in-process run's job.

Which rows and dialogs a door plays, declared here rather than skipped at run time:
- `files:` rows are played on Telegram only, one photo message per file, each answered as the
  row says. The web chat and KakaoTalk cannot send files; they leave out those rows.
- A table with `channel:` is played only through that door: the flows ask for files only where
  the channel carries them (`ctx.files`), so a table that sends files is Telegram's, and the
  web chat and KakaoTalk have tables of their own for that part of the report.
- Every door plays the same dialogs: all of the tables but those whose outcome the doors cannot
  reproduce by their nature, each dropped with its reason by `_why_not_playable`:
  `open: false` and `after_s` (the doors run on the real clock and the shipped hours, always
  open); `files:` at a step that takes none (Telegram refuses those before the flow sees them);
  the same text typed twice in a row (KakaoTalk puts no id on a request, so an identical body
  from the same user within `KAKAO_DUPLICATE_WINDOW_S` is a duplicate and gets the first
  answer; a button press carries the offer it answers, so two presses of "no" on two
  questions differ); `receipt_known: true` (a door looks the typed code up, and the tables'
  codes were never issued).
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.conversation import Attachment, Inbound, Pseudonym, Session
from backend.core.settings import SHIPPED_FLOWS_DIR
from backend.core.shifts import ShiftBoard
from backend.flows import engine, source
from backend.flows.channels import FILE_CHANNELS
from backend.flows.dialogs import TEST_GLOB
from backend.flows.engine import Bundle, Context
from backend.flows.registry import FlowRegistry
from bot.kakao import SECRET_HEADER
from tests import telegram_support
from tests.conftest import Pair, start_hotline
from tests.fake_telegram import ApiCall, FakeTelegram
from tests.locales import texts_of
from tests.telegram_support import TOKEN, Victim, make_runtime, running_door, texts

CHANNELS = ["telegram", "web", "kakao"]
FILES_CHANNELS = FILE_CHANNELS  # the doors a victim can send files through
KAKAO_BOT_ID = "5f00b1a2c3d4e5f6a7b8c9d0"
KAKAO_SECRET = "kakao-skill-secret-0123"  # noqa: S105 - the test skill's secret
_WHO = Pseudonym("channel-dialog")

center_key = telegram_support.center_key
flows = telegram_support.flows


@dataclass(frozen=True)
class Row:
    """One victim action (None: the first contact), the text keys the victim must see, and
    those texts: from the locale files ({placeholders} unfilled), or as the engine makes them
    where no locale file has the key (the resources list is built from `resources.yaml`)."""

    action: str | None  # say, click or files
    value: str
    keys: tuple[str, ...]
    texts: tuple[str, ...]


@dataclass(frozen=True)
class Dialog:
    name: str
    language: str
    rows: tuple[Row, ...]
    channel: str | None = None  # played only through this door


@cache
def _tables() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((SHIPPED_FLOWS_DIR / "tests").glob(TEST_GLOB)):
        for test in source.read(path).data["tests"]:
            found.append((f"{path.name}: {test['name']}", test))
    return found


def _action(row: Mapping[str, Any]) -> tuple[str | None, str]:
    for action in ("say", "click", "files"):
        if action in row:
            return action, str(row[action])
    return None, ""


def _why_not_playable(bundle: Bundle, test: Mapping[str, Any]) -> str | None:  # noqa: PLR0911 - one per reason
    if test.get("open", True) is False:
        return "needs the centre closed"
    if test.get("receipt_known"):
        return "types a receipt code the centre issued (tests/test_webchat.py plays one)"
    rows = test["dialog"]
    if any("after_s" in row for row in rows):
        return "needs the clock moved"
    actions = [_action(row) for row in rows]
    if any(a[0] == "say" and a == b for a, b in itertools.pairwise(actions)):
        return "types the same text twice in a row"
    if any("common.stale_button" in row.get("bot", []) for row in rows):
        return "presses a button no longer on screen (each door's own tests cover stale presses)"
    session: Session | None = None
    for row, (action, _value) in zip(rows, actions, strict=True):
        if action == "files" and (session is None or not engine.accepts_files(bundle, session)):
            return "sends files where none are taken"
        language = str(test.get("language", "ko"))
        session = _step(bundle, session, row, language, test.get("channel"))[0]
    return None


def _inbound(action: str | None, value: str, language: str | None) -> Inbound | None:
    if action == "say":
        return Inbound(_WHO, "test", text=value, language=language)
    if action == "click":
        return Inbound(_WHO, "test", button=value, language=language)
    if action == "files":
        files = tuple(Attachment("photo", 1000, f"{i:064x}") for i in range(int(value)))
        return Inbound(_WHO, "test", attachments=files, language=language)
    return None


def _step(
    bundle: Bundle,
    session: Session | None,
    row: Mapping[str, Any],
    language: str,
    channel: str | None = None,
) -> tuple[Session, tuple[tuple[str, str], ...]]:
    """One row in-process, as `backend.flows.dialogs` runs it: the session, and each message's
    key and text."""
    ctx = Context(1_700_000_000, True, files=channel is None or channel in FILE_CHANNELS)
    action, value = _action(row)
    if session is None:
        first = Inbound(_WHO, channel or "test", language=language)
        session = bundle.new_session(first, "channel-test")
        result = engine.start(bundle, session, ctx, _inbound(action, value, language))
    else:
        inbound = _inbound(action, value, None)
        assert inbound is not None
        result = engine.step(bundle, session, inbound, ctx)
    return result.session, tuple((m.key, m.text) for m in result.messages)


@cache
def playable() -> tuple[tuple[Dialog, ...], tuple[tuple[str, str], ...]]:
    """The dialogs every door plays, and those left out with the reason."""
    bundle = FlowRegistry.load(SHIPPED_FLOWS_DIR).entry()
    dialogs, left_out = [], []
    for name, test in _tables():
        reason = _why_not_playable(bundle, test)
        if reason is not None:
            left_out.append((name, reason))
            continue
        language = str(test.get("language", "ko"))
        session: Session | None = None
        rows = []
        channel = test.get("channel")
        for row in test["dialog"]:
            session, said = _step(bundle, session, row, language, channel)
            keys = tuple(key for key, _text in said)
            assert tuple(row.get("bot", keys)) == keys, f"{name}: the engine disagrees with it"
            locale = texts_of(language)
            shown = tuple(locale.get(key, text) for key, text in said)
            rows.append(Row(*_action(row), keys, shown))
        dialogs.append(Dialog(name, language, tuple(rows), channel))
    return tuple(dialogs), tuple(left_out)


@cache
def _pattern(texts: tuple[str, ...]) -> re.Pattern[str]:
    pieces = []
    for text in texts:
        parts = re.split(r"\{\w+\}", _squeeze(text))
        pieces.append(".+?".join(re.escape(part) for part in parts))
    return re.compile("".join(pieces), re.S)


def _squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


# What a door gives back for one action: the texts the victim is shown, in order.
Play = Callable[[Row], Awaitable[list[str]]]


class WebVictim:
    def __init__(self, client: Any, language: str) -> None:
        self.client = client
        self.token = secrets.token_urlsafe(32)
        self.language = language
        self.buttons: set[str] = set()

    async def play(self, row: Row) -> list[str]:
        body: dict[str, Any] = {"token": self.token, "language": self.language}
        if row.action == "say":
            body["text"] = row.value
        elif row.action == "click":
            assert row.value in self.buttons, f"no button {row.value!r} on the page"
            body["button"] = row.value
        response = await self.client.post("/chat/api/turn", json=body)
        assert response.status == 200, await response.text()
        messages = (await response.json())["messages"]
        self.buttons = {b["id"] for m in messages for b in m["buttons"]}
        return [m["text"] for m in messages]


class KakaoVictim:
    def __init__(self, client: Any, language: str) -> None:
        self.client = client
        self.user_key = "dialogUser" + secrets.token_hex(12)
        self.language = language
        self.quick_replies: dict[str, dict[str, Any]] = {}

    async def play(self, row: Row) -> list[str]:
        utterance, extra = "/start", {}
        if row.action == "say":
            utterance = row.value
        elif row.action == "click":
            assert row.value in self.quick_replies, f"no quick reply {row.value!r}"
            reply = self.quick_replies[row.value]
            utterance, extra = reply["messageText"], reply["extra"]
        body = {
            "intent": {"id": "fallback-intent", "name": "폴백 블록"},
            "userRequest": {
                "timezone": "Asia/Seoul",
                "block": {"id": "fallback-block", "name": "폴백 블록"},
                "utterance": utterance,
                "lang": self.language,
                "user": {"id": self.user_key, "type": "botUserKey", "properties": {}},
            },
            "bot": {"id": KAKAO_BOT_ID, "name": "hotline"},
            "action": {"id": "a", "name": "hotline", "params": {}, "clientExtra": extra},
        }
        response = await self.client.post(
            "/kakao/skill", json=body, headers={SECRET_HEADER: KAKAO_SECRET}
        )
        assert response.status == 200, await response.text()
        template = (await response.json())["template"]
        self.quick_replies = {q["extra"]["button"]: q for q in template.get("quickReplies", [])}
        return [o["simpleText"]["text"] for o in template["outputs"] if "simpleText" in o]


class TelegramVictim:
    def __init__(self, telegram: FakeTelegram, language: str, user_id: int) -> None:
        self.victim = Victim(telegram, language, user_id, f"Dialog{user_id}")
        self.shown: list[ApiCall] = []

    async def play(self, row: Row) -> list[str]:
        replies = len(row.keys)
        if row.action == "files":
            calls: list[ApiCall] = []
            for _ in range(int(row.value)):  # a Telegram message carries one file
                calls += (await self.victim.send("photo", replies=replies))[1]
            return texts(calls)
        if row.action == "click":
            under = next((c for c in reversed(self.shown) if row.value in c.callback_data()), None)
            assert under is not None, f"no button {row.value!r} under any message"
            calls = await self.victim.press(under, row.value, replies=replies)
        else:
            calls = await self.victim.say(row.value or "/start", replies=replies)
        self.shown += calls
        return texts(calls)


@asynccontextmanager
async def _door(  # noqa: PLR0917 - the fixtures a door needs
    channel: str,
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> AsyncIterator[Callable[[Dialog, int], Play]]:
    """Per dialog, a fresh victim on `channel`'s real surface."""
    if channel == "telegram":
        async with FakeTelegram(TOKEN, max_hold_s=0.3) as telegram:
            runtime, root_secret = make_runtime(redis, flows, center_key)
            async with running_door("polling", redis, telegram, runtime, root_secret):
                yield lambda d, n: TelegramVictim(telegram, d.language, 500_000 + n).play
        return
    extra = {"HOTLINE_KAKAO_BOT_ID": KAKAO_BOT_ID, "HOTLINE_KAKAO_SECRET": KAKAO_SECRET}
    async with start_hotline(pair, tmp_path, extra) as running:
        # The tables expect a counselor to answer a handoff: one is on shift for the whole run.
        await ShiftBoard(redis, ttl_s=3600).start(1)
        victim = WebVictim if channel == "web" else KakaoVictim
        yield lambda d, _n: victim(running.client, d.language).play


def test_the_doors_play_most_of_the_shipped_dialogs() -> None:
    """The channel suite is worth its name only while it covers most of the tables."""
    dialogs, left_out = playable()
    assert len(dialogs) >= 2 * len(left_out), left_out
    assert any(row.action == "files" for d in dialogs for row in d.rows), "a files row is played"


@pytest.mark.parametrize("channel", CHANNELS)
async def test_the_shipped_dialogs_pass_through_the_door(  # noqa: PLR0917 - fixtures
    channel: str,
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    flows: FlowRegistry,
    center_key: X25519PrivateKey,
) -> None:
    dialogs, _left_out = playable()
    async with _door(channel, pair, tmp_path, redis, flows, center_key) as victim_for:
        for number, dialog in enumerate(dialogs):
            if dialog.channel not in {None, channel}:
                continue
            play = victim_for(dialog, number)
            for index, row in enumerate(dialog.rows, start=1):
                if row.action == "files" and channel not in FILES_CHANNELS:
                    continue
                shown = _squeeze("".join(await play(row)))
                # On Telegram each file is a message of its own, answered as the row says.
                times = int(row.value) if row.action == "files" else 1
                expected = _pattern(row.texts * times)
                assert expected.fullmatch(shown), (
                    f"{channel}: {dialog.name} row {index}: shown {shown!r}, expected {row.keys}"
                )
