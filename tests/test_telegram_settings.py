"""Telegram settings and the node's wiring of webhook mode."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.errors import SettingsError
from backend.core.settings import Settings
from bot.cli.node import BACKEND, BOT, Node
from bot.telegram.door import SECRET_HEADER, TelegramConfig
from tests import telegram_support
from tests.conftest import FAST_KDF_ENV, FIRST_START_ENV, Pair
from tests.fake_telegram import FakeTelegram
from tests.telegram_support import TOKEN, WEBHOOK_SECRET, Victim, say

telegram = telegram_support.telegram


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"HOTLINE_DATA_DIR": str(tmp_path), **env})


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HOTLINE_TELEGRAM_WEBHOOK_URL": "https://bot.example/hook"}, "WEBHOOK_SECRET"),
        (
            {
                "HOTLINE_TELEGRAM_WEBHOOK_URL": "https://bot.example/hook",
                "HOTLINE_TELEGRAM_WEBHOOK_SECRET": "short",
            },
            "WEBHOOK_SECRET",
        ),
        ({"HOTLINE_TELEGRAM_WEBHOOK_SECRET": "has spaces in it, not allowed"}, "WEBHOOK_SECRET"),
        ({"HOTLINE_TELEGRAM_MAX_FILE_BYTES": "0"}, "MAX_FILE_BYTES"),
        ({"HOTLINE_TELEGRAM_MAX_FILE_BYTES": str(21 * 1024 * 1024)}, "MAX_FILE_BYTES"),
        ({"HOTLINE_TELEGRAM_CHAT_MESSAGES_PER_S": "0"}, "CHAT_MESSAGES_PER_S"),
        ({"HOTLINE_TELEGRAM_BOT_MESSAGES_PER_S": "1001"}, "BOT_MESSAGES_PER_S"),
    ],
)
def test_bad_telegram_settings_name_the_setting(
    tmp_path: Path, env: dict[str, str], named: str
) -> None:
    with pytest.raises(SettingsError, match=f"^HOTLINE_TELEGRAM_{named}:"):
        _settings(tmp_path, **env)


def test_the_door_keeps_telegrams_pace_unless_told_another(tmp_path: Path) -> None:
    """Telegram's published limits by default (1 a second to a chat, 30 from the bot); a Bot
    API server that takes more (the tests' fake) may be given its own."""
    default = TelegramConfig.from_settings(_settings(tmp_path, HOTLINE_TELEGRAM_TOKEN=TOKEN))
    assert (default.limits.per_chat_per_s, default.limits.per_bot_per_s) == (1, 30)
    assert default.limits.per_chat_burst == 3
    other = TelegramConfig.from_settings(
        _settings(
            tmp_path,
            HOTLINE_TELEGRAM_TOKEN=TOKEN,
            HOTLINE_TELEGRAM_CHAT_MESSAGES_PER_S="50",
            HOTLINE_TELEGRAM_BOT_MESSAGES_PER_S="500",
        )
    )
    assert (other.limits.per_chat_per_s, other.limits.per_bot_per_s) == (50, 500)


def test_the_webhook_secret_is_kept_out_of_repr(tmp_path: Path) -> None:
    settings = _settings(
        tmp_path,
        HOTLINE_TELEGRAM_WEBHOOK_URL="https://bot.example/telegram/hook",
        HOTLINE_TELEGRAM_WEBHOOK_SECRET=WEBHOOK_SECRET,
        HOTLINE_TELEGRAM_MAX_FILE_BYTES="1000",
    )
    assert settings.telegram_webhook_secret == WEBHOOK_SECRET
    assert settings.telegram_max_file_bytes == 1000
    assert WEBHOOK_SECRET not in repr(settings)


async def test_the_node_serves_the_webhook_path_and_checks_the_secret(
    pair: Pair,
    tmp_path: Path,
    redis: Redis,
    engine: AsyncEngine,
    telegram: FakeTelegram,
) -> None:
    settings = Settings.from_env(
        {
            "HOTLINE_DATA_DIR": str(tmp_path / "data"),
            "HOTLINE_DATABASE_URL": pair.database_url,
            "HOTLINE_REDIS_URL": pair.redis_url,
            "HOTLINE_TELEGRAM_TOKEN": TOKEN,
            "HOTLINE_TELEGRAM_BASE_URL": telegram.base_url,
            "HOTLINE_TELEGRAM_WEBHOOK_URL": "https://bot.example/telegram/hook-7",
            "HOTLINE_TELEGRAM_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **FAST_KDF_ENV,
            **FIRST_START_ENV,
        }
    )
    async with Node(settings, frozenset({BACKEND, BOT}), io.StringIO()) as node:
        app = await node.build()
        assert telegram.webhook_url == "https://bot.example/telegram/hook-7"
        assert telegram.webhook_secret == WEBHOOK_SECRET
        async with TestClient(TestServer(app)) as client:
            victim = Victim(telegram, "en")
            update = {
                "update_id": 1,
                "message": telegram._message(victim.chat, victim.user, "/start"),
            }
            refused = await client.post("/telegram/hook-7", json=update)
            assert refused.status == 401
            assert telegram.calls_to("sendMessage") == []
            accepted = await client.post(
                "/telegram/hook-7", json=update, headers={SECRET_HEADER: WEBHOOK_SECRET}
            )
            assert accepted.status == 200
            welcome, _consent = await telegram.wait_for("sendMessage", 2)
            assert welcome.params["text"] == say("safety.welcome")
