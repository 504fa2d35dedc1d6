"""The web chat offers every language whose safety texts are complete, the browser's own chosen,
and a victim who picks one is answered in it."""

from __future__ import annotations

import re
import secrets
from typing import Any

import pytest
import yaml

from backend.core.settings import SHIPPED_FLOWS_DIR
from tests.conftest import RunningHotline


async def test_every_language_with_safety_texts_is_offered(hotline: RunningHotline) -> None:
    async def offered(accept: str) -> tuple[str, list[tuple[str, bool]]]:
        page = await (await hotline.client.get("/chat", headers={"Accept-Language": accept})).text()
        lang = re.search(r'<html lang="([^"]+)">', page)
        assert lang is not None
        options = re.findall(r'<option value="([a-z]+)" lang="[a-z]+"( selected)?>', page)
        return lang.group(1), [(code, bool(selected)) for code, selected in options]

    lang, options = await offered("vi-VN,vi;q=0.9,en;q=0.5")
    assert sorted(code for code, _ in options) == ["en", "ja", "ko", "vi", "zh"]
    assert lang == "vi" and [code for code, selected in options if selected] == ["vi"]
    page = await (await hotline.client.get("/chat")).text()
    assert "<option" in page and ">Tiếng Việt<" in page and ">中文<" in page
    for accept, expected in (
        ("fr-FR,ja;q=0.4,zh;q=0.8", "zh"),
        ("de", "ko"),
        ("", "ko"),
        ("en-US,en;q=0.9", "en"),
    ):
        lang, options = await offered(accept)
        assert lang == expected and dict(options)[expected], accept

    # Chosen, the conversation speaks it: the safety welcome in Vietnamese.
    first = await hotline.client.post(
        "/chat/api/turn", json={"token": "v" * 43, "text": "/start", "language": "vi"}
    )
    assert "Xin chào" in (await first.json())["messages"][0]["text"]


@pytest.mark.parametrize("language", ["zh", "ja", "vi"])
async def test_what_to_do_while_waiting_is_said_in_her_language(
    hotline: RunningHotline, language: str
) -> None:
    """A victim who chose Chinese, Japanese or Vietnamese and asked for a counselor reads what
    she can do while she waits, and its buttons, in her language, not in the English fallback
    (the texts a partial locale holds: safety, live chat and this step)."""
    texts = yaml.safe_load((SHIPPED_FLOWS_DIR / "locales" / f"{language}.yaml").read_text("utf-8"))
    token = secrets.token_urlsafe(32)

    async def turn(**sent: str) -> list[dict[str, Any]]:
        response = await hotline.client.post(
            "/chat/api/turn", json={"token": token, "language": language, **sent}
        )
        assert response.status == 200
        messages: list[dict[str, Any]] = (await response.json())["messages"]
        return messages

    await turn(text="/start")
    asked = await turn(text="/human")
    if asked[-1]["buttons"] and asked[-1]["buttons"][0]["id"] == "leave_message":
        asked = await turn(button="leave_message")  # after hours: she leaves a request
    what_now = asked[-1]
    assert what_now["text"] == texts["counselor"]["what_now"]
    labels = {b["id"]: b["label"] for b in what_now["buttons"]}
    assert labels == {
        "continue": texts["common"]["continue"],
        "resources": texts["help"]["resources"],
        "quick_exit": texts["help"]["exit"],
    }
