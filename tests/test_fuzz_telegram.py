"""Fuzzing the Telegram webhook over HTTP on the real app (see `tests/fuzzing.py`): update
bodies of any shape and size, POSTed as Telegram would, with the right secret and without."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from bot.telegram.door import SECRET_HEADER
from bot.telegram.updates import parses_as_update
from tests.conftest import Pair, RunningHotline, start_hotline
from tests.fake_telegram import FakeTelegram
from tests.fuzzing import (
    FUZZ_TIMEOUT_S,
    StoredState,
    assert_sane_answer,
    counted,
    fuzz_settings,
    json_values,
    payload,
    raw_bodies,
)
from tests.fuzzing import pair as pair  # noqa: PLC0414 - the embedded pair only
from tests.telegram_support import TOKEN
from tests.telegram_support import telegram as telegram  # noqa: PLC0414 - the fixture

WEBHOOK_URL = "https://hotline.example/telegram/hook"
WEBHOOK_SECRET = "fuzz-webhook-secret-0123456789"  # noqa: S105 - a test value
USERS = [1001, 1002, 1003]


@pytest.fixture
async def hooked(
    pair: Pair, tmp_path: Path, redis: Redis, engine: AsyncEngine, telegram: FakeTelegram
) -> AsyncIterator[RunningHotline]:
    for user_id in USERS:
        telegram.open_chat(FakeTelegram.private_chat(FakeTelegram.user(user_id, "F")))
    env = {
        "HOTLINE_TELEGRAM_TOKEN": TOKEN,
        "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url,
        "HOTLINE_TELEGRAM_WEBHOOK_URL": WEBHOOK_URL,
        "HOTLINE_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    async with start_hotline(pair, tmp_path, env) as running:
        yield running


@pytest.fixture
def stored(redis: Redis) -> StoredState:
    return StoredState(redis)


users = st.sampled_from(USERS).map(
    lambda i: {"id": i, "is_bot": False, "first_name": "F", "language_code": "en"}
) | st.fixed_dictionaries({"id": st.integers(), "is_bot": st.booleans(), "first_name": st.text()})
chat_types = st.sampled_from(["private", "private", "group", "supergroup", "channel", "x"])
texts = st.sampled_from(
    ["/start", "/exit", "/human", "/receipt", "I want to die", "agree", "x" * 5000]
) | st.text(st.characters(codec=None), max_size=60)


@st.composite
def messages(draw: st.DrawFn) -> dict[str, Any]:
    user = draw(users)
    chat = {"id": user["id"], "type": draw(chat_types), "first_name": "F"}
    message: dict[str, Any] = {
        "message_id": draw(st.integers(-5, 2**40)),
        "date": draw(st.integers(0, 2**33)),
        "chat": chat,
        "from": user,
    }
    extra = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "text": texts,
                "entities": st.lists(
                    st.fixed_dictionaries(
                        {
                            "type": st.sampled_from(["bot_command", "url", "bold", "?"]),
                            "offset": st.integers(-3, 10),
                            "length": st.integers(-3, 10),
                        }
                    ),
                    max_size=3,
                ),
                "photo": st.lists(
                    st.fixed_dictionaries(
                        {
                            "file_id": st.text(max_size=10),
                            "file_unique_id": st.text(max_size=10),
                            "width": st.integers(0, 9999),
                            "height": st.integers(0, 9999),
                            "file_size": st.integers(-1, 2**40),
                        }
                    ),
                    max_size=3,
                ),
                "document": st.fixed_dictionaries(
                    {"file_id": st.text(max_size=10), "file_unique_id": st.text(max_size=10)},
                    optional={"file_size": st.integers(-1, 2**40), "mime_type": st.text()},
                ),
                "sticker": json_values,
                "pinned_message": json_values,
            },
        )
    )
    return message | extra


@st.composite
def updates(draw: st.DrawFn) -> dict[str, Any]:
    update: dict[str, Any] = {"update_id": draw(st.integers(1, 400) | st.integers())}
    kind = draw(
        st.sampled_from(
            [
                "message",
                "message",
                "edited_message",
                "callback_query",
                "channel_post",
                "my_chat_member",
                "inline_query",
                "poll",
                "unknown_kind",
            ]
        )
    )
    if kind in {"message", "edited_message", "channel_post"}:
        update[kind] = draw(messages())
    elif kind == "callback_query":
        update[kind] = {
            "id": draw(st.text(max_size=8)),
            "from": draw(users),
            "chat_instance": "ci",
            "data": draw(st.sampled_from(["agree", "quick_exit", "deepfake", ""]) | st.text()),
            "message": draw(messages() | json_values),
        }
    elif kind == "my_chat_member":
        member = {"user": draw(users), "status": draw(st.sampled_from(["kicked", "member", "?"]))}
        update[kind] = {
            "chat": {"id": draw(st.sampled_from(USERS)), "type": draw(chat_types)},
            "from": draw(users),
            "date": 0,
            "old_chat_member": member,
            "new_chat_member": member,
        }
    else:
        update[kind] = draw(json_values)
    return update


bodies: st.SearchStrategy[bytes] = st.one_of(
    updates().map(lambda u: json.dumps(u).encode()),
    updates().map(lambda u: json.dumps(u).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    raw_bodies,
)
secrets = st.sampled_from([WEBHOOK_SECRET] * 8 + ["", "wrong-secret-0123456789", None])


@pytest.mark.timeout(FUZZ_TIMEOUT_S)
@fuzz_settings(2000)
@given(body=bodies, secret=secrets)
async def test_the_telegram_webhook_survives_any_body(
    hooked: RunningHotline, stored: StoredState, body: bytes, secret: str | None
) -> None:
    with counted("telegram"):
        before = await stored.before()
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SECRET_HEADER] = secret
        response = await hooked.client.post("/telegram/hook", data=payload(body), headers=headers)
        # A copy of an update another worker is still handling is a declared 503.
        assert_sane_answer(response.status, await response.read(), allowed_503=True)
        try:
            parsed = parses_as_update(json.loads(body))
        except ValueError:
            parsed = False
        refused = response.status >= 400 or secret != WEBHOOK_SECRET or not parsed
        await stored.after(before, refused=refused)
